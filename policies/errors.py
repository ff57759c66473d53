"""The typed errors every layer shares; they live in the leaf package so that policies/ imports nothing above it."""

from __future__ import annotations


class AssetMintError(Exception):
    """Base class for errors caused by input, configuration or environment; shown without a traceback."""

    exit_code = 2


class PolicyError(AssetMintError):
    """A policy file is unreadable, malformed or invalid, or a manifest breaks a policy limit."""
