"""Image formats AssetMint reads and writes, recognised from their bytes."""

from __future__ import annotations

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
SNIFFABLE = "PNG, JPEG or WebP"


def sniff_mime(data: bytes) -> str | None:
    """The image type from the first bytes: image/png, image/jpeg or image/webp; None otherwise."""
    if data.startswith(PNG_MAGIC):
        return "image/png"
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
