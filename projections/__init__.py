"""Read models built from the event store. Imports `events` only."""

from projections.assessments import AssessmentsProjection
from projections.candidate_keys import CandidateKeysProjection


def default_projections() -> list:
    """Every projection the worker keeps up to date, in the order it applies them."""
    return [AssessmentsProjection(), CandidateKeysProjection()]
