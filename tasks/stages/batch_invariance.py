"""Batch invariance: make a candidate's pixels independent of the batch it is generated in.

Seeded per-candidate generators make the initial noise batch-independent, but CPU kernels (oneDNN convolutions,
MKL GEMM) pick different blockings for different batch sizes, so the same sample differs in the last bits inside a
batch of 4 and alone, and occasionally a pixel rounds the other way. In invariant mode the denoiser runs once per
sample and the VAE decodes one image at a time, so each sample sees exactly the same arithmetic at any batch size.
The batch still shares one pipeline call (text encoding, scheduler loop, Python overhead).

Scoring follows the same switch: the CLIP encoders and the NSFW classifier see one input at a time while files are
still read in batches, and the small vector arithmetic after them (norms, cosines) is always done one row at a time,
since a matrix product's kernel can sum a row differently depending on how many rows it holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_WRAPPED = "_assetmint_batch_invariant"


def _split(value: Any, index: int, batch: int) -> Any:
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) > 0 and shape[0] == batch:
        return value[index : index + 1]
    if isinstance(value, dict):
        return {key: _split(item, index, batch) for key, item in value.items()}
    return value


def _per_sample_forward(module: Any) -> Any:
    original = module.forward

    def forward(sample: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        batch = sample.shape[0]
        if batch == 1:
            return original(sample, *args, **kwargs)
        outputs = [
            original(
                sample[i : i + 1],
                *(_split(a, i, batch) for a in args),
                **{k: _split(v, i, batch) for k, v in kwargs.items()},
            )
            for i in range(batch)
        ]
        first = outputs[0]
        if isinstance(first, tuple):
            return (torch.cat([o[0] for o in outputs]), *first[1:])
        first.sample = torch.cat([o.sample for o in outputs])
        return first

    return forward


def make_batch_invariant(pipeline: Any) -> bool:
    """Run the pipeline's denoiser per sample and decode one image at a time; True when the pipeline supports it."""
    denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    if denoiser is None:
        return False
    if not getattr(denoiser, _WRAPPED, False):
        denoiser.forward = _per_sample_forward(denoiser)
        setattr(denoiser, _WRAPPED, True)
    vae = getattr(pipeline, "vae", None)
    if vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    return True


def row_norms(rows: np.ndarray) -> np.ndarray:
    """The Euclidean length of each row, each computed alone (float32)."""
    return np.array([np.sqrt(np.sum(row * row)) for row in np.asarray(rows, dtype=np.float32)], dtype=np.float32)


def row_dots(rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Dot products of each row with each vector, shape (len(rows), len(vectors)); each row computed alone."""
    vectors = np.asarray(vectors, dtype=np.float32)
    out = np.empty((len(rows), vectors.shape[0]), dtype=np.float32)
    for index, row in enumerate(np.asarray(rows, dtype=np.float32)):
        out[index] = np.sum(row * vectors, axis=-1)
    return out
