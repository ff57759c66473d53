"""Scores of an image do not depend on the batch it was scored in: a resumed run scores whatever is left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.stages.safety.images import concept_scores, nsfw_scores
from tasks.stages.score import cosine_rows, encode_images, encode_texts, load_scorer

PROMPTS = ["a red cube on a table", "a blue ball on a table", "a lamp", "a knife on a white background"]


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(7)
    paths = []
    for index in range(7):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _compositions(count: int) -> list[list[list[int]]]:
    """Ways to split `count` items into batches, as a resumed run might: all at once, in threes, alone, reversed."""
    everything = list(range(count))
    return [
        [everything],
        [everything[i : i + 3] for i in range(0, count, 3)],
        [[i] for i in everything],
        [list(reversed(everything[2:])), [1, 0]],
    ]


def test_clip_scores_are_bit_identical_in_any_batch_composition(images: list[Path]) -> None:
    scorer = load_scorer("embedded:tiny-clip")
    results = []
    for batches in _compositions(len(images)):
        texts: dict[str, np.ndarray] = {}
        for chunk in ([PROMPTS], [[p] for p in PROMPTS], [PROMPTS[::-1]]):
            for group in chunk:
                for text, vector in zip(group, encode_texts(scorer, group, per_text=True), strict=True):
                    assert texts.setdefault(text, vector).tobytes() == vector.tobytes(), text
        embeddings: dict[int, bytes] = {}
        scores: dict[int, float] = {}
        for batch in batches:
            vectors = encode_images(scorer, [images[i] for i in batch], 16, per_image=True)
            for index, vector, cosine in zip(batch, vectors, cosine_rows(vectors, texts[PROMPTS[0]]), strict=True):
                embeddings[index] = vector.tobytes()
                scores[index] = float(cosine)
        results.append((embeddings, scores))
    first_embeddings, first_scores = results[0]
    for embeddings, scores in results[1:]:
        assert embeddings == first_embeddings
        assert scores == first_scores  # ==, not approx: a tie must break the same way on every rerun


def test_concept_and_nsfw_scores_are_bit_identical_in_any_batch_composition(images: list[Path]) -> None:
    scorer = load_scorer("embedded:tiny-clip")
    embeddings = encode_images(scorer, images, 16, per_image=True)

    def encode(texts: list[str]) -> np.ndarray:
        return encode_texts(scorer, texts, per_text=True)

    whole = concept_scores(embeddings, PROMPTS, encode)
    nsfw_whole = nsfw_scores(images, per_image=True)
    for batches in _compositions(len(images))[1:]:
        for batch in batches:
            part = concept_scores(embeddings[batch], PROMPTS, encode)
            assert part.tobytes() == whole[batch].tobytes()
            assert nsfw_scores([images[i] for i in batch], batch_size=2, per_image=True) == [
                nsfw_whole[i] for i in batch
            ]
