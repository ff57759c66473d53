"""A small likeness of an asset's delivered pixels, recorded at finalize so that found copies can be confirmed later.

A watermark says which asset an image claims to be; the fingerprint lets the audit check that the pixels are that
asset's (`tasks.inspection.likeness`). It is the delivered image (after any upscale, with its watermark), area-averaged
to FINGERPRINT_SIDE px on its long side, stored as an 8-bit RGB PNG: 2-12 KB per asset. Colour, not grayscale: in
grayscale, unrelated images with the same layout (a dark shape on a light ground, a sky over hills) correlated as
well as attacked copies of an asset did (measurements in `tasks.inspection.likeness`).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

FINGERPRINT_SIDE = 64


def fingerprint_size(size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an image of `size` scaled to FINGERPRINT_SIDE px on its long side (at least 1 px each)."""
    width, height = size
    scale = FINGERPRINT_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def rgb_pixels(image: Image.Image) -> np.ndarray:
    """The image's RGB pixels as a float32 array of shape (height, width, 3)."""
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.float32)


def area_resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`pixels` resized to (width, height): area averaging when shrinking, bilinear when enlarging."""
    import cv2

    height, width = pixels.shape[:2]
    shrinking = size[0] <= width and size[1] <= height
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def make_fingerprint(image: Image.Image) -> bytes:
    """The fingerprint of delivered pixels: FINGERPRINT_SIDE px on the long side, as RGB PNG bytes."""
    import numpy as np
    from PIL import Image

    small = area_resize(rgb_pixels(image), fingerprint_size(image.size))
    out = io.BytesIO()
    Image.fromarray(np.clip(np.rint(small), 0, 255).astype(np.uint8), "RGB").save(out, "PNG", optimize=True)
    return out.getvalue()


def read_fingerprint(data: bytes) -> np.ndarray:
    """A stored fingerprint as a float32 array of shape (height, width, 3)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return rgb_pixels(image)
