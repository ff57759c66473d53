"""The likeness check: attacked copies of an asset match its fingerprint, unrelated images do not."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from conftest import picture
from tasks.inspection.likeness import THRESHOLD, compare
from tasks.provenance.fingerprint import FINGERPRINT_SIDE, make_fingerprint


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue()))


def _resized(image: Image.Image, scale: float) -> Image.Image:
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def _bright_contrast(image: Image.Image, brightness: float, contrast: float) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Brightness(image).enhance(brightness)).enhance(contrast)


DELIVERED = picture(1)
# name: (attack, the crop box it shows in the delivered image's pixels, or None for all of it)
ATTACKS: dict[str, tuple[Callable[[Image.Image], Image.Image], tuple[int, int, int, int] | None]] = {
    "resize 0.5x": (lambda im: _resized(im, 0.5), None),
    "resize 0.75x, JPEG q90": (lambda im: _jpeg(_resized(im, 0.75), 90), None),
    "JPEG q50": (lambda im: _jpeg(im, 50), None),
    "brightness +20%": (lambda im: _bright_contrast(im, 1.2, 1.0), None),
    "brightness -20%, contrast +20%": (lambda im: _bright_contrast(im, 0.8, 1.2), None),
    "contrast -20%": (lambda im: _bright_contrast(im, 1.0, 0.8), None),
    "55% crop, bottom right": (lambda im: im.crop((132, 132, 512, 512)), (132, 132, 380, 380)),
    "55% crop, top left": (lambda im: im.crop((0, 0, 380, 380)), (0, 0, 380, 380)),
    "9:16 out of 1:1, right edge": (lambda im: im.crop((224, 0, 512, 512)), (224, 0, 288, 512)),
    "16:9 out of 1:1, middle": (lambda im: im.crop((0, 112, 512, 400)), (0, 112, 512, 288)),
    "9:16 crop, 0.6x, +20% brightness, JPEG q50": (
        lambda im: _jpeg(_bright_contrast(_resized(im.crop((100, 0, 388, 512)), 0.6), 1.2, 1.0), 50),
        (100, 0, 288, 512),
    ),
    "60% crop, 0.5x, -20% contrast, JPEG q50": (
        lambda im: _jpeg(_bright_contrast(_resized(im.crop((60, 90, 456, 490)), 0.5), 1.0, 0.8), 50),
        (60, 90, 396, 400),
    ),
}


def test_the_fingerprint_is_small_and_keeps_the_aspect() -> None:
    wide = picture(2, (640, 360))
    data = make_fingerprint(wide)
    assert len(data) < 16_000
    with Image.open(io.BytesIO(data)) as stored:
        assert (stored.size, stored.mode) == ((FINGERPRINT_SIDE, 36), "RGB")


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_attacked_copy_matches_where_it_was_cut_from(name: str) -> None:
    attack, box = ATTACKS[name]
    found = attack(DELIVERED)
    likeness = compare(found, make_fingerprint(DELIVERED), DELIVERED.size)
    assert likeness is not None and likeness.matched, likeness
    x, y, width, height = box or (0, 0, *DELIVERED.size)
    # Where and how large: within a few delivered pixels per fingerprint pixel (8 here).
    assert np.allclose(likeness.region, (x, y, width, height), atol=24), (likeness.region, box)
    assert likeness.scale == pytest.approx(found.width / width, rel=0.05)


def test_unrelated_pictures_do_not_match() -> None:
    pictures = [
        picture(seed, size) for seed, size in ((1, (512, 512)), (2, (640, 360)), (3, (360, 640)), (4, (400, 400)))
    ]
    pictures.append(Image.effect_noise((300, 300), 60).convert("RGB"))
    for delivered in pictures:
        fingerprint = make_fingerprint(delivered)
        for other in pictures:
            if other is delivered:
                continue
            for found in (other, _jpeg(other.crop((0, 0, other.width * 3 // 4, other.height * 3 // 4)), 75)):
                likeness = compare(found, fingerprint, delivered.size)
                assert likeness is not None and likeness.score < THRESHOLD, likeness


def test_what_cannot_be_compared_is_said_so() -> None:
    fingerprint = make_fingerprint(DELIVERED)
    assert compare(Image.new("RGB", (300, 300), (40, 90, 200)), fingerprint, DELIVERED.size) is None  # featureless
    assert compare(DELIVERED.crop((0, 0, 512, 30)), fingerprint, DELIVERED.size) is None  # a strip: 4 px there
