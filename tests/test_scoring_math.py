"""CLIPScore arithmetic and per-job ranking, without loading a model."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.stages.score import clip_score, cosine_rows
from tasks.stages.select import rank_and_select


def test_clipscore_matches_hand_computation() -> None:
    image = np.array([[0.6, 0.8, 0.0]], dtype=np.float32)
    text = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    cosine = float(cosine_rows(image, text)[0])
    assert cosine == pytest.approx(0.6)
    assert clip_score(cosine) == pytest.approx(1.5)  # 2.5 * 0.6
    assert clip_score(-0.3) == 0.0  # negative similarity clips to zero


def test_rank_and_select_orders_by_score_and_respects_k_and_minimum() -> None:
    scores = [("c", 0.5), ("a", 0.9), ("b", 0.9), ("d", 0.1)]
    selection = rank_and_select(scores, keep_top_k=2, min_score=0.2)
    assert selection.ranks == {"a": 1, "b": 2, "c": 3, "d": 4}
    assert selection.selected == {"a", "b"}
    assert "outside top 2" in selection.reasons["c"]
    assert "below minimum" in selection.reasons["d"]
    strict = rank_and_select(scores, keep_top_k=3, min_score=0.95)
    assert strict.selected == set()


def test_finalized_candidates_keep_their_slot_and_rank() -> None:
    scores = [("new", 0.95), ("done", 0.9), ("c", 0.5)]
    selection = rank_and_select(scores, keep_top_k=2, min_score=0.0, locked=frozenset({"done"}))
    assert "done" not in selection.ranks
    assert selection.ranks == {"new": 1, "c": 3}
    assert selection.selected == {"new"}


def test_candidate_ids_depend_on_every_pixel_input() -> None:
    from tasks.core.identity import candidate_id

    base = dict(
        model_identity={"name": "m", "digest": "d1"},
        pipeline_kind="StableDiffusionPipeline",
        prompt="a cat",
        negative_prompt="",
        width=512,
        height=512,
        steps=20,
        guidance=7.5,
        scheduler="default",
        seed=1,
    )
    first = candidate_id(**base)
    assert candidate_id(**base) == first and len(first) == 20
    changes = [
        {"seed": 2},
        {"prompt": "a dog"},
        {"negative_prompt": "x"},
        {"width": 520},
        {"steps": 21},
        {"guidance": 7.0},
        {"scheduler": "ddim"},
        {"model_identity": {"name": "m", "digest": "d2"}},
        {"pipeline_kind": "StableDiffusionXLPipeline"},
    ]
    ids = {candidate_id(**{**base, **change}) for change in changes}
    assert first not in ids and len(ids) == len(changes)


def test_ineligible_candidates_are_ranked_with_their_reason_but_never_selected() -> None:
    scores = [("best", 0.9), ("dropped", 0.8), ("ok", 0.5)]
    why = {"dropped": "seed 7 is no longer in the manifest"}
    selection = rank_and_select(scores, keep_top_k=2, min_score=0.0, ineligible=why)
    assert selection.selected == {"best", "ok"}
    assert selection.ranks == {"best": 1, "dropped": 2, "ok": 3}
    assert selection.reasons["dropped"] == "seed 7 is no longer in the manifest"
