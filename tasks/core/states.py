"""Candidate lifecycle states and the transitions allowed between them (see DESIGN.md, asset lifecycle)."""

from __future__ import annotations

from enum import StrEnum


class CandidateState(StrEnum):
    """Where a candidate is in its lifecycle."""

    PLANNED = "planned"
    GENERATED = "generated"
    SCORED = "scored"
    SCREENED_PASSED = "screened_passed"
    SCREENED_FLAGGED = "screened_flagged"
    SELECTED = "selected"
    NOT_SELECTED = "not_selected"
    APPROVED = "approved"
    REJECTED = "rejected"
    FINALIZED = "finalized"
    PUBLISHED = "published"
    FINALIZE_FAILED = "finalize_failed"
    FAILED = "failed"


class RunStatus(StrEnum):
    """Where a run is."""

    RUNNING = "running"
    COMPLETED = "completed"
    PENDING_REVIEW = "pending_review"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


ALLOWED_TRANSITIONS: dict[CandidateState, frozenset[CandidateState]] = {
    CandidateState.PLANNED: frozenset({CandidateState.GENERATED, CandidateState.FAILED}),
    CandidateState.GENERATED: frozenset({CandidateState.SCORED, CandidateState.FAILED}),
    CandidateState.SCORED: frozenset({CandidateState.SCREENED_PASSED, CandidateState.SCREENED_FLAGGED}),
    # Only candidates that passed screening can be selected: an unscreened or flagged one never reaches finalize.
    CandidateState.SCREENED_PASSED: frozenset({CandidateState.SELECTED, CandidateState.NOT_SELECTED}),
    # Selection is recomputed when a run resumes with more candidates, so it may flip either way; a reviewer (or
    # the auto-review policy) then approves or rejects. Only approved candidates are finalized.
    CandidateState.SELECTED: frozenset({CandidateState.NOT_SELECTED, CandidateState.APPROVED, CandidateState.REJECTED}),
    CandidateState.NOT_SELECTED: frozenset({CandidateState.SELECTED, CandidateState.APPROVED, CandidateState.REJECTED}),
    # Approving a flagged candidate is an override: the ledger only allows it with a reason, when policy permits.
    CandidateState.SCREENED_FLAGGED: frozenset({CandidateState.APPROVED, CandidateState.REJECTED}),
    # A reviewer's undo returns a decided candidate to the state it was decided from (recorded as a new entry).
    CandidateState.APPROVED: frozenset(
        {
            CandidateState.REJECTED,
            CandidateState.FINALIZED,
            CandidateState.FINALIZE_FAILED,
            CandidateState.SELECTED,
            CandidateState.NOT_SELECTED,
            CandidateState.SCREENED_FLAGGED,
        }
    ),
    CandidateState.REJECTED: frozenset(
        {
            CandidateState.APPROVED,
            CandidateState.SELECTED,
            CandidateState.NOT_SELECTED,
            CandidateState.SCREENED_FLAGGED,
        }
    ),
    CandidateState.FINALIZED: frozenset({CandidateState.PUBLISHED}),
    CandidateState.FINALIZE_FAILED: frozenset(
        {CandidateState.FINALIZED, CandidateState.FINALIZE_FAILED, CandidateState.REJECTED}
    ),
    CandidateState.FAILED: frozenset({CandidateState.GENERATED}),
}


def can_transition(current: CandidateState, target: CandidateState) -> bool:
    """Whether a candidate may move from `current` to `target`."""
    return target in ALLOWED_TRANSITIONS.get(current, frozenset())
