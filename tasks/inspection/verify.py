"""`assetmint verify`: one file's Content Credential, its watermark, and whether both agree with the ledger."""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policies.model import Policy
from tasks.core.errors import AssetMintError
from tasks.core.media import sniff_mime
from tasks.stages.finalize import WATERMARK_ALG_PREFIX
from tasks.storage.ledger import Ledger


@dataclass
class VerifyReport:
    """Everything learned about one file; `ok` is False when any check failed."""

    path: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    mime: str | None = None
    sha256: str | None = None
    credential: dict[str, Any] | None = None
    watermark: dict[str, Any] | None = None
    ledger: dict[str, Any] | None = None

    def fail(self, problem: str) -> None:
        """Record a failed check."""
        self.ok = False
        self.problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def trust_anchors_for(policy: Policy) -> list[str]:
    """The policy's trust anchors, plus the development root when the policy signs with development keys."""
    anchors = list(policy.signing.trust_anchors)
    if policy.signing.uses_development_keys:
        from tasks.provenance.keys import show_dev_keys

        try:
            anchors.append(str(show_dev_keys().trust_anchor))
        except AssetMintError:
            pass  # no development keys on this machine: nothing signed here with them to trust
    return anchors


def _watermark_method(report: Any, policy: Policy) -> str:
    """The decoder to use: the credential's soft-binding algorithm only when the policy accepts the credential.

    Anyone can attach a credential naming another algorithm; letting it choose would hide our mark from the check.
    """
    from tasks.provenance.credentials import accepted_states

    if report is None or report.state not in accepted_states(policy.finalize.require_trusted):
        return policy.watermark.method.value
    alg = (report.soft_binding or {}).get("alg", "")
    if isinstance(alg, str) and alg.startswith(WATERMARK_ALG_PREFIX):
        return alg[len(WATERMARK_ALG_PREFIX) :]
    return policy.watermark.method.value


def _candidate_sizes(report: Any, policy: Policy) -> list[tuple[int, int]]:
    sizes = [tuple(size) for size in policy.watermark.audit_rescale_sizes]
    size = ((report.generation_assertion or {}).get("size") if report is not None else None) or {}
    if isinstance(size, dict) and isinstance(size.get("width"), int) and isinstance(size.get("height"), int):
        sizes.insert(0, (size["width"], size["height"]))
    return sizes  # type: ignore[return-value]


def verify_file(path: Path, policy: Policy, ledger: Ledger | None, anchors: list[str]) -> VerifyReport:
    """Check one file's credential, watermark and ledger agreement; never raises for a bad file."""
    from PIL import Image, UnidentifiedImageError

    from tasks.core.errors import ProvenanceError, WatermarkError
    from tasks.provenance import credentials as provenance
    from tasks.provenance import watermark

    result = VerifyReport(path=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        result.fail(f"cannot read the file: {exc.strerror or exc}")
        return result
    result.sha256 = hashlib.sha256(data).hexdigest()
    result.mime = sniff_mime(data)
    if result.mime is None:
        result.fail("not a PNG, JPEG or WebP image")
        return result

    report = None
    try:
        report = provenance.read_and_validate(data, result.mime, anchors)
        result.credential = report.to_dict()
    except ProvenanceError as exc:
        result.fail(f"the Content Credential cannot be read: {exc}")
    if report is not None:
        accepted = provenance.accepted_states(policy.finalize.require_trusted)
        if report.state == "NoManifest":
            result.fail("no Content Credential (C2PA manifest)")
        elif report.state not in accepted:
            codes = ", ".join(report.status_codes) or "no codes"
            result.fail(f"Content Credential is {report.state} ({codes})")

    method = _watermark_method(report, policy)
    decoded_key: int | None = None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            decoded = watermark.decode_for_audit(image.convert("RGB"), method, _candidate_sizes(report, policy))
        decoded_key = decoded.key
        result.watermark = {
            "method": method,
            "key": decoded.key,
            "attempt": decoded.attempt,
            "payload": watermark.payload_hex(decoded.key, method) if decoded.key else None,
        }
        if decoded.key is None:
            result.fail(f"no AssetMint watermark ({method}) decodes from the pixels")
    except (WatermarkError, UnidentifiedImageError, OSError, ValueError) as exc:
        result.fail(f"the watermark cannot be decoded: {exc}")

    soft = (report.soft_binding or {}) if report is not None else {}
    blocks = soft.get("blocks") or []
    bound_payload = blocks[0].get("value") if blocks and isinstance(blocks[0], dict) else None
    if (
        result.watermark
        and result.watermark["payload"]
        and bound_payload
        and bound_payload != result.watermark["payload"]
    ):
        result.fail(
            f"the credential's soft binding {bound_payload} disagrees with the watermark "
            f"{result.watermark['payload']} (credential from another asset?)"
        )

    if ledger is not None and decoded_key is not None:
        found = ledger.asset_by_key(decoded_key)
        if found is None:
            result.fail(f"watermark key {decoded_key} resolves to no record in this ledger")
        else:
            asset, candidate = found
            result.ledger = {
                "asset_key": asset.asset_key,
                "run_id": asset.run_id,
                "candidate_id": asset.candidate_id,
                "state": candidate.state,
                "final_sha256": asset.final_sha256,
                "manifest_label": asset.manifest_label,
            }
            claimed = (report.generation_assertion or {}).get("asset_id") if report is not None else None
            if claimed and claimed != asset.candidate_id:
                result.fail(f"the credential names asset {claimed} but the watermark resolves to {asset.candidate_id}")
            if asset.final_sha256 and asset.final_sha256 != result.sha256:
                result.fail("the bytes differ from the finalized asset's recorded sha256 (re-encoded or edited)")
    return result
