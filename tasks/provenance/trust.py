"""One trust vocabulary for review, `verify` and the audit: c2pa's validation state plus who signed, as one label.

c2pa reports a development-signed asset as Trusted whenever the development root is configured as a trust
anchor (AssetMint does that for development keys so finalization can check its own signatures). That is not
trust for production, so no view shows c2pa's raw state to people: they see the label below. Machines keep
c2pa's raw ``state`` with the label beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from tasks.provenance.keys import DEV_ORGANIZATION, DEV_ROOT_NAME, DEV_SIGNER_NAME

TRUSTED = "trusted"
DEVELOPMENT = "valid, development signer (not trusted for production)"
UNTRUSTED = "valid, untrusted signer"
INVALID = "invalid (tampered)"
NO_CREDENTIAL = "no credential"
DEVELOPMENT_BANNER = (
    "Signed with AssetMint development keys: these credentials validate, but they are not trusted for production. "
    "Configure signing.certificate_chain with your own certificate for real deployments."
)
_DEVELOPMENT_NAMES = frozenset({DEV_SIGNER_NAME, DEV_ROOT_NAME, DEV_ORGANIZATION})


@dataclass(frozen=True)
class Trust:
    """What a credential's validation means to a person: a short label and one sentence of why."""

    label: str
    explanation: str
    development: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def is_development_signer(signer: str | None, issuer: str | None = None) -> bool:
    """Whether a signing certificate's common name or issuer is AssetMint's development chain."""
    return signer in _DEVELOPMENT_NAMES or issuer in _DEVELOPMENT_NAMES


def trust_of(state: str | None, signer: str | None = None, issuer: str | None = None) -> Trust:
    """The one label for a c2pa validation state (Trusted, Valid, Invalid, NoManifest or None) and its signer."""
    if state is None or state == "NoManifest":
        return Trust(NO_CREDENTIAL, "the file carries no Content Credential (C2PA manifest)")
    if state == "Invalid":
        return Trust(INVALID, "the Content Credential does not match the file's bytes or is malformed")
    if is_development_signer(signer, issuer):
        return Trust(
            DEVELOPMENT,
            "the credential is intact, but it was signed with AssetMint's development keys, which no one outside "
            "this machine trusts",
            development=True,
        )
    if state == "Trusted":
        return Trust(TRUSTED, "the credential is intact and its signer chains to a configured trust anchor")
    return Trust(UNTRUSTED, "the credential is intact, but its signer is not among the configured trust anchors")


def trust_label(state: str | None, signer: str | None = None, issuer: str | None = None) -> str:
    """The label alone (for templates and one-line output)."""
    return trust_of(state, signer, issuer).label


def any_development(signers: Iterable[str | None]) -> bool:
    """Whether any of these signers is AssetMint's development chain (for a run's banner)."""
    return any(is_development_signer(signer) for signer in signers)
