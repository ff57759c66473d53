"""Ranking per prompt job and top-k selection above a minimum score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Selection:
    """Ranks (1 = best) and the ids selected, with why each candidate was or was not selected."""

    ranks: dict[str, int]
    selected: set[str]
    reasons: dict[str, str]


def rank_and_select(scores: Sequence[tuple[str, float]], keep_top_k: int, min_score: float) -> Selection:
    """Rank one job's candidates by score (ties by id, for determinism) and keep the top k at or above min_score."""
    ordered = sorted(scores, key=lambda item: (-item[1], item[0]))
    ranks: dict[str, int] = {}
    selected: set[str] = set()
    reasons: dict[str, str] = {}
    for position, (candidate_id, score) in enumerate(ordered, start=1):
        ranks[candidate_id] = position
        if score < min_score:
            reasons[candidate_id] = f"score {score:.4f} below minimum {min_score:.4f}"
        elif len(selected) >= keep_top_k:
            reasons[candidate_id] = f"rank {position} outside top {keep_top_k}"
        else:
            selected.add(candidate_id)
            reasons[candidate_id] = f"rank {position} of top {keep_top_k}"
    return Selection(ranks=ranks, selected=selected, reasons=reasons)
