"""Does a found image show the asset its watermark names? Normalized cross-correlation with the asset's fingerprint.

Anyone who can read a watermark can write its key into other pixels, so a resolving mark alone does not make an image
ours. The audit compares the found image with the fingerprint finalize recorded (`tasks.provenance.fingerprint`),
allowing for what platforms do to a copy: a crop of at least MIN_CROP_AREA of the picture at any position (also one
that changes the aspect, such as 9:16 out of 1:1), a resize, brightness and contrast changes, JPEG compression.

How: the scales tried (the found image's size over the delivered one's) run from the one at which the found image
spans the delivered image's full width or full height to the one at which it would show only MIN_CROP_AREA of it,
SCALE_STEP apart, then REFINE_STEP apart around the best. At each scale the found image is area-averaged to fingerprint
resolution and slid over the fingerprint (OpenCV TM_CCOEFF_NORMED on the three colour channels, both lightly smoothed,
which forgives sub-pixel misalignment); the best correlation, its scale and region are the likeness.

Threshold, measured on this code (83 delivered images: 23 scikit-image sample photos at their own aspect ratios, 24
quickstart candidates upscaled 64 -> 256 px as finalize does, 12 tiny-sd images, 24 procedural product shots,
landscapes, flat illustrations and textures in 1:1, 16:9, 9:16 and 4:3):
- genuine copies, 2,118: unchanged; resized 0.5x and 0.75x + JPEG q90; JPEG q50; brightness, contrast and saturation
  +-20%; gamma 0.8; a warm colour cast; crops of 55% and 70% of the area; 9:16, 4:5, 1:1 and 16:9 crops; and 8 random
  combinations each of a crop of 55-100% of the area in any of those aspects, a 0.5-1x resize, brightness and
  contrast +-20% and JPEG q50-90. Lowest 0.875 (a combination on scikit-image's brick texture), 99.5% above 0.936.
- unrelated images, 22,467 pairs (each copy above against the fingerprints of 12 other delivered images; pairs of
  two quickstart, two tiny-sd or two procedural images of one kind are counted apart, below): highest 0.815, 99.9%
  below 0.721, median 0.09.
THRESHOLD = 0.85 lies between the two: no genuine copy fell below it and no unrelated image reached it. One compare
takes ~10 ms on a 2-core CPU. Limits: near-duplicates are not told apart. Candidates of one generator look alike
(quickstart stars on flat grounds score up to 0.997 against each other; 8% of such same-generator pairs pass), so
a mark moved onto a sibling image of the same campaign is not caught. A grayscale fingerprint did worse (unrelated
images with the same layout up to 0.93, above attacked copies at 0.86); a band-pass one lost attacked copies of
smooth images (down to 0.47).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.provenance.fingerprint import FINGERPRINT_SIDE, area_resize, read_fingerprint, rgb_pixels

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

THRESHOLD = 0.85
MIN_CROP_AREA = 0.5  # the smallest share of the delivered image a found crop may show (platforms crop to ~55%)
SCALE_STEP = 1.03  # between the scales tried first
REFINE_STEP = 1.0075  # between the scales tried around the best one
SMOOTHING = 1.0  # Gaussian sigma in fingerprint pixels, applied to the fingerprint and the found image alike
MIN_TEMPLATE_SIDE = 8  # fingerprint pixels: a found image smaller than this there is not compared
MIN_DETAIL = 1.0  # grey levels: a found image whose every channel varies less than this is featureless
QUERY_SIDE = 4 * FINGERPRINT_SIDE  # the found image is area-averaged to this long side once, before the scales


@dataclass(frozen=True)
class Likeness:
    """The best match of a found image inside an asset's fingerprint."""

    score: float  # normalized cross-correlation, -1 .. 1
    scale: float  # the found image's size over the delivered image's
    region: tuple[int, int, int, int]  # x, y, width, height of the match, in the delivered image's pixels
    threshold: float = THRESHOLD

    @property
    def matched(self) -> bool:
        """The found image shows the asset."""
        return self.score >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the audit's evidence and verify's report."""
        x, y, width, height = self.region
        return {
            "matched": self.matched,
            "score": round(self.score, 4),
            "threshold": self.threshold,
            "scale": round(self.scale, 4),
            "region": {"x": x, "y": y, "width": width, "height": height},
        }


def scale_range(found: tuple[int, int], delivered: tuple[int, int]) -> tuple[float, float]:
    """The smallest and largest scale (found size / delivered size) at which `found` is a crop of `delivered`."""
    (width, height), (full_width, full_height) = found, delivered
    smallest = max(width / full_width, height / full_height)  # spanning the full width or the full height
    largest = math.sqrt(width * height / (MIN_CROP_AREA * full_width * full_height))
    return smallest, max(smallest, largest)


def _geometric(low: float, high: float, step: float) -> list[float]:
    count = math.ceil(math.log(high / low) / math.log(step)) if high > low else 0
    return [low * (high / low) ** (i / count) for i in range(count + 1)] if count else [low]


def _smooth(pixels: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(pixels, (0, 0), SMOOTHING, borderType=cv2.BORDER_REFLECT)


def compare(image: Image.Image, fingerprint: bytes, delivered: tuple[int, int]) -> Likeness | None:
    """How well `image` matches a fingerprint of pixels delivered at `delivered` size; None when nothing compares."""
    from PIL import Image

    rgb = image.convert("RGB")
    if max(rgb.size) > QUERY_SIDE:  # area-averaged once: every scale's template is smaller still
        shrink = QUERY_SIDE / max(rgb.size)
        rgb = rgb.resize((max(1, round(rgb.width * shrink)), max(1, round(rgb.height * shrink))), Image.Resampling.BOX)
    return _correlate(rgb_pixels(rgb), read_fingerprint(fingerprint), delivered, image.size)


def _correlate(
    query: np.ndarray, reference: np.ndarray, delivered: tuple[int, int], found: tuple[int, int]
) -> Likeness | None:
    """`compare` on float32 RGB arrays: the found image (of size `found`, perhaps shrunk since) and the fingerprint."""
    import cv2

    width, height = found
    reference = _smooth(reference)
    ref_height, ref_width = reference.shape[:2]
    fx, fy = ref_width / delivered[0], ref_height / delivered[1]

    def at(scale: float) -> Likeness | None:
        size = (min(ref_width, round(width / scale * fx)), min(ref_height, round(height / scale * fy)))
        if min(size) < MIN_TEMPLATE_SIDE:
            return None
        template = _smooth(area_resize(query, size))
        if float(template.reshape(-1, 3).std(axis=0).max()) < MIN_DETAIL:
            return None  # no correlation to speak of (OpenCV's answer for a flat template is arbitrary)
        _, score, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(reference, template, cv2.TM_CCOEFF_NORMED))
        region = (round(x / fx), round(y / fy), round(width / scale), round(height / scale))
        return Likeness(score=min(1.0, float(score)), scale=scale, region=region)

    smallest, largest = scale_range((width, height), delivered)
    matches = [match for match in map(at, _geometric(smallest, largest, SCALE_STEP)) if match is not None]
    if not matches:
        return None
    best = max(matches, key=lambda match: match.score)
    around = _geometric(max(smallest, best.scale / SCALE_STEP), min(largest, best.scale * SCALE_STEP), REFINE_STEP)
    matches += [match for match in map(at, around) if match is not None]
    return max(matches, key=lambda match: match.score)


def mark_mismatch_reason(candidate_id: str, likeness: Likeness) -> str:
    """The reason given when a watermark resolves to an asset whose pixels the image does not show."""
    return (
        f"the watermark names asset {candidate_id}, but the pixels are not asset {candidate_id}'s (likeness "
        f"{likeness.score:.2f}, below {likeness.threshold:.2f}): a copied or forged mark"
    )
