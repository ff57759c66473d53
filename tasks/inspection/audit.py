"""Auditing published images: Content Credential, watermark, ledger and store metadata, one verdict per object.

A target is ``s3://bucket/prefix``, a folder (recursive) or a file. Each image gets exactly one verdict with the
evidence behind it:

- ``verified``: a trusted AssetMint credential whose soft binding, decoded watermark, ledger record, sha256 and
  (for S3) object metadata all agree.
- ``recovered``: no credential (stripped or re-encoded), but the watermark resolves to a ledger record: the
  evidence links the record and its original manifest label.
- ``tampered``: a credential is present but does not validate (Invalid).
- ``mismatch``: credential, watermark, location or metadata point to different assets (a transplanted credential).
- ``untrusted``: a valid AssetMint credential (or a marked image) signed by a signer outside the trust anchors.
- ``not_ours``: neither a resolving watermark nor an AssetMint credential.
- ``unreadable``: not an image, truncated or corrupt, a decompression bomb, or the object could not be fetched.

One bad object never stops an audit: every failure becomes that object's verdict.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
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

if TYPE_CHECKING:
    from PIL import Image

    from policies.model import Policy
    from tasks.storage.ledger import AssetRow, CandidateRow, Ledger

VERDICTS = ("verified", "recovered", "tampered", "mismatch", "untrusted", "not_ours", "unreadable")
OK_VERDICTS = frozenset({"verified", "recovered"})
EXPECTED_STATES = frozenset({"finalized", "published"})
MAX_PIXELS = 64_000_000  # decompression-bomb guard: larger images are unreadable, never decoded
MAX_OBJECT_BYTES = 256 * 1024 * 1024
MAX_RESCALE_SIZES = 12
ASPECT_TOLERANCE = 0.02
THUMBNAIL_SIDE = 96
SIDECAR_SUFFIX = ".provenance.json"
JUMBF_C2PA_LABEL = b"jumdc2pa"


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
    size = path.stat().st_size
    if size > MAX_OBJECT_BYTES:
        raise _Unreadable(f"the file is {size} bytes, over the audit limit of {MAX_OBJECT_BYTES}")
    return path.read_bytes(), {}


def _read_sidecar_file(path: Path) -> dict[str, Any] | None:
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return None
    loaded = json.loads(sidecar.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else None


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
                raise _Unreadable(f"the object is {size} bytes, over the audit limit of {MAX_OBJECT_BYTES}")
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
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith(".") for part in child.relative_to(path).parts)
                if child.is_file() and not hidden and not child.name.endswith(SIDECAR_SUFFIX):
                    items.append(_file_item(target, child))
        elif path.is_file():
            items.append(_file_item(target, path))
        else:
            raise AuditTargetError(f"audit target {target!r} is not a file, a folder or an s3://bucket/prefix URI")
    return items


# --- the ledger, indexed once per audit ----------------------------------------------------------------------------


@dataclass
class LedgerIndex:
    """Every asset record of a ledger, indexed by watermark key, payload, manifest, location and sha256."""

    by_key: dict[int, tuple[AssetRow, CandidateRow]] = field(default_factory=dict)
    by_payload: dict[str, int] = field(default_factory=dict)
    by_label: dict[str, int] = field(default_factory=dict)
    by_candidate: dict[str, list[int]] = field(default_factory=dict)
    by_location: dict[tuple[str, ...], int] = field(default_factory=dict)
    by_sha256: dict[str, int] = field(default_factory=dict)
    sizes: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def build(cls, ledger: Ledger | None) -> LedgerIndex:
        """Read every asset (with its candidate) once; an empty index without a ledger."""
        index = cls()
        if ledger is None:
            return index
        sizes: Counter[tuple[int, int]] = Counter()
        for run in ledger.runs():
            candidates = {row.candidate_id: row for row in ledger.candidates(run.run_id)}
            for asset in ledger.assets(run.run_id):
                candidate = candidates.get(asset.candidate_id)
                if candidate is None:
                    continue
                key = asset.asset_key
                index.by_key[key] = (asset, candidate)
                index.by_candidate.setdefault(asset.candidate_id, []).append(key)
                if asset.payload_hex:
                    index.by_payload[asset.payload_hex.lower()] = key
                if asset.manifest_label:
                    index.by_label[asset.manifest_label] = key
                if asset.final_sha256:
                    index.by_sha256[asset.final_sha256] = key
                if asset.final_path:
                    index.by_location[("file", str(Path(asset.final_path).resolve()))] = key
                receipt = asset.published or {}
                if receipt.get("key"):
                    if receipt.get("bucket"):
                        index.by_location[("s3", str(receipt["bucket"]), str(receipt["key"]))] = key
                    elif str(receipt.get("target", "")).startswith("file://"):
                        root = Path(str(receipt["target"])[len("file://") :])
                        index.by_location[("file", str(root.joinpath(*str(receipt["key"]).split("/")).resolve()))] = key
                if candidate.state in EXPECTED_STATES:
                    sizes[(candidate.width, candidate.height)] += 1
        index.sizes = [size for size, _ in sizes.most_common()]
        return index

    def get(self, key: int | None) -> tuple[AssetRow, CandidateRow] | None:
        """The asset and candidate of a watermark key, or None."""
        return self.by_key.get(key) if key is not None else None


@dataclass
class AuditContext:
    """What every object's audit needs: the policy, trust anchors and the indexed ledger."""

    policy: Policy
    anchors: list[str]
    index: LedgerIndex
    thumbnails: bool = False


def make_context(policy: Policy, ledger: Ledger | None, thumbnails: bool = False) -> AuditContext:
    """Trust anchors from the policy and an index of the ledger, built once."""
    from tasks.inspection.verify import trust_anchors_for

    install_bomb_guard()
    return AuditContext(policy, trust_anchors_for(policy), LedgerIndex.build(ledger), thumbnails)


# --- one object -----------------------------------------------------------------------------------------------------


class _Unreadable(Exception):
    """This object cannot be audited (fetched, parsed or decoded); the message says why."""


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


def install_bomb_guard() -> None:
    """Cap PIL's MAX_IMAGE_PIXELS at MAX_PIXELS and turn DecompressionBombWarning into an error (process-wide)."""
    import warnings

    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes fully, refusing bombs (over MAX_PIXELS) and truncated or corrupt data with _Unreadable."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise _Unreadable(f"decompression bomb: {width}x{height} px is over the audit limit of {MAX_PIXELS} pixels")
        image.load()
        return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _Unreadable(f"decompression bomb: {exc}") from None
    except _Unreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for corrupt data (OSError, SyntaxError, ...)
        raise _Unreadable(f"the image cannot be decoded: {exc.__class__.__name__}: {exc}") from None


def _thumbnail(image: Image.Image) -> str:
    small = image.convert("RGB")
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _size_of(value: Any) -> tuple[int, int] | None:
    if isinstance(value, dict) and isinstance(value.get("width"), int) and isinstance(value.get("height"), int):
        return int(value["width"]), int(value["height"])
    return None


def rescale_sizes(image_size: tuple[int, int], ctx: AuditContext, hints: Sequence[tuple[int, int] | None]) -> list:
    """Sizes to rescale to before decoding: hints first, then the policy's, then the ledger's; same aspect only."""
    from tasks.provenance.watermark import MIN_SIDE

    width, height = image_size
    aspect = width / height if height else 0.0
    ordered = [*hints, *(tuple(s) for s in ctx.policy.watermark.audit_rescale_sizes), *ctx.index.sizes]
    sizes: list[tuple[int, int]] = []
    for size in ordered:
        if size is None or size in sizes or size == (width, height) or min(size) < MIN_SIDE:
            continue
        if aspect and abs(size[0] / size[1] - aspect) / aspect > ASPECT_TOLERANCE:
            continue
        sizes.append((int(size[0]), int(size[1])))
    return sizes[:MAX_RESCALE_SIZES]


def _credential_facts(report: Any) -> dict[str, Any]:
    from tasks.stages.finalize import WATERMARK_ALG_PREFIX

    soft = report.soft_binding or {}
    blocks = soft.get("blocks") or []
    payload = blocks[0].get("value") if blocks and isinstance(blocks[0], dict) else None
    generation = report.generation_assertion or {}
    ours = bool(
        (report.claim_generator or "").startswith("AssetMint")
        or str(soft.get("alg", "")).startswith(WATERMARK_ALG_PREFIX)
        or report.generation_assertion is not None
    )
    return {
        "state": report.state,
        "status_codes": list(report.status_codes),
        "manifest_label": report.active_manifest_label,
        "signer": report.signer,
        "claim_generator": report.claim_generator,
        "soft_binding_alg": soft.get("alg"),
        "soft_binding_payload": str(payload).lower() if payload else None,
        "asset_id": generation.get("asset_id"),
        "run_id": generation.get("run_id"),
        "size": _size_of(generation.get("size")),
        "ours": ours,
    }


def _ledger_facts(found: tuple[AssetRow, CandidateRow]) -> dict[str, Any]:
    asset, candidate = found
    return {
        "asset_key": asset.asset_key,
        "run_id": asset.run_id,
        "candidate_id": asset.candidate_id,
        "state": candidate.state,
        "size": {"width": candidate.width, "height": candidate.height},
        "payload": asset.payload_hex,
        "final_sha256": asset.final_sha256,
        "manifest_label": asset.manifest_label,
        "published": asset.published,
    }


def _credential_asset(cred: dict[str, Any], index: LedgerIndex) -> int | None:
    if cred.get("soft_binding_payload") and cred["soft_binding_payload"] in index.by_payload:
        return index.by_payload[cred["soft_binding_payload"]]
    if cred.get("manifest_label") and cred["manifest_label"] in index.by_label:
        return index.by_label[cred["manifest_label"]]
    keys = index.by_candidate.get(str(cred.get("asset_id") or ""), [])
    matching = [k for k in keys if index.by_key[k][0].run_id == cred.get("run_id")] or keys
    return matching[0] if len(matching) == 1 else None


def audit_object(item: AuditItem, ctx: AuditContext) -> AuditResult:
    """Fetch and audit one object; every failure becomes its verdict (never raises for a bad object)."""
    result = AuditResult(target=item.target, object=item.name, verdict="unreadable")
    try:
        data, metadata = item.fetch()
    except _Unreadable as exc:
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
        result.evidence["location_asset"] = _ledger_facts(found)
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
    """Decide the verdict of one object's bytes and fill in its evidence."""
    from tasks.core.errors import ProvenanceError, WatermarkError
    from tasks.provenance import credentials as provenance
    from tasks.provenance import watermark

    evidence = result.evidence
    sha256 = hashlib.sha256(data).hexdigest()
    evidence.update({"sha256": sha256, "bytes": len(data)})
    if metadata:
        evidence["s3_metadata"] = metadata
    if sidecar is not None:
        evidence["sidecar"] = sidecar.get("provenance")
    index = ctx.index
    location_key = index.by_location.get(location) if location else None
    expected_key = location_key if location_key is not None else index.by_sha256.get(sha256)
    if expected_key is not None:
        evidence["location_asset"] = _ledger_facts(index.by_key[expected_key])

    def finish(verdict: str, *reasons: str) -> AuditResult:
        result.verdict = verdict
        result.reasons.extend(reasons)
        linked = index.get(linked_key) or index.get(expected_key)
        if linked is not None:
            result.run_id, result.candidate_id = linked[0].run_id, linked[0].candidate_id
        states = [index.by_key[k][1].state for k in (expected_key, linked_key) if k is not None]
        result.expected = any(state in EXPECTED_STATES for state in states)
        return result

    linked_key: int | None = None
    mime = sniff_mime(data)
    evidence["mime"] = mime
    if mime is None:
        return finish("unreadable", "not a PNG, JPEG or WebP image")
    try:
        image = open_image(data)
    except _Unreadable as exc:
        return finish("unreadable", str(exc))
    evidence["dimensions"] = {"width": image.size[0], "height": image.size[1]}
    if ctx.thumbnails:
        result.thumbnail = _thumbnail(image)

    cred: dict[str, Any] | None = None
    try:
        report = provenance.read_and_validate(data, mime, ctx.anchors)
        if report.state != "NoManifest":
            cred = _credential_facts(report)
    except ProvenanceError as exc:
        if JUMBF_C2PA_LABEL in data:  # a manifest store is there but the reader cannot make sense of it
            cred = {"state": "Invalid", "status_codes": ["manifest.unreadable"], "error": str(exc), "ours": False}
        else:
            evidence["credential_error"] = str(exc)
    evidence["credential"] = cred
    cred_key = _credential_asset(cred, index) if cred else None

    from tasks.stages.finalize import WATERMARK_ALG_PREFIX

    # Only a trusted credential may pick the decoder; anything else could steer it away from our mark.
    methods = [ctx.policy.watermark.method.value]
    alg = (cred or {}).get("soft_binding_alg") or ""
    if (cred or {}).get("state") == "Trusted" and alg.startswith(WATERMARK_ALG_PREFIX):
        methods.insert(0, alg[len(WATERMARK_ALG_PREFIX) :])
    methods += [m.value for m in watermark.WatermarkMethod if m.value not in methods and m.value != "rivaGan"]
    hints: list[tuple[int, int] | None] = [(cred or {}).get("size")]
    if sidecar is not None:
        hints.append(_size_of((sidecar.get("generation") or {}).get("size")))
    for key in (expected_key, cred_key):
        if key is not None:
            candidate = index.by_key[key][1]
            hints.append((candidate.width, candidate.height))
    sizes = rescale_sizes(image.size, ctx, hints)
    decoded_key: int | None = None
    rgb = image.convert("RGB")
    for method in methods:
        try:
            decoded = watermark.decode_for_audit(rgb, method, sizes)
        except (WatermarkError, ValueError, OSError) as exc:
            evidence["watermark"] = {"method": method, "key": None, "error": str(exc)}
            continue
        decoded_key = decoded.key
        evidence["watermark"] = {
            "method": method,
            "key": decoded.key,
            "payload": watermark.payload_hex(decoded.key, method) if decoded.key else None,
            "attempt": decoded.attempt,
            "sizes_tried": [f"{w}x{h}" for w, h in sizes],
            "methods_tried": methods[: methods.index(method) + 1],
        }
        if decoded_key is not None:
            break
    wm_found = index.get(decoded_key)
    if decoded_key is not None and wm_found is None:
        evidence["watermark"]["ledger"] = f"key {decoded_key} resolves to no record in this ledger"
    wm_key = decoded_key if wm_found is not None else None
    if wm_found is not None:
        evidence["ledger"] = _ledger_facts(wm_found)
    linked_key = wm_key if wm_key is not None else cred_key

    # Every disagreement between the pieces of evidence, whatever the credential's state.
    disagreements: list[str] = []
    wm_payload = (evidence.get("watermark") or {}).get("payload")
    if cred and cred.get("soft_binding_payload") and wm_payload and cred["soft_binding_payload"] != wm_payload:
        disagreements.append(
            f"the credential's soft binding {cred['soft_binding_payload']} disagrees with the watermark {wm_payload} "
            "(a credential from another asset)"
        )
    if cred_key is not None and wm_key is not None and cred_key != wm_key:
        disagreements.append(
            f"the credential belongs to asset {index.by_key[cred_key][0].candidate_id} but the watermark resolves to "
            f"{index.by_key[wm_key][0].candidate_id}"
        )
    if expected_key is not None and linked_key is not None and expected_key != linked_key:
        disagreements.append(
            f"the ledger published asset {index.by_key[expected_key][0].candidate_id} here, but this object is "
            f"asset {index.by_key[linked_key][0].candidate_id}"
        )
    disagreements.extend(_metadata_disagreements(metadata, sidecar, index.get(linked_key), wm_payload, sha256))

    if cred is not None and cred["state"] == "Invalid":
        if disagreements and cred_key is not None and wm_key is not None and cred_key != wm_key:
            return finish("mismatch", *disagreements)
        codes = ", ".join(cred.get("status_codes") or []) or "no codes"
        return finish("tampered", f"the Content Credential is Invalid ({codes})", *disagreements)
    if cred is not None and cred.get("ours"):
        if cred["state"] != "Trusted":
            return finish(
                "untrusted",
                f"the credential is {cred['state']} but its signer {cred.get('signer')!r} is not among the trust "
                "anchors",
                *disagreements,
            )
        if cred.get("soft_binding_payload") and decoded_key is None:
            disagreements.append("the credential binds a watermark but none decodes from the pixels")
        found = index.get(linked_key)
        if found is not None and found[0].final_sha256 and found[0].final_sha256 != sha256:
            disagreements.append("the bytes differ from the finalized asset's recorded sha256")
        if disagreements:
            return finish("mismatch", *disagreements)
        if found is None:
            return finish("verified", "trusted AssetMint credential; no record of it in this ledger")
        return finish("verified", "trusted credential, watermark, ledger record and sha256 agree")
    # No credential of ours (none, or a valid foreign one).
    if wm_key is not None:
        if cred is not None and cred["state"] != "Trusted":
            return finish("untrusted", "a foreign, untrusted credential on an image marked as ours", *disagreements)
        if disagreements:
            return finish("mismatch", *disagreements)
        asset = index.by_key[wm_key][0]
        evidence["recovered"] = {
            "asset_key": asset.asset_key,
            "run_id": asset.run_id,
            "candidate_id": asset.candidate_id,
            "manifest_label": asset.manifest_label,
        }
        how = "stripped" if cred is None else "replaced by a foreign credential"
        return finish("recovered", f"Content Credential {how}; the watermark identifies asset {asset.candidate_id}")
    if cred is not None:
        return finish("not_ours", f"a {cred['state']} credential that is not AssetMint's and no AssetMint watermark")
    return finish("not_ours", "no Content Credential and no AssetMint watermark")


def _metadata_disagreements(
    metadata: dict[str, str] | None,
    sidecar: dict[str, Any] | None,
    found: tuple[AssetRow, CandidateRow] | None,
    wm_payload: str | None,
    sha256: str,
) -> list[str]:
    problems: list[str] = []
    claims: list[tuple[str, str, str | None]] = []
    if metadata:
        claims += [
            ("object metadata sha256", "sha256", metadata.get("sha256")),
            ("object metadata asset-id", "asset", metadata.get("asset-id")),
            ("object metadata watermark-payload", "payload", metadata.get("watermark-payload")),
            ("object metadata c2pa-manifest", "label", metadata.get("c2pa-manifest")),
        ]
    provenance = (sidecar or {}).get("provenance") or {}
    if provenance:
        claims += [
            ("sidecar sha256", "sha256", provenance.get("sha256")),
            ("sidecar asset_id", "asset", (sidecar or {}).get("asset_id")),
            ("sidecar watermark_payload", "payload", provenance.get("watermark_payload")),
            ("sidecar c2pa_manifest", "label", provenance.get("c2pa_manifest")),
        ]
    asset = found[0] if found is not None else None
    for what, kind, claimed in claims:
        if not claimed:
            continue
        if kind == "sha256" and asset is not None and asset.final_sha256 == sha256 and claimed != sha256:
            problems.append(f"{what} {claimed} differs from the object's sha256 {sha256}")
        elif kind == "sha256" and asset is None and claimed != sha256:
            problems.append(f"{what} {claimed} differs from the object's sha256 {sha256}")
        elif kind == "asset" and asset is not None and claimed != asset.candidate_id:
            problems.append(f"{what} {claimed} but the object is asset {asset.candidate_id}")
        elif kind == "payload" and wm_payload and claimed.lower() != wm_payload:
            problems.append(f"{what} {claimed} but the watermark reads {wm_payload}")
        elif kind == "label" and asset is not None and asset.manifest_label and claimed != asset.manifest_label:
            problems.append(f"{what} {claimed} but the asset's manifest is {asset.manifest_label}")
    return problems


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
