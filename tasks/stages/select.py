"""Ranking per prompt job and top-k selection above a minimum score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Selection:
    """Ranks (1 = best) and the ids selected, with why each candidate was or was not selected."""

    ranks: dict[str, int]
    selected: set[str]
    reasons: dict[str, str]


def rank_and_select(
    scores: Sequence[tuple[str, float]],
    keep_top_k: int,
    min_score: float,
    locked: frozenset[str] = frozenset(),
    ineligible: Mapping[str, str] | None = None,
) -> Selection:
    """Rank one job's candidates by score (ties by id) and keep the top k at or above min_score.

    `locked` candidates were already selected and finalized: they keep their place and use up a slot each, and
    they get no new rank (their rank is already signed into their Content Credentials). `ineligible` candidates
    (id -> why: flagged by safety screening, or a seed the manifest no longer lists) are ranked but never selected.
    """
    ineligible = ineligible or {}
    ordered = sorted(scores, key=lambda item: (-item[1], item[0]))
    ranks: dict[str, int] = {}
    selected: set[str] = set()
    reasons: dict[str, str] = {}
    slots_taken = len(locked)
    for position, (candidate_id, score) in enumerate(ordered, start=1):
        if candidate_id in locked:
            continue
        ranks[candidate_id] = position
        if candidate_id in ineligible:
            reasons[candidate_id] = ineligible[candidate_id]
        elif score < min_score:
            reasons[candidate_id] = f"score {score:.4f} below minimum {min_score:.4f}"
        elif len(selected) + slots_taken >= keep_top_k:
            reasons[candidate_id] = f"rank {position} outside top {keep_top_k}"
        else:
            selected.add(candidate_id)
            reasons[candidate_id] = f"rank {position} of top {keep_top_k}"
    return Selection(ranks=ranks, selected=selected, reasons=reasons)
