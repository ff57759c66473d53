"""What the contact sheet shows: candidates grouped by prompt job, ordered by CLIP score, filters and histogram."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tasks.core.states import CandidateState
from tasks.stages.report import bin_scores
from tasks.storage.ledger import CandidateRow, JobRow

# Pending: selected and awaiting a reviewer's decision (not-selected candidates can be decided but wait for no one).
PENDING = frozenset({CandidateState.SELECTED})
# Everything a reviewer approved, whatever happened after; "published" is matched by name (newer lifecycle step).
APPROVED = frozenset({CandidateState.APPROVED, CandidateState.FINALIZED, CandidateState.FINALIZE_FAILED, "published"})
DECIDABLE = frozenset({CandidateState.SELECTED, CandidateState.NOT_SELECTED})
# States whose card offers approve/reject (flagged ones need an override) or, once decided, an undo.
UNDECIDED = frozenset({CandidateState.SELECTED, CandidateState.NOT_SELECTED, CandidateState.SCREENED_FLAGGED})
DECIDED = frozenset({CandidateState.APPROVED, CandidateState.REJECTED})
FILTERS = ("pending", "flagged", "approved", "all")


@dataclass(frozen=True)
class JobGroup:
    """One prompt job and its candidates, best CLIP score first."""

    job: JobRow
    candidates: list[CandidateRow]


@dataclass(frozen=True)
class Bar:
    """One histogram bin, already in SVG coordinates."""

    x: float
    y: float
    width: float
    height: float
    count: int
    low: float
    high: float


@dataclass(frozen=True)
class Histogram:
    """A run's CLIP score distribution, ready to draw as inline SVG."""

    bars: list[Bar]
    width: int
    height: int
    low: float
    high: float
    peak: int
    total: int


def is_flagged(row: CandidateRow) -> bool:
    """Whether safety screening flagged the candidate (also after an override approved it)."""
    return row.state == CandidateState.SCREENED_FLAGGED or bool((row.safety or {}).get("flagged"))


def matches(row: CandidateRow, show: str) -> bool:
    """Whether a candidate belongs in the view `show` (one of FILTERS)."""
    if show == "pending":
        return row.state in PENDING
    if show == "flagged":
        return is_flagged(row)
    if show == "approved":
        return row.state in APPROVED
    return True


def by_score(rows: Iterable[CandidateRow]) -> list[CandidateRow]:
    """Candidates best CLIP score first; unscored last; ties by rank then seed."""
    return sorted(
        rows,
        key=lambda r: (r.clip_score is None, -(r.clip_score or 0.0), r.rank or 10**9, r.seed, r.candidate_id),
    )


def group_by_job(jobs: Sequence[JobRow], rows: Sequence[CandidateRow], show: str) -> list[JobGroup]:
    """The contact sheet: jobs in manifest order, each with its matching candidates best first."""
    groups: list[JobGroup] = []
    for job in jobs:
        members = by_score(r for r in rows if r.job_key == job.job_key and matches(r, show))
        if members:
            groups.append(JobGroup(job, members))
    return groups


def approved_per_job(rows: Iterable[CandidateRow]) -> dict[str, int]:
    """How many candidates of each job a reviewer (or the policy) approved, whatever happened after."""
    counts: dict[str, int] = {}
    for row in rows:
        if row.state in APPROVED:
            counts[row.job_key] = counts.get(row.job_key, 0) + 1
    return counts


def safety_results(row: CandidateRow) -> list[dict[str, Any]]:
    """Per-filter scores of a candidate's safety verdict (filter, label, score, threshold, flagged)."""
    return [dict(result) for result in (row.safety or {}).get("results", [])]


def top_k_picks(
    jobs: Sequence[JobRow], rows: Sequence[CandidateRow], cap: int | None, min_score: float = 0.0
) -> list[CandidateRow]:
    """Per job, the best `keep_top_k` candidates at or above `min_score`, not flagged or rejected, still undecided.

    Candidates already approved count toward k; a reviewer's rejection is never undone by the bulk action.
    """
    picks: list[CandidateRow] = []
    for job in jobs:
        keep = min(job.keep_top_k, cap) if cap else job.keep_top_k
        eligible = [
            r
            for r in by_score(r for r in rows if r.job_key == job.job_key)
            if r.clip_score is not None
            and r.clip_score >= min_score
            and not is_flagged(r)
            and (r.state in DECIDABLE or r.state in APPROVED)
        ]
        picks.extend(r for r in eligible[:keep] if r.state in DECIDABLE)
    return picks


def histogram(scores: Sequence[float], bins: int = 20, width: int = 480, height: int = 120) -> Histogram | None:
    """Bin CLIP scores between their minimum and maximum; None when nothing is scored."""
    if not scores:
        return None
    binned = bin_scores(scores, bins)
    low, step, counts = binned.low, binned.step, binned.counts
    high = low + step * bins
    peak = max(counts)
    bar_width = width / bins
    bars = []
    for index, count in enumerate(counts):
        bar_height = (height - 4) * count / peak if peak else 0.0
        bars.append(
            Bar(
                x=round(index * bar_width + 1, 2),
                y=round(height - bar_height, 2),
                width=round(bar_width - 2, 2),
                height=round(bar_height, 2),
                count=count,
                low=low + index * step,
                high=low + (index + 1) * step,
            )
        )
    return Histogram(bars=bars, width=width, height=height, low=low, high=high, peak=peak, total=len(scores))
