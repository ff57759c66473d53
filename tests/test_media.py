"""The one image-type sniffer shared by signing, inspection and the soft-binding API."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tasks.core.media import sniff_mime


def _encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_real_encodings_are_recognised(fmt: str, mime: str) -> None:
    assert sniff_mime(_encoded(fmt)) == mime


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"\x89PNG",  # a PNG signature cut short
        b"\xff\xd8",  # a JPEG start-of-image marker without the next marker
        b"RIFF\x00\x00\x00\x00WAVE",  # RIFF, but audio
        b"RIFF\x00\x00\x00\x00WEB",  # RIFF with a truncated form type
        b"GIF89a" + bytes(16),
    ],
)
def test_other_bytes_are_not_images(data: bytes) -> None:
    assert sniff_mime(data) is None
