"""One key's invitation, whatever brought it (a message, or the sweep): claim, decide, send,
record. The broker-facing loops (`consumer`, `inprocess`) ack a message only after this
returned, i.e. after the outcome was committed to the invitations table.

Order of the steps, and why:

1. **Claim** the key's row (recording it first if new) in one transaction. Whoever does not
   get the claim sends nothing: a redelivery, a republish, a second notifier.
2. **Decide** from the assessment's stream, read now from the store: a deleted assessment, a
   revoked, expired or already redeemed key is not mailed (`skipped`, with the reason).
3. **Send**: the key string comes from its reservation (events never carry it), the
   organisation's name from the key or the organisations table.
4. **Record** `sent` once the SMTP server accepted. Between 3 and 4 is the window SMTP
   leaves open (see `events.sql.invitations`): a notifier killed there leaves the row claimed,
   and after the lease the mail is sent again with the same `Message-ID`.

A transient failure puts the row back to `pending` with a capped exponential backoff
(`events.invitations.retry_delay`): the sweep, not the broker, brings it back, so the message
is acked at once and never holds up the queue (nor trips RabbitMQ's consumer timeout on a
message kept unacked for long). After `max_attempts` it is given up like a permanent failure:
the message goes to the notifier's dead-letter queue with the reason, then the row is marked
`failed`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from events import aggregate
from events import invitations as rules
from events.candidate import CandidateKey
from events.model import CandidateKeyIssued, RecordedEvent, utcnow
from events.personal import PersonalData, revealed
from events.ports import EventStore
from events.service import KEY_SCOPE
from events.sql.invitations import Claim, Invitations
from events.sql.tenancy import organisation_name
from worker.notifier import metrics
from worker.notifier.mail import build_message
from worker.notifier.sending import PermanentFailure, Sender, TransientFailure

log = logging.getLogger(__name__)

#: Called with the key's issuing event and the reason, before the row is marked failed.
DeadLetter = Callable[[RecordedEvent, str], None]

ORG_NAMES_KEPT = 10_000

SENT, SKIPPED, DUPLICATE, RETRY, FAILED, IGNORED = (
    "sent",
    "skipped",
    "duplicate",
    "retry",
    "failed",
    "ignored",
)


@dataclass(frozen=True)
class Outcome:
    kind: str
    key_id: uuid.UUID | None = None
    reason: str | None = None


class InvitationMailer:
    def __init__(
        self,
        engine: Engine,
        store: EventStore,
        invitations: Invitations,
        sender: Sender,
        mail_from: str,
        max_attempts: int = 50,
        clock: Callable[[], datetime] = utcnow,
        personal: PersonalData | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        #: Reveals the address (events and messages hold none readable: `events.personal`).
        self.personal = personal
        self.invitations = invitations
        self.sender = sender
        self.mail_from = mail_from
        self.max_attempts = max_attempts
        self.clock = clock
        #: Called right after the SMTP server accepted a mail, before it is recorded (tests
        #: stop a notifier there, in the window SMTP leaves open).
        self.after_accepted: Callable[[uuid.UUID], None] | None = None
        #: How many of each outcome this mailer had, and how many sweeps it ran.
        self.outcomes: Counter[str] = Counter()
        self.sweeps = 0
        self._org_names: dict[str, str | None] = {}

    def on_event(self, recorded: RecordedEvent, dead_letter: DeadLetter) -> Outcome:
        outcome = self._on_event(recorded, dead_letter)
        self.outcomes[outcome.kind] += 1
        return outcome

    def _on_event(self, recorded: RecordedEvent, dead_letter: DeadLetter) -> Outcome:
        event = recorded.event
        if not isinstance(event, CandidateKeyIssued) or not self._issued_to_an_email(recorded):
            return Outcome(IGNORED)
        claim = self.invitations.record_and_claim(event.key_id, event.assessment_id, event.org_id)
        if claim is None:
            metrics.duplicates.inc()
            return Outcome(DUPLICATE, event.key_id)
        return self.attempt(claim, event.assessment_id, dead_letter)

    def sweep(self, dead_letter: DeadLetter, limit: int = 50) -> list[Outcome]:
        """The invitations due again (after a transient failure) or whose claim outlived its
        lease (a notifier died holding it)."""
        outcomes = []
        for key_id, assessment_id in self.invitations.due(limit):
            claim = self.invitations.claim(key_id)
            if claim is not None:
                outcome = self.attempt(claim, assessment_id, dead_letter)
                self.outcomes[outcome.kind] += 1
                outcomes.append(outcome)
        self.sweeps += 1
        return outcomes

    def attempt(self, claim: Claim, assessment_id: uuid.UUID, dead_letter: DeadLetter) -> Outcome:
        try:
            return self._attempt(claim, assessment_id, dead_letter)
        except (OperationalError, DBAPIError):
            raise  # the row stays claimed; the lease brings it back after a reconnect
        except Exception as error:  # a bug or a broken template: retried, then given up
            log.exception("invitation for key %s failed", claim.key_id)
            return self._failed_transiently(claim, f"{type(error).__name__}: {error}", dead_letter, None)

    def _attempt(self, claim: Claim, assessment_id: uuid.UUID, dead_letter: DeadLetter) -> Outcome:
        history = self.store.load(assessment_id)
        state = aggregate.rebuild(assessment_id, (r.event for r in history))
        issued = _issued(history, claim.key_id)
        reason = rules.why_not_mailed(state, claim.key_id, self.clock())
        recipient = self._revealed(state.keys[claim.key_id]) if not reason else None
        if reason is None and recipient is None:
            reason = rules.CANDIDATE_ERASED
        key = self.store.reserved_values(KEY_SCOPE, [claim.key_id]).get(claim.key_id) if not reason else None
        if reason is None and key is None:
            reason = rules.KEY_UNKNOWN
        if reason is not None:
            self.invitations.mark_skipped(claim, reason)
            metrics.skipped.labels(reason).inc()
            log.info("invitation for key %s skipped: %s", claim.key_id, reason)
            return Outcome(SKIPPED, claim.key_id, reason)
        org_name = state.keys[claim.key_id].org_name or self._organisation_name(state.org_id or "")
        invitation = rules.invitation(state, recipient, key, org_name)
        message = build_message(invitation, self.mail_from)
        started = time.perf_counter()
        try:
            self.sender.send(message, invitation.candidate_email)
        except PermanentFailure as failure:
            metrics.send_failures.labels("permanent").inc()
            return self._give_up(claim, failure.reason, "refused", dead_letter, issued)
        except TransientFailure as failure:
            return self._failed_transiently(claim, failure.reason, dead_letter, issued)
        metrics.send_seconds.observe(time.perf_counter() - started)
        if self.after_accepted is not None:
            self.after_accepted(claim.key_id)
        if not self.invitations.mark_sent(claim):
            log.warning("invitation for key %s sent, but its claim had been taken over", claim.key_id)
        metrics.mails_sent.inc()
        log.info("invitation for key %s sent (attempt %d)", claim.key_id, claim.attempts)
        return Outcome(SENT, claim.key_id)

    def _issued_to_an_email(self, recorded: RecordedEvent) -> bool:
        """Messages carry no personal data: whether the key went to an email is in the store
        (sealed, but present)."""
        stored = self.store.at_positions([recorded.position])
        return bool(stored) and bool(getattr(stored[0].event, "candidate_email", None))

    def _revealed(self, issued: CandidateKey) -> CandidateKey | None:
        """The key's record with its email and name readable; None once its candidate was
        erased. Read when the mail is sent, never kept."""
        if self.personal is None:
            return issued if issued.subject_id is None else None
        key, erased = revealed(self.personal.reader([issued.subject_id]), issued)
        return None if erased or not key.candidate_email else key

    def _organisation_name(self, org_id: str) -> str | None:
        """Remembered per process: no command renames an organisation, and asking cost a
        round trip per mail."""
        if org_id not in self._org_names:
            if len(self._org_names) >= ORG_NAMES_KEPT:
                self._org_names.clear()
            self._org_names[org_id] = organisation_name(self.engine, org_id)
        return self._org_names[org_id]

    def _failed_transiently(
        self, claim: Claim, reason: str, dead_letter: DeadLetter, issued: RecordedEvent | None
    ) -> Outcome:
        metrics.send_failures.labels("transient").inc()
        if claim.attempts >= self.max_attempts:
            return self._give_up(
                claim, f"gave up after {claim.attempts} attempts: {reason}", "gave_up", dead_letter, issued
            )
        delay = rules.retry_delay(claim.attempts)
        self.invitations.retry_later(claim, reason, delay)
        metrics.retries.inc()
        log.warning(
            "invitation for key %s not sent (attempt %d): %s; again in %.0fs",
            claim.key_id,
            claim.attempts,
            reason,
            delay.total_seconds(),
        )
        return Outcome(RETRY, claim.key_id, reason)

    def _give_up(
        self, claim: Claim, reason: str, label: str, dead_letter: DeadLetter, issued: RecordedEvent | None
    ) -> Outcome:
        """Dead-letter first, then mark failed: a notifier dying in between leaves the row
        claimed, and the next attempt dead-letters it again (a duplicate dead letter, never
        a lost one)."""
        if issued is None:
            history = self.store.load(self.invitations.assessment_of(claim.key_id))
            issued = _issued(history, claim.key_id)
        if issued is not None:
            dead_letter(issued, reason)
            metrics.dead_lettered.labels(label).inc()
        self.invitations.mark_failed(claim, reason)
        log.error("invitation for key %s failed for good: %s", claim.key_id, reason)
        return Outcome(FAILED, claim.key_id, reason)


def _issued(history: list[RecordedEvent], key_id: uuid.UUID) -> RecordedEvent | None:
    for recorded in history:
        if isinstance(recorded.event, CandidateKeyIssued) and recorded.event.key_id == key_id:
            return recorded
    return None
