"""Typed errors. Every user mistake surfaces as an AssetMintError with a message that names the problem."""

from __future__ import annotations

from policies.errors import AssetMintError, PolicyError

__all__ = [
    "AssetMintError",
    "LedgerError",
    "MissingLedgerError",
    "ManifestError",
    "ModelError",
    "OrchestrationUnavailableError",
    "PolicyError",
    "ProvenanceError",
    "ReviewError",
    "RunLockedError",
    "SigningConfigError",
    "WatermarkError",
    "WorkDirError",
]


class ManifestError(AssetMintError):
    """A manifest file is unreadable, malformed or invalid."""


class ModelError(AssetMintError):
    """A model reference cannot be resolved or loaded."""


class LedgerError(AssetMintError):
    """The ledger cannot be opened, or a record the user asked for does not exist."""


class MissingLedgerError(LedgerError):
    """A SQLite ledger file that was to be read does not exist (and was not created)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"there is no ledger at {path}")
        self.path = path


class ReviewError(AssetMintError):
    """A review decision is not allowed (unknown decision, flagged without override, wrong state)."""


class RunLockedError(AssetMintError):
    """Another process is already running the same manifest."""


class WorkDirError(AssetMintError):
    """The work directory cannot be created or written."""


class WatermarkError(AssetMintError):
    """An image cannot be watermarked (too small, wrong mode) or the watermark did not verify."""


class ClusterError(AssetMintError):
    """The Ray cluster a policy names cannot be used: Ray is not installed, the head is unreachable, too few GPUs."""


class OrchestrationUnavailableError(AssetMintError):
    """The Prefect API a flow needs cannot be reached: the ephemeral server did not start in time, or a URL is down."""


class ProvenanceError(AssetMintError):
    """A C2PA manifest cannot be built, signed, read or validated."""


class SigningConfigError(ProvenanceError):
    """The signing certificate, key or signer configuration is missing or unusable."""
