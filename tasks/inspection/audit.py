"""Auditing published images: Content Credential, watermark, ledger and store metadata, one verdict per object.

A target is ``s3://bucket/prefix``, a folder (recursive) or a file. Each image gets exactly one verdict with the
evidence behind it:

- ``verified``: an AssetMint credential the trust anchors accept (trusted; or, with development keys, valid with a
  development signer, as its evidence says) whose soft binding, decoded watermark, ledger record, sha256 and (for
  S3) object metadata all agree.
- ``recovered``: no credential (stripped or re-encoded), but the watermark resolves to a ledger record and the pixels
  match that asset's fingerprint (`tasks.inspection.likeness`): the evidence links the record and its original
  manifest label. For an asset finalized before fingerprints were recorded, the evidence says the pixels could not
  be confirmed.
- ``mark_mismatch``: the watermark names an asset, but the pixels are not that asset's: a copied or forged mark.
- ``tampered``: a credential is present but does not validate (Invalid).
- ``mismatch``: credential, watermark, location or metadata point to different assets (a transplanted credential).
- ``untrusted``: a valid AssetMint credential (or a marked image) signed by a signer outside the trust anchors.
- ``not_ours``: neither a resolving watermark nor an AssetMint credential.
- ``unreadable``: not an image, truncated or corrupt, a decompression bomb, the object could not be fetched, or a
  folder entry is no regular file (a symbolic link loop, a dangling link, a link to a folder, a FIFO: never opened).

One bad object never stops an audit: every failure becomes that object's verdict. The evidence comes from the
inspection engine (`tasks.inspection.engine.inspect_bytes`); `audit_view` only turns it into the verdict.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import stat
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import AssetMintError
from tasks.core.media import sniff_mime
from tasks.inspection.engine import (
    EXPECTED_STATES,
    JUMBF_C2PA_LABEL,
    Evidence,
    InspectionContext,
    LedgerIndex,
    Unreadable,
    inspect_bytes,
    install_bomb_guard,
    ledger_facts,
    trust_anchors_for,
    watermark_secrets_for,
)
from tasks.inspection.likeness import mark_mismatch_reason

if TYPE_CHECKING:
    from PIL import Image

    from policies.model import Policy
    from tasks.storage.ledger import Ledger

VERDICTS = ("verified", "recovered", "tampered", "mismatch", "mark_mismatch", "untrusted", "not_ours", "unreadable")
OK_VERDICTS = frozenset({"verified", "recovered"})
MAX_OBJECT_BYTES = 256 * 1024 * 1024
THUMBNAIL_SIDE = 96
SIDECAR_SUFFIX = ".provenance.json"


class AuditTargetError(AssetMintError):
    """An audit target that does not exist, cannot be listed, or is not a folder, file or s3:// URI."""


# --- what is audited ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditItem:
    """One object to audit: its name, where it came from, and how to fetch its bytes (and S3 metadata)."""

    target: str
    name: str  # a file path or an s3://bucket/key URI
    location: tuple[str, ...]  # ("file", absolute path) or ("s3", bucket, key): matched against the ledger
    fetch: Callable[[], tuple[bytes, dict[str, str]]]
    sidecar: Callable[[], dict[str, Any] | None] | None = None
    size: int | None = None


def _read_file(path: Path) -> tuple[bytes, dict[str, str]]:
    why = why_not_a_file(path)  # checked again here: the entry may have changed since it was listed
    if why is not None:
        raise Unreadable(why)
    size = path.stat().st_size
    if size > MAX_OBJECT_BYTES:
        raise Unreadable(f"the file is {size} bytes, over the audit limit of {MAX_OBJECT_BYTES}")
    return path.read_bytes(), {}


def _read_sidecar_file(path: Path) -> dict[str, Any] | None:
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return None
    loaded = json.loads(sidecar.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else None


_FILE_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def why_not_a_file(path: Path) -> str | None:
    """Why `path` cannot be read as a file (a link loop, a dangling link, a FIFO...); None for a regular file.

    Only stat and readlink: a FIFO is never opened, so it cannot block the audit.
    """
    try:
        mode = os.stat(path).st_mode  # follows symbolic links
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if os.path.islink(path):
            return f"dangling symbolic link to {os.readlink(path)}"
        return f"cannot read it: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "unknown kind")
    if kind == "directory" and os.path.islink(path):
        return f"symbolic link to the directory {os.readlink(path)}, not followed (audit that directory itself)"
    return f"not a regular file ({kind})"


def _unreadable_item(target: str, path: Path, why: str) -> AuditItem:
    """An entry that gets the verdict unreadable for `why` without ever being opened."""

    def refuse() -> tuple[bytes, dict[str, str]]:
        raise Unreadable(why)

    return AuditItem(target=target, name=str(path), location=("file", os.path.abspath(path)), fetch=refuse)


def _folder_items(target: str, folder: Path) -> list[AuditItem]:
    """Every entry under `folder` except hidden ones and sidecars: regular files, and what is not one (unreadable)."""
    items: list[AuditItem] = []

    def unlisted(exc: OSError) -> None:
        name = Path(exc.filename or folder)
        items.append(_unreadable_item(target, name, f"cannot list this folder: {exc.strerror or exc}"))

    for parent, dirs, files in os.walk(folder, onerror=unlisted):  # symbolic links to folders are not descended
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(parent, d)))]:
            child = Path(parent, name)
            if name.startswith(".") or name.endswith(SIDECAR_SUFFIX):
                continue
            why = why_not_a_file(child)
            items.append(_file_item(target, child) if why is None else _unreadable_item(target, child, why))
    return sorted(items, key=lambda item: item.name)


def _file_item(target: str, path: Path) -> AuditItem:
    resolved = path.resolve()
    return AuditItem(
        target=target,
        name=str(path),
        location=("file", str(resolved)),
        fetch=lambda: _read_file(resolved),
        sidecar=lambda: _read_sidecar_file(resolved),
    )


def _s3_items(target: str, bucket: str, prefix: str, client: Any) -> list[AuditItem]:
    from botocore.exceptions import BotoCoreError, ClientError

    keys: list[tuple[str, int]] = []
    sidecars: set[str] = set()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
        for page in pages:
            for entry in page.get("Contents", []):
                key = entry["Key"]
                if key.endswith(SIDECAR_SUFFIX):
                    sidecars.add(key)
                elif not key.endswith("/"):
                    keys.append((key, int(entry.get("Size", 0))))
    except (ClientError, BotoCoreError) as exc:
        raise AuditTargetError(f"cannot list {target}: {exc}") from None

    def fetch(key: str, size: int) -> Callable[[], tuple[bytes, dict[str, str]]]:
        def run() -> tuple[bytes, dict[str, str]]:
            if size > MAX_OBJECT_BYTES:
                raise Unreadable(f"the object is {size} bytes, over the audit limit of {MAX_OBJECT_BYTES}")
            response = client.get_object(Bucket=bucket, Key=key)
            return response["Body"].read(), dict(response.get("Metadata") or {})

        return run

    def sidecar(key: str) -> Callable[[], dict[str, Any] | None]:
        def run() -> dict[str, Any] | None:
            if key + SIDECAR_SUFFIX not in sidecars:
                return None
            loaded = json.loads(client.get_object(Bucket=bucket, Key=key + SIDECAR_SUFFIX)["Body"].read())
            return loaded if isinstance(loaded, dict) else None

        return run

    return [
        AuditItem(
            target=target,
            name=f"s3://{bucket}/{key}",
            location=("s3", bucket, key),
            fetch=fetch(key, size),
            sidecar=sidecar(key),
            size=size,
        )
        for key, size in sorted(keys)
    ]


def list_items(targets: Sequence[str], policy: Policy, s3_client: Any = None) -> list[AuditItem]:
    """Every object under the targets (S3 prefixes, folders recursively, files); sidecars are evidence, not items."""
    from policies.publish import TargetSyntaxError, parse_target
    from tasks.storage.publish import make_s3_client

    items: list[AuditItem] = []
    for target in targets:
        if target.startswith("s3:"):
            try:
                location = parse_target(target)
            except TargetSyntaxError as exc:
                raise AuditTargetError(str(exc).replace("publish target", "audit target")) from None
            items.extend(
                _s3_items(target, location.bucket, location.prefix, s3_client or make_s3_client(policy.publish))
            )
            continue
        path = Path(target).expanduser()
        if path.is_dir():
            items.extend(_folder_items(target, path))
        elif path.is_file():
            items.append(_file_item(target, path))
        else:
            why = f" ({why_not_a_file(path)})" if os.path.lexists(path) else ""
            raise AuditTargetError(f"audit target {target!r} is not a file, a folder or an s3://bucket/prefix URI{why}")
    return items


# --- the audit's context -------------------------------------------------------------------------------------------


@dataclass
class AuditContext:
    """What every object's audit needs: the policy, trust anchors and the indexed ledger."""

    policy: Policy
    anchors: list[str]
    index: LedgerIndex
    thumbnails: bool = False
    secrets: tuple[bytes, ...] = ()

    def inspection(
        self,
        location: tuple[str, ...] = (),
        metadata: dict[str, str] | None = None,
        sidecar: dict[str, Any] | None = None,
    ) -> InspectionContext:
        """The engine's context for one object."""
        return InspectionContext(
            policy=self.policy,
            anchors=self.anchors,
            index=self.index,
            secrets=self.secrets,
            location=location,
            metadata=metadata,
            sidecar=sidecar,
        )


def make_context(policy: Policy, ledger: Ledger | None, thumbnails: bool = False) -> AuditContext:
    """Trust anchors from the policy and an index of the ledger, built once."""
    install_bomb_guard()
    return AuditContext(
        policy, trust_anchors_for(policy), LedgerIndex.build(ledger), thumbnails, watermark_secrets_for(policy)
    )


# --- one object -----------------------------------------------------------------------------------------------------


@dataclass
class AuditResult:
    """One object's verdict, the reasons for it and the evidence behind it."""

    target: str
    object: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    candidate_id: str | None = None
    expected: bool = False  # the ledger says this object was finalized or published
    audited_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    thumbnail: str | None = None  # small JPEG data URI, for the HTML report only

    @property
    def failed(self) -> bool:
        """An object the ledger says was published/finalized that is neither verified nor recovered."""
        return self.expected and self.verdict not in OK_VERDICTS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (one JSON line); the thumbnail is left out."""
        return {
            "audited_at": self.audited_at.isoformat(),
            "target": self.target,
            "object": self.object,
            "verdict": self.verdict,
            "expected": self.expected,
            "failed": self.failed,
            "run_id": self.run_id,
            "candidate_id": self.candidate_id,
            "reasons": list(self.reasons),
            "evidence": self.evidence,
        }


def _thumbnail(image: Image.Image) -> str:
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def audit_object(item: AuditItem, ctx: AuditContext) -> AuditResult:
    """Fetch and audit one object; every failure becomes its verdict (never raises for a bad object)."""
    result = AuditResult(target=item.target, object=item.name, verdict="unreadable")
    try:
        data, metadata = item.fetch()
    except Unreadable as exc:
        result.reasons.append(str(exc))
        return _expect_by_location(result, item, ctx)
    except Exception as exc:  # noqa: BLE001 - access errors (S3, file system) are this object's verdict
        result.reasons.append(f"cannot fetch the object: {exc.__class__.__name__}: {exc}")
        return _expect_by_location(result, item, ctx)
    sidecar: dict[str, Any] | None = None
    if item.sidecar is not None:
        try:
            sidecar = item.sidecar()
        except Exception as exc:  # noqa: BLE001 - a broken sidecar is evidence, not a crash
            result.evidence["sidecar_error"] = f"{exc.__class__.__name__}: {exc}"
    try:
        return audit_bytes(data, ctx, result, location=item.location, metadata=metadata, sidecar=sidecar)
    except Exception as exc:  # noqa: BLE001 - the audit goes on whatever one object does
        result.verdict = "unreadable"
        result.reasons.append(f"the audit of this object failed: {exc.__class__.__name__}: {exc}")
        return result


def _expect_by_location(result: AuditResult, item: AuditItem, ctx: AuditContext) -> AuditResult:
    found = ctx.index.get(ctx.index.by_location.get(item.location))
    if found is not None:
        result.expected = found[1].state in EXPECTED_STATES
        result.run_id, result.candidate_id = found[0].run_id, found[0].candidate_id
        result.evidence["location_asset"] = ledger_facts(found)
    return result


def audit_bytes(
    data: bytes,
    ctx: AuditContext,
    result: AuditResult,
    *,
    location: tuple[str, ...] = (),
    metadata: dict[str, str] | None = None,
    sidecar: dict[str, Any] | None = None,
) -> AuditResult:
    """Inspect one object's bytes with the engine and turn the evidence into its verdict."""
    found = inspect_bytes(data, ctx.inspection(location, metadata, sidecar))
    return audit_view(found, ctx, result, metadata=metadata, sidecar=sidecar)


def audit_view(
    found: Evidence,
    ctx: AuditContext,
    result: AuditResult,
    *,
    metadata: dict[str, str] | None = None,
    sidecar: dict[str, Any] | None = None,
) -> AuditResult:
    """The audit's verdict, reasons and evidence for what the engine found."""
    evidence = result.evidence
    index = ctx.index
    evidence.update({"sha256": found.sha256, "bytes": found.size})
    if metadata:
        evidence["s3_metadata"] = metadata
    if sidecar is not None:
        evidence["sidecar"] = sidecar.get("provenance")
    expected_key, linked_key = found.expected_key, found.linked_key
    if expected_key is not None:
        evidence["location_asset"] = ledger_facts(index.by_key[expected_key])

    def finish(verdict: str, *reasons: str) -> AuditResult:
        result.verdict = verdict
        result.reasons.extend(reasons)
        linked = index.get(linked_key) or index.get(expected_key)
        if linked is not None:
            result.run_id, result.candidate_id = linked[0].run_id, linked[0].candidate_id
        states = [index.by_key[k][1].state for k in (expected_key, linked_key) if k is not None]
        result.expected = any(state in EXPECTED_STATES for state in states)
        return result

    evidence["mime"] = found.mime
    if found.unreadable is not None:
        linked_key = None  # an undecodable object is linked only through where it lies or its sha256
        return finish("unreadable", found.unreadable)
    if found.image is not None:
        evidence["dimensions"] = {"width": found.image.size[0], "height": found.image.size[1]}
        if ctx.thumbnails:
            result.thumbnail = _thumbnail(found.image)
    cred = found.credential
    if cred is None and found.credential_error is not None:
        evidence["credential_error"] = found.credential_error
    evidence["credential"] = cred
    if found.watermark is not None:
        evidence["watermark"] = dict(found.watermark)
    if found.decoded_key is not None and found.watermark_key is None:
        evidence["watermark"]["ledger"] = f"key {found.decoded_key} resolves to no record in this ledger"
    if found.watermark_key is not None:
        evidence["ledger"] = ledger_facts(index.by_key[found.watermark_key])
    if found.likeness_facts() is not None:
        evidence["likeness"] = found.likeness_facts()
    disagreements = list(found.disagreements)
    cred_key, wm_key = found.credential_key, found.watermark_key

    if cred is not None and cred["state"] == "Invalid":
        if disagreements and cred_key is not None and wm_key is not None and cred_key != wm_key:
            return finish("mismatch", *disagreements)
        codes = ", ".join(cred.get("status_codes") or []) or "no codes"
        return finish("tampered", f"the Content Credential is Invalid ({codes})", *disagreements)
    if cred is not None and cred.get("ours"):
        if cred["state"] != "Trusted":
            return finish(
                "untrusted",
                f"the credential is {cred['trust']}: its signer {cred.get('signer')!r} is not among the trust anchors",
                *disagreements,
            )
        if cred.get("soft_binding_payload") and found.decoded_key is None:
            disagreements.append("the credential binds a watermark but none decodes from the pixels")
        if found.sha256_differs:
            disagreements.append(found.sha256_differs)
        if disagreements:
            return finish("mismatch", *disagreements)
        if index.get(linked_key) is None:
            return finish("verified", f"AssetMint credential, {cred['trust']}; no record of it in this ledger")
        return finish("verified", f"credential ({cred['trust']}), watermark, ledger record and sha256 agree")
    # No credential of ours (none, or a valid foreign one).
    if wm_key is not None:
        asset = index.by_key[wm_key][0]
        if found.mark_mismatch is not None:
            return finish(
                "mark_mismatch", mark_mismatch_reason(asset.candidate_id, found.mark_mismatch), *disagreements
            )
        if cred is not None and cred["state"] != "Trusted":
            return finish("untrusted", "a foreign, untrusted credential on an image marked as ours", *disagreements)
        if disagreements:
            return finish("mismatch", *disagreements)
        evidence["recovered"] = {
            "asset_key": asset.asset_key,
            "run_id": asset.run_id,
            "candidate_id": asset.candidate_id,
            "manifest_label": asset.manifest_label,
        }
        how = "stripped" if cred is None else "replaced by a foreign credential"
        identified = f"Content Credential {how}; the watermark identifies asset {asset.candidate_id}"
        if found.likeness is None:
            return finish("recovered", identified, found.likeness_note or "the pixels could not be confirmed")
        return finish(
            "recovered", identified, f"the pixels match its fingerprint (likeness {found.likeness.score:.2f})"
        )
    unchecked = [note] if (note := (found.watermark or {}).get("note")) else []  # no watermark secret here
    if cred is not None:
        return finish(
            "not_ours", f"a {cred['state']} credential that is not AssetMint's and no AssetMint watermark", *unchecked
        )
    return finish("not_ours", "no Content Credential and no AssetMint watermark", *unchecked)


# --- a whole audit -------------------------------------------------------------------------------------------------


@dataclass
class AuditSummary:
    """All results of one audit run."""

    targets: list[str]
    started_at: datetime
    finished_at: datetime | None = None
    results: list[AuditResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Objects per verdict, every verdict listed."""
        counted = Counter(r.verdict for r in self.results)
        return {verdict: counted.get(verdict, 0) for verdict in VERDICTS}

    @property
    def failures(self) -> list[AuditResult]:
        """Objects the ledger says were published/finalized that are neither verified nor recovered."""
        return [r for r in self.results if r.failed]

    @property
    def development_signed(self) -> list[AuditResult]:
        """Objects whose credential was signed with AssetMint's development keys (not trusted for production)."""
        return [r for r in self.results if ((r.evidence.get("credential") or {}).get("development_signer"))]

    @property
    def exit_code(self) -> int:
        """1 when any published/finalized object failed its audit, else 0."""
        return 1 if self.failures else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-object results)."""
        return {
            "targets": self.targets,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "objects": len(self.results),
            "counts": self.counts,
            "failures": [r.object for r in self.failures],
            "development_signed": len(self.development_signed),
        }


def audit_items(
    items: Sequence[AuditItem], ctx: AuditContext, workers: int = 2
) -> Iterator[tuple[AuditItem, AuditResult]]:
    """Audit items with up to `workers` in flight, yielding results in order as they complete."""
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield item, audit_object(item, ctx)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="audit") as pool:
        yield from zip(items, pool.map(lambda item: audit_object(item, ctx), items), strict=True)


def _audit_row(result: AuditResult) -> Any:
    from tasks.storage.ledger import AuditRow

    return AuditRow(
        audited_at=result.audited_at,
        target=result.target,
        object=result.object,
        verdict=result.verdict,
        evidence={"reasons": result.reasons, "expected": result.expected, **result.evidence},
        run_id=result.run_id,
        candidate_id=result.candidate_id,
    )


def run_audit(
    targets: Sequence[str],
    policy: Policy,
    ledger: Ledger | None,
    *,
    workers: int = 2,
    thumbnails: bool = False,
    on_result: Callable[[AuditResult], None] | None = None,
    record: bool = True,
    s3_client: Any = None,
) -> AuditSummary:
    """Audit every object under `targets`, report progress, record every result in the ledger, return them all."""
    from tasks.core import progress

    summary = AuditSummary(targets=list(targets), started_at=datetime.now(UTC))
    ctx = make_context(policy, ledger, thumbnails)
    items = list_items(targets, policy, s3_client)
    progress.report("audit", 0, len(items))
    pending: list[AuditResult] = []
    for done, (_, result) in enumerate(audit_items(items, ctx, workers), start=1):
        summary.results.append(result)
        if on_result is not None:
            on_result(result)
        pending.append(result)
        if record and ledger is not None and len(pending) >= 100:
            ledger.record_audits([_audit_row(r) for r in pending])
            pending.clear()
        progress.report("audit", done, len(items))
    if record and ledger is not None and pending:
        ledger.record_audits([_audit_row(r) for r in pending])
    summary.finished_at = datetime.now(UTC)
    return summary


# --- manifest store bytes (for the soft-binding resolution API) ----------------------------------------------------


def manifest_store_bytes(data: bytes) -> bytes | None:
    """The embedded C2PA manifest store (JUMBF) of PNG, JPEG or WebP bytes, exactly as stored; None when absent.

    c2pa-python 0.38 has no call that returns an asset's manifest store bytes (Reader gives JSON and resources;
    Builder.sign returns them only while signing), so the JUMBF box is taken from where C2PA embeds it: the PNG
    ``caBX`` chunk, the WebP ``C2PA`` chunk, or the JPEG APP11 segments (reassembled per the JUMBF-in-JPEG rules).
    """
    mime = sniff_mime(data)
    if mime == "image/png":
        return _png_store(data)
    if mime == "image/jpeg":
        return _jpeg_store(data)
    if mime == "image/webp":
        return _webp_store(data)
    return None


def _png_store(data: bytes) -> bytes | None:
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"caBX":
            return data[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            break
        pos += 12 + length
    return None


def _webp_store(data: bytes) -> bytes | None:
    pos = 12
    while pos + 8 <= len(data):
        kind, length = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if kind == b"C2PA":
            return data[pos + 8 : pos + 8 + length]
        pos += 8 + length + (length & 1)
    return None


def _jpeg_store(data: bytes) -> bytes | None:
    pos = 2
    boxes: dict[int, list[tuple[int, bytes]]] = {}
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no more metadata segments
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xEB and segment[:2] == b"JP" and len(segment) >= 16:
            instance, sequence = struct.unpack(">HI", segment[2:8])
            boxes.setdefault(instance, []).append((sequence, segment[8:]))
        pos += 2 + length
    for parts in boxes.values():
        parts.sort()
        first = parts[0][1]
        if first[8:16] != JUMBF_C2PA_LABEL and JUMBF_C2PA_LABEL not in first[:64]:
            continue
        header = 16 if struct.unpack(">I", first[:4])[0] == 1 else 8  # continuation segments repeat the box header
        return first + b"".join(part[header:] for _, part in parts[1:])
    return None
