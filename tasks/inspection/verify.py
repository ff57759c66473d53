"""`assetmint verify`: one file's Content Credential, its watermark, and whether both agree with the ledger.

A view of the inspection engine: `verify_file` maps its `Evidence` to the report fields and problems below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policies.model import Policy
from tasks.inspection.engine import (
    Evidence,
    InspectionContext,
    LedgerIndex,
    inspect_bytes,
    install_bomb_guard,
    watermark_secrets_for,
)
from tasks.inspection.likeness import mark_mismatch_reason
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
    likeness: dict[str, Any] | None = None  # the pixels against the fingerprint of the asset the watermark names

    def fail(self, problem: str) -> None:
        """Record a failed check."""
        self.ok = False
        self.problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def verify_file(
    path: Path,
    policy: Policy,
    ledger: Ledger | None,
    anchors: list[str],
    context: InspectionContext | None = None,
) -> VerifyReport:
    """Check one file's credential, watermark and ledger agreement; never raises for a bad file.

    Pass `context` (the same for every file) to index the ledger once for many files.
    """
    result = VerifyReport(path=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        result.fail(f"cannot read the file: {exc.strerror or exc}")
        return result
    if context is None:
        install_bomb_guard()
        context = InspectionContext(
            policy=policy, anchors=anchors, index=LedgerIndex.build(ledger), secrets=watermark_secrets_for(policy)
        )
    return verify_view(inspect_bytes(data, context), result, context, with_ledger=ledger is not None)


def verify_view(found: Evidence, result: VerifyReport, context: InspectionContext, with_ledger: bool) -> VerifyReport:
    """Verify's report fields and problems for what the engine found."""
    from tasks.provenance.credentials import accepted_states

    result.sha256 = found.sha256
    result.mime = found.mime
    if found.mime is None:
        result.fail(found.unreadable or "not an image")
        return result
    report = found.report
    if report is not None:
        from tasks.provenance.trust import trust_of

        trust = trust_of(report.state, report.signer, report.signer_issuer)
        result.credential = {**report.to_dict(), "trust": trust.label, "trust_explanation": trust.explanation}
        if report.state == "NoManifest":
            result.fail("no Content Credential (C2PA manifest)")
        elif report.state not in accepted_states(context.policy.finalize.require_trusted):
            codes = ", ".join(report.status_codes) or "no codes"
            result.fail(f"Content Credential is {report.state} ({codes})")
    elif found.credential_error is not None:
        result.fail(f"the Content Credential cannot be read: {found.credential_error}")
    if found.unreadable is not None:
        result.fail(f"the watermark cannot be decoded: {found.unreadable}")
        return result

    wm = found.watermark or {}
    if "error" in wm:
        result.fail(f"the watermark cannot be decoded: {wm['error']}")
    elif wm:
        result.watermark = {k: wm[k] for k in ("method", "key", "attempt", "payload")}
        if wm["key"] is None:
            tried = ", ".join(wm.get("methods_tried") or [wm["method"]])
            why = f": {wm['note']}" if wm.get("note") else ""
            result.fail(f"no AssetMint watermark ({tried}) decodes from the pixels{why}")
    for problem in found.disagreements:
        result.fail(problem)

    if with_ledger and found.decoded_key is not None:
        record = context.index.get(found.watermark_key)
        if record is None:
            result.fail(f"watermark key {found.decoded_key} resolves to no record in this ledger")
        else:
            asset, candidate = record
            result.ledger = {
                "asset_key": asset.asset_key,
                "run_id": asset.run_id,
                "candidate_id": asset.candidate_id,
                "state": candidate.state,
                "final_sha256": asset.final_sha256,
                "manifest_label": asset.manifest_label,
            }
            if found.sha256_differs:
                result.fail(f"{found.sha256_differs} (re-encoded or edited)")
            result.likeness = found.likeness_facts()
            if found.mark_mismatch is not None:
                result.fail(mark_mismatch_reason(asset.candidate_id, found.mark_mismatch))
    return result
