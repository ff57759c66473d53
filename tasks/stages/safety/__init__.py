"""Safety screening: prompt blocklist and semantic screen, NSFW classifier, CLIP concept filter, evaluation."""

from __future__ import annotations

from tasks.core.errors import AssetMintError


class SafetyError(AssetMintError):
    """A safety filter cannot run: its model is missing, an image is unreadable, or inputs do not match."""


class UnreadableImageError(SafetyError):
    """An image file cannot be opened or decoded; the message names the file."""


class LabelsError(SafetyError):
    """A labels CSV for safety evaluation is malformed; the message names the file and line."""
