"""CLIP scoring with open_clip: CLIPScore (Hessel et al. 2021) per candidate, embeddings kept for later stages."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from tasks.core.cache import load_once
from tasks.core.errors import ModelError
from tasks.stages.batch_invariance import row_dots, row_norms

CLIPSCORE_WEIGHT = 2.5
LOCAL_DIR = "local-dir:"


def clip_score(cosine: float) -> float:
    """CLIPScore as Hessel et al. 2021 define it: w * max(cos, 0) with w = 2.5."""
    return CLIPSCORE_WEIGHT * max(float(cosine), 0.0)


@dataclass(frozen=True)
class ClipSource:
    """An open_clip model name and its pretrained tag or checkpoint path."""

    ref: str
    model_name: str
    pretrained: str | None


@dataclass
class Scorer:
    """A loaded open_clip model with its preprocessing and tokenizer."""

    source: ClipSource
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    lock: threading.Lock

    @property
    def context_length(self) -> int:
        """Tokens the text encoder sees, start and end tokens included."""
        return int(getattr(self.tokenizer, "context_length", 77))


def resolve_clip(ref: str) -> ClipSource:
    """Resolve 'embedded:NAME', 'NAME:TAG', 'NAME:/path/ckpt.pt' or 'local-dir:/folder'; unknown names list all."""
    from tasks.stages import embedded

    if embedded.is_embedded(ref):
        embedded.check_embedded(ref, "clip")  # before building anything: a pipeline name is refused, not built
        built = cast(embedded.EmbeddedClip, embedded.resolve_embedded(ref))
        checkpoint = str(built.checkpoint) if built.checkpoint else None  # a local-dir: model carries its weights
        return ClipSource(ref=ref, model_name=built.model_name, pretrained=checkpoint)
    import open_clip

    if ref.startswith(LOCAL_DIR):
        folder = Path(ref[len(LOCAL_DIR) :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise ModelError(f"{ref!r}: {folder} is not an open_clip model folder (no open_clip_config.json).")
        return ClipSource(ref=ref, model_name=f"{LOCAL_DIR}{folder.resolve()}", pretrained=None)
    name, _, pretrained = ref.partition(":")
    known = open_clip.list_models()
    if name not in known:
        raise ModelError(f"unknown open_clip model {name!r} in {ref!r}; valid models: {', '.join(known)}.")
    if pretrained and not Path(pretrained).expanduser().exists():
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            valid = ", ".join(tags) or "none (give a checkpoint path)"
            raise ModelError(f"unknown pretrained tag {pretrained!r} for {name}; valid tags: {valid}.")
    return ClipSource(ref=ref, model_name=name, pretrained=pretrained or None)


@load_once
def load_scorer(ref: str, device: str = "cpu") -> Scorer:
    """Load (once per process) the CLIP model named by `ref`."""
    source = resolve_clip(ref)
    import open_clip

    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            source.model_name, pretrained=source.pretrained, device=device
        )
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelError(f"cannot load CLIP model {ref!r}: {exc}") from None
    model.eval()
    return Scorer(
        source=source,
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(source.model_name),
        device=device,
        lock=threading.Lock(),
    )


def token_overflow(scorer: Scorer, text: str) -> int:
    """How many tokens of `text` the CLIP text encoder drops (0 when it fits)."""
    encode = getattr(scorer.tokenizer, "encode", None)
    if encode is not None:  # open_clip's own tokenizer: no start/end tokens in encode()
        return max(0, len(encode(text)) + 2 - scorer.context_length)
    wrapped = getattr(scorer.tokenizer, "tokenizer", None)  # open_clip's HFTokenizer around a transformers one
    if wrapped is None:
        return 0
    return max(0, len(wrapped(text).input_ids) - scorer.context_length)


def _normalize(vectors: np.ndarray) -> np.ndarray:
    norms = row_norms(vectors)[:, None]
    return vectors / np.clip(norms, 1e-12, None)


def _encode(encoder: Any, batches: Sequence[Any], device: str) -> np.ndarray:
    """Run `encoder` on each input batch and stack the float32 rows."""
    import torch

    with torch.inference_mode():
        return np.concatenate([encoder(batch.to(device)).float().cpu().numpy() for batch in batches], axis=0)


def encode_images(scorer: Scorer, paths: Sequence[Path], batch_size: int, per_image: bool = False) -> np.ndarray:
    """Unit-norm image embeddings (float32, one row per path), read in batches of `batch_size`.

    With `per_image` the encoder sees one image at a time, so a row's bits do not depend on the batch it was read in
    (the policy's generation.batch_invariant; see tasks/stages/batch_invariance.py).
    """
    import torch
    from PIL import Image

    rows: list[np.ndarray] = []
    for start in range(0, len(paths), batch_size):
        tensors = []
        for path in paths[start : start + batch_size]:
            with Image.open(path) as image:
                tensors.append(scorer.preprocess(image.convert("RGB")))
        batches = [t.unsqueeze(0) for t in tensors] if per_image else [torch.stack(tensors)]
        with scorer.lock:
            rows.append(_encode(scorer.model.encode_image, batches, scorer.device))
    return _normalize(np.concatenate(rows, axis=0)).astype(np.float32)


def encode_texts(scorer: Scorer, texts: Sequence[str], per_text: bool = False) -> np.ndarray:
    """Unit-norm text embeddings (float32, one row per text); texts beyond the context are truncated.

    With `per_text` the encoder sees one text at a time, so a row does not depend on which other texts came along.
    """
    batches = [scorer.tokenizer([text]) for text in texts] if per_text else [scorer.tokenizer(list(texts))]
    with scorer.lock:
        features = _encode(scorer.model.encode_text, batches, scorer.device)
    return _normalize(features).astype(np.float32)


def cosine_rows(image_embeddings: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
    """Cosine similarity of each unit-norm image row with one unit-norm text vector (each row computed alone)."""
    return row_dots(image_embeddings, np.asarray(text_embedding)[None, :])[:, 0]
