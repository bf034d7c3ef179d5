"""An invitation as a MIME message: plain text and HTML alternatives from the Jinja2 templates
shipped beside this module (`templates/`, package data)."""

from __future__ import annotations

import functools
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from events.invitations import Invitation, message_id
from events.model import utcnow


@functools.cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("worker.notifier", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def subject(invitation: Invitation) -> str:
    who = invitation.org_name or "A hiring team"
    return f"{who} invites you to an assessment: {invitation.title} ({invitation.role})"


def context(invitation: Invitation) -> dict:
    return {
        "candidate_name": invitation.candidate_name,
        "org_name": invitation.org_name,
        "title": invitation.title,
        "role": invitation.role,
        "key": invitation.key,
        "time_limit_minutes": invitation.time_limit_minutes,
        "expires_at": invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
    }


def build_message(invitation: Invitation, mail_from: str) -> EmailMessage:
    """The same `Message-ID` for the same key every time (see `events.invitations.message_id`)."""
    values = context(invitation)
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = formataddr((invitation.candidate_name or "", invitation.candidate_email))
    message["Subject"] = subject(invitation)
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id(invitation.key_id, mail_from)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(environment().get_template("invitation.txt").render(values))
    message.add_alternative(environment().get_template("invitation.html").render(values), subtype="html")
    return message
