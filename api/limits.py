"""Where an unauthenticated caller can try secrets (candidate keys), how often it may fail:
`candidate_auth_limited` wraps the views that authenticate a candidate."""

from __future__ import annotations

import logging
from functools import wraps

from flask import g, request

from api import metrics
from api.clients import client_id
from api.errors import ApiError
from api.http import services
from events.aggregate import CandidateRefused

log = logging.getLogger(__name__)

RATE_LIMITED = "Too many failed candidate authentications; retry later."


def candidate_auth_limited(view):
    """A client (`api.clients.client_id` of its address) that failed the limit's number of
    candidate authentications in the current window is refused with a 429 and Retry-After
    before the view runs, so a correct key is refused too: otherwise the limit would tell a
    guesser which guess was right. A refused candidate (a 401) from the view counts one failure; a 429 counts
    nothing, and anything else passes through untouched."""

    @wraps(view)
    def limited(*args, **kwargs):
        limiter = services().auth_limiter
        if limiter is None:
            return view(*args, **kwargs)
        client = client_id(request.remote_addr or "")
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        if (seconds := limiter.retry_after(client)) is not None:
            metrics.candidate_auth_limited.labels(route).inc()
            log.warning(
                "candidate authentication limited: client %s, retry after %ss",
                client,
                seconds,
                extra={
                    "client": client,
                    "retry_after": seconds,
                    "route": route,
                    "request_id": g.get("request_id"),
                },
            )
            raise ApiError(429, RATE_LIMITED, headers={"Retry-After": str(seconds)})
        try:
            return view(*args, **kwargs)
        except (CandidateRefused, ApiError) as error:
            if isinstance(error, CandidateRefused) or error.status == 401:
                limiter.record_failure(client)
                metrics.candidate_auth_failures.labels(route).inc()
            raise

    return limited
