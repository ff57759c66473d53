"""Per-user directories: cache for built models, config for keys. Overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Directory for built embedded models ($ASSETMINT_CACHE_DIR, else the XDG cache home)."""
    explicit = os.environ.get("ASSETMINT_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "assetmint"


def config_dir() -> Path:
    """Directory for user configuration such as development keys ($ASSETMINT_CONFIG_DIR, else XDG config home)."""
    explicit = os.environ.get("ASSETMINT_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "assetmint"
