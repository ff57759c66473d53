"""The `finalize` section of a policy: delivery encoding and how finalization runs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FinalizePolicy(BaseModel):
    """How selected candidates become delivered, watermarked, signed files."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Finalize selected candidates at the end of a batch run.")
    jpeg_quality: int = Field(92, ge=50, le=100, description="JPEG quality for output_format jpeg.")
    jpeg_subsampling: Literal["4:4:4", "4:2:2", "4:2:0"] = Field(
        "4:4:4",
        description="JPEG chroma subsampling. spreadTile (the default watermark) survives 4:2:0; the older dwt "
        "watermarks live in the chroma channel, 4:2:0 can erase them on detailed images, and finalize then "
        "refuses the asset.",
    )
    webp_lossless: bool = Field(
        True,
        description="Deliver WebP losslessly. Lossy WebP always subsamples chroma: spreadTile survives it, the "
        "older dwt watermarks may not; finalize decodes the delivered bytes and refuses an asset whose mark is gone.",
    )
    webp_quality: int = Field(90, ge=50, le=100, description="WebP quality when webp_lossless is false.")
    workers: int = Field(
        2, ge=1, le=64, description="Processes finalizing in parallel (watermarking and signing are CPU-bound)."
    )
    require_trusted: bool = Field(
        True,
        description="Require the signed asset to validate as Trusted against the trust anchors; when false a "
        "Valid (untrusted signer) result is accepted.",
    )
