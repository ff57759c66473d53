"""Deterministic identities: a candidate's id is derived from everything that makes its pixels."""

from __future__ import annotations

from typing import Any

from tasks.core.manifest import canonical_digest

CANDIDATE_ID_LENGTH = 20


def candidate_id(
    *,
    model_identity: dict[str, Any],
    pipeline_kind: str,
    prompt: str,
    negative_prompt: str,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    scheduler: str,
    seed: int,
    adapters: tuple[str, ...] = (),
    conditioning_digests: tuple[str, ...] = (),
) -> str:
    """A short hex id that changes whenever any input that determines the pixels changes."""
    return canonical_digest(
        {
            "model": model_identity,
            "pipeline": pipeline_kind,
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "size": [width, height],
            "steps": steps,
            "guidance": float(guidance),
            "scheduler": scheduler,
            "seed": seed,
            "adapters": list(adapters),
            "conditioning": list(conditioning_digests),
        }
    )[:CANDIDATE_ID_LENGTH]
