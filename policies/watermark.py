"""The `watermark` section of a policy: whether and how finalized assets get an invisible watermark."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MIN_SIDE = 256


class WatermarkMethod(StrEnum):
    """The invisible-watermark algorithms AssetMint can embed and decode."""

    SPREAD_TILE = "spreadTile"
    DWT_DCT = "dwtDct"
    DWT_DCT_SVD = "dwtDctSvd"
    RIVAGAN = "rivaGan"


Side = Annotated[int, Field(ge=MIN_SIDE, le=65535)]


class WatermarkPolicy(BaseModel):
    """How finalized assets are watermarked and how audits look for the mark."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True,
        description=(
            "Embed an invisible watermark carrying the asset's ledger key before signing. Turning it off "
            "is recorded on every asset and in its Content Credential (no c2pa.watermarked action)."
        ),
    )
    method: WatermarkMethod = Field(
        default=WatermarkMethod.SPREAD_TILE,
        description=(
            "Watermark algorithm. spreadTile (default): a tiled spread-spectrum mark in luma whose payload is "
            "the asset key with a keyed MAC (signing.watermark_secret) under an error-correcting code; found "
            "again after crops, resizing, brightness/contrast changes, 4:2:0 JPEG and lossy WebP. "
            "dwtDctSvd (invisible-watermark, unkeyed, the default before spreadTile): survives JPEG/WebP and "
            "resizing only when scaled back, not crops. dwtDct: faster but fragile. rivaGan: 32-bit payload "
            "(keys up to 65,535), needs onnxruntime, seconds per image on CPU."
        ),
    )
    upscale_small: bool = Field(
        default=False,
        description=(
            f"Allow upscaling images smaller than {MIN_SIDE} px on a side so they can be watermarked. "
            "When false such images are refused, never published unmarked."
        ),
    )
    audit_rescale_sizes: list[tuple[Side, Side]] = Field(
        default_factory=list,
        description=(
            "Extra (width, height) sizes an audit rescales an image to when its watermark does not decode "
            f"as it is, e.g. the sizes this deployment generates. Each side at least {MIN_SIDE} px."
        ),
    )
