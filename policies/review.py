"""The `review` section of a policy: who decides what gets finalized."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ReviewPolicy(BaseModel):
    """Automatic approval by rule, or a human reviewer."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["auto", "manual"] = Field(
        "auto",
        description="auto: the policy approves what selection chose (top-k above scoring.min_score among candidates "
        "that passed screening). manual: a reviewer approves or rejects in `assetmint review`; the batch run ends "
        "pending review.",
    )
