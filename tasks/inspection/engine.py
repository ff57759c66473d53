"""The one inspection engine: what an image's bytes, credential, watermark and the ledger say about it.

`inspect_bytes` gathers the evidence; `assetmint verify`, the audit and the soft-binding API's ``/matches/byContent``
are views that turn the same `Evidence` into their own report, verdict or match list.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import AssetMintError
from tasks.core.media import SNIFFABLE, sniff_mime

if TYPE_CHECKING:
    from PIL import Image

    from policies.model import Policy
    from tasks.inspection.likeness import Likeness
    from tasks.provenance.credentials import ValidationReport
    from tasks.storage.ledger import AssetRow, CandidateRow, Ledger

EXPECTED_STATES = frozenset({"finalized", "published"})
MAX_PIXELS = 64_000_000  # decompression-bomb guard: larger images are unreadable, never decoded
MAX_RESCALE_SIZES = 12
ASPECT_TOLERANCE = 0.02
JUMBF_C2PA_LABEL = b"jumdc2pa"


class Unreadable(Exception):
    """These bytes cannot be inspected (fetched, parsed or decoded); the message says why."""


class ImageTooLarge(Unreadable):
    """An image whose header claims more than MAX_PIXELS pixels (a decompression bomb): it is never decoded."""


# --- the ledger, indexed once ---------------------------------------------------------------------------------------


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
                    sizes[delivered_size(asset, candidate)] += 1
        index.sizes = [size for size, _ in sizes.most_common()]
        return index

    def get(self, key: int | None) -> tuple[AssetRow, CandidateRow] | None:
        """The asset and candidate of a watermark key, or None."""
        return self.by_key.get(key) if key is not None else None


def delivered_size(asset: AssetRow, candidate: CandidateRow) -> tuple[int, int]:
    """The size of an asset's finalized pixels: as finalize recorded it, else (never recorded) its candidate's size."""
    if asset.final_width and asset.final_height:
        return asset.final_width, asset.final_height
    return candidate.width, candidate.height


# --- what an inspection is given ------------------------------------------------------------------------------------


@dataclass
class InspectionContext:
    """What the engine may use besides the bytes: policy, trust anchors, ledger index, and per-object evidence."""

    policy: Policy
    anchors: list[str] = field(default_factory=list)
    index: LedgerIndex = field(default_factory=LedgerIndex)
    read_credential: bool = True  # False: watermark only (the soft-binding API)
    requested_method: str | None = None  # a decoder the caller names (the soft-binding API's alg), never a credential
    location: tuple[str, ...] = ()  # ("file", absolute path) or ("s3", bucket, key): matched against the ledger
    metadata: dict[str, str] | None = None  # S3 object metadata
    sidecar: dict[str, Any] | None = None  # the .provenance.json written beside a published object
    secrets: tuple[bytes, ...] | None = None  # watermark secrets (current, then retired); None: load from the policy

    def mark_secrets(self) -> tuple[bytes, ...]:
        """The watermark secrets keyed marks are checked with: the policy's, loaded on first use, never created."""
        if self.secrets is None:
            self.secrets = watermark_secrets_for(self.policy)
        return self.secrets


def watermark_secrets_for(policy: Policy) -> tuple[bytes, ...]:
    """The policy's watermark secrets, current first; none when the development secret was never created here."""
    from tasks.provenance.mark_secrets import dev_secret_path, load_mark_secrets

    if policy.signing.uses_development_watermark_secret and not dev_secret_path().exists():
        return ()  # nothing was marked on this machine with a development secret
    return tuple(secret.secret for secret in load_mark_secrets(policy.signing, create=False).all)


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


def make_inspection_context(policy: Policy, ledger: Ledger | None) -> InspectionContext:
    """Trust anchors from the policy and an index of the ledger, built once; installs the bomb guard."""
    install_bomb_guard()
    return InspectionContext(
        policy=policy,
        anchors=trust_anchors_for(policy),
        index=LedgerIndex.build(ledger),
        secrets=watermark_secrets_for(policy),
    )


# --- what an inspection finds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderChoice:
    """The watermark decoders to try, in order, and why the first one leads."""

    methods: tuple[str, ...]
    reason: str

    @property
    def method(self) -> str:
        """The leading decoder."""
        return self.methods[0]


@dataclass
class Evidence:
    """Everything one inspection learned; views turn it into a verify report, an audit verdict or API matches."""

    sha256: str
    size: int
    mime: str | None = None
    unreadable: str | None = None  # why the bytes are not an image that can be decoded
    image: Image.Image | None = None
    report: ValidationReport | None = None  # the full credential reading
    credential: dict[str, Any] | None = None  # the facts of a credential that is present (state, signer, binding...)
    credential_error: str | None = None  # why the credential could not be read
    decoder: DecoderChoice | None = None
    watermark: dict[str, Any] | None = None  # the last decode attempt: method, key, payload, attempt...
    decoded_key: int | None = None
    expected_key: int | None = None  # the asset the ledger put at this location (or whose sha256 these bytes have)
    credential_key: int | None = None  # the asset the credential resolves to
    watermark_key: int | None = None  # the asset the watermark resolves to
    disagreements: list[str] = field(default_factory=list)
    sha256_differs: str | None = None  # the linked asset's finalized sha256 differs from these bytes
    likeness: Likeness | None = None  # the pixels against the fingerprint of the asset the watermark resolves to
    likeness_note: str | None = None  # why the pixels could not be compared with that asset's

    @property
    def linked_key(self) -> int | None:
        """The asset these bytes are: the watermark's, else the credential's."""
        return self.watermark_key if self.watermark_key is not None else self.credential_key

    @property
    def mark_mismatch(self) -> Likeness | None:
        """The pixel comparison when it shows that the pixels are not the watermark's asset's, else None."""
        return self.likeness if self.likeness is not None and not self.likeness.matched else None

    def likeness_facts(self) -> dict[str, Any] | None:
        """The pixel comparison as JSON-ready facts (matched, score...; or matched None and why), None without one."""
        if self.likeness is not None:
            return self.likeness.to_dict()
        return {"matched": None, "note": self.likeness_note} if self.likeness_note else None

    @property
    def watermark_payload(self) -> str | None:
        """The decoded watermark payload as lowercase hex, or None."""
        return (self.watermark or {}).get("payload")


def install_bomb_guard() -> None:
    """Cap PIL's MAX_IMAGE_PIXELS at MAX_PIXELS and turn DecompressionBombWarning into an error (process-wide)."""
    import warnings

    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _bomb(exc: Exception) -> ImageTooLarge:
    """Pillow's bomb refusal in our terms (its text names its own limit, twice MAX_IMAGE_PIXELS, not ours)."""
    claimed = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{claimed.group(1)} pixels" if claimed else "too many pixels"
    return ImageTooLarge(f"decompression bomb: the image claims {pixels}, over the limit of {MAX_PIXELS} pixels")


def open_header(data: bytes) -> Image.Image:
    """Open image bytes reading only the header: ImageTooLarge over MAX_PIXELS, Unreadable when no image opens."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for corrupt data (OSError, SyntaxError, ...)
        raise Unreadable(f"the image cannot be decoded: {exc.__class__.__name__}: {exc}") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f"decompression bomb: {width}x{height} px is over the limit of {MAX_PIXELS} pixels")
    return image


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes fully, refusing bombs (over MAX_PIXELS) and truncated or corrupt data with Unreadable."""
    from PIL import Image

    image = open_header(data)
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc) from None
    except Exception as exc:  # noqa: BLE001 - as in open_header
        raise Unreadable(f"the image cannot be decoded: {exc.__class__.__name__}: {exc}") from None
    return image


def size_of(value: Any) -> tuple[int, int] | None:
    """A {width, height} mapping of ints as a (width, height) tuple, else None."""
    if isinstance(value, dict) and isinstance(value.get("width"), int) and isinstance(value.get("height"), int):
        return int(value["width"]), int(value["height"])
    return None


def rescale_sizes(
    image_size: tuple[int, int], ctx: InspectionContext, hints: Sequence[tuple[int, int] | None]
) -> list[tuple[int, int]]:
    """Sizes to rescale to before decoding: hints first, then the policy's, then the ledger's finalized sizes; same
    aspect only."""
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


def choose_decoder(report: Any, policy: Policy, requested: str | None = None) -> DecoderChoice:
    """The decoders to try: a caller's request alone; else an accepted credential's algorithm, then the policy's.

    Anyone can attach a credential naming another algorithm; only one the policy accepts may lead, and the policy's
    method and the other fast methods are always tried after it, so a credential can never hide our mark.
    """
    from tasks.provenance.credentials import accepted_states
    from tasks.provenance.watermark import WatermarkMethod, method_of_alg

    if requested:
        return DecoderChoice((requested,), f"{requested} requested by the caller")
    policy_method = policy.watermark.method.value
    methods = [policy_method]
    reason = f"{policy_method} from the policy"
    named = method_of_alg((getattr(report, "soft_binding", None) or {}).get("alg", ""))
    if named is not None:
        state = getattr(report, "state", None)
        if state in accepted_states(policy.finalize.require_trusted):
            if named != policy_method:
                methods.insert(0, named)
            reason = f"{named} named by the {state} credential's soft binding"
        else:
            reason += f" (the {state} credential naming {named} is not accepted to choose)"
    methods += [m.value for m in WatermarkMethod if m.value not in methods and m.value != WatermarkMethod.RIVAGAN]
    return DecoderChoice(tuple(methods), reason)


# --- facts -----------------------------------------------------------------------------------------------------------


def credential_facts(report: ValidationReport) -> dict[str, Any]:
    """The facts of a credential the audit reports and the cross-checks use."""
    from tasks.provenance.watermark import method_of_alg

    soft = report.soft_binding or {}
    blocks = soft.get("blocks") or []
    payload = blocks[0].get("value") if blocks and isinstance(blocks[0], dict) else None
    generation = report.generation_assertion or {}
    ours = bool(
        (report.claim_generator or "").startswith("AssetMint")
        or method_of_alg(soft.get("alg")) is not None
        or report.generation_assertion is not None
    )
    from tasks.provenance.trust import trust_of

    trust = trust_of(report.state, report.signer, report.signer_issuer)
    return {
        "state": report.state,
        "trust": trust.label,
        "development_signer": trust.development,
        "status_codes": list(report.status_codes),
        "manifest_label": report.active_manifest_label,
        "signer": report.signer,
        "claim_generator": report.claim_generator,
        "soft_binding_alg": soft.get("alg"),
        "soft_binding_payload": str(payload).lower() if payload else None,
        "asset_id": generation.get("asset_id"),
        "run_id": generation.get("run_id"),
        "size": size_of(generation.get("size")),
        "final_size": size_of(generation.get("final_size")),
        "ours": ours,
    }


def ledger_facts(found: tuple[AssetRow, CandidateRow]) -> dict[str, Any]:
    """The facts of a ledger record the evidence shows."""
    asset, candidate = found
    return {
        "asset_key": asset.asset_key,
        "run_id": asset.run_id,
        "candidate_id": asset.candidate_id,
        "state": candidate.state,
        "size": {"width": candidate.width, "height": candidate.height},
        "final_size": asset.final_size,
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


# --- the engine ------------------------------------------------------------------------------------------------------


def inspect_bytes(data: bytes, context: InspectionContext) -> Evidence:
    """Sniff, read the credential, decode the watermark, resolve both in the ledger and cross-check everything."""
    evidence = Evidence(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    index = context.index
    location_key = index.by_location.get(context.location) if context.location else None
    evidence.expected_key = location_key if location_key is not None else index.by_sha256.get(evidence.sha256)
    evidence.mime = sniff_mime(data)
    if evidence.mime is None:
        evidence.unreadable = f"not a {SNIFFABLE} image"
        return evidence
    # The credential is read even when the pixels do not decode: verify still shows it for a corrupt file.
    if context.read_credential:
        _read_credential(data, evidence.mime, evidence, context)
    try:
        evidence.image = open_image(data)
    except Unreadable as exc:
        evidence.unreadable = str(exc)
        return evidence
    _decode_watermark(evidence.image, evidence, context)
    _compare_pixels(evidence.image, evidence, context)
    _cross_check(evidence, context)
    return evidence


def _read_credential(data: bytes, mime: str, evidence: Evidence, context: InspectionContext) -> None:
    from tasks.core.errors import ProvenanceError
    from tasks.provenance import credentials as provenance

    try:
        evidence.report = provenance.read_and_validate(data, mime, context.anchors)
    except ProvenanceError as exc:
        evidence.credential_error = str(exc)
        if JUMBF_C2PA_LABEL in data:  # a manifest store is there but the reader cannot make sense of it
            evidence.credential = {
                "state": "Invalid",
                "trust": "invalid (tampered)",
                "development_signer": False,
                "status_codes": ["manifest.unreadable"],
                "error": str(exc),
                "ours": False,
            }
        return
    if evidence.report.state != "NoManifest":
        evidence.credential = credential_facts(evidence.report)
        evidence.credential_key = _credential_asset(evidence.credential, context.index)


def _decode_watermark(image: Image.Image, evidence: Evidence, context: InspectionContext) -> None:
    from tasks.core.errors import WatermarkError
    from tasks.provenance import watermark

    index = context.index
    choice = choose_decoder(evidence.report, context.policy, context.requested_method)
    evidence.decoder = choice
    # The finalized size first: a candidate's size differs from it wherever finalize upscaled.
    cred = evidence.credential or {}
    hints: list[tuple[int, int] | None] = [cred.get("final_size") or cred.get("size")]
    if context.sidecar is not None:
        final = size_of((context.sidecar.get("provenance") or {}).get("final_size"))
        hints.append(final or size_of((context.sidecar.get("generation") or {}).get("size")))
    for key in (evidence.expected_key, evidence.credential_key):
        if key is not None:
            hints.append(delivered_size(*index.by_key[key]))
    sizes = rescale_sizes(image.size, context, hints)
    rgb = image.convert("RGB")
    for position, method in enumerate(choice.methods):
        tried = list(choice.methods[: position + 1])
        try:
            decoded = watermark.decode_for_audit(rgb, method, sizes, context.mark_secrets())
        except (WatermarkError, ValueError, OSError) as exc:
            evidence.watermark = {"method": method, "key": None, "error": str(exc), "methods_tried": tried}
            continue
        evidence.decoded_key = decoded.key
        evidence.watermark = {
            "method": method,
            "key": decoded.key,
            "payload": decoded.payload,
            "attempt": decoded.attempt,
            "sizes_tried": [f"{w}x{h}" for w, h in sizes],
            "methods_tried": tried,
            "chosen": choice.reason,
        }
        if decoded.key is not None:
            break
    if evidence.decoded_key is None and "spreadTile" in choice.methods and not context.mark_secrets():
        note = "no watermark secret on this machine (signing.watermark_secret): spreadTile marks cannot be checked"
        evidence.watermark = {**(evidence.watermark or {}), "note": note}
    if evidence.decoded_key is not None and index.get(evidence.decoded_key) is not None:
        evidence.watermark_key = evidence.decoded_key


def _compare_pixels(image: Image.Image, evidence: Evidence, context: InspectionContext) -> None:
    """Compare the pixels with the fingerprint of the asset the watermark resolves to (a mark can be copied)."""
    from tasks.inspection.likeness import compare

    found = context.index.get(evidence.watermark_key)
    if found is None:
        return
    asset, candidate = found
    if asset.fingerprint is None:
        evidence.likeness_note = (
            f"the pixels could not be confirmed: asset {asset.candidate_id} was finalized before AssetMint "
            "recorded fingerprints of finalized pixels"
        )
        return
    evidence.likeness = compare(image, asset.fingerprint, delivered_size(asset, candidate))
    if evidence.likeness is None:
        evidence.likeness_note = (
            f"the pixels could not be confirmed: the image is too small or too featureless to compare with asset "
            f"{asset.candidate_id}'s fingerprint"
        )


def _cross_check(evidence: Evidence, context: InspectionContext) -> None:
    """Every disagreement between the pieces of evidence, whatever the credential's state."""
    index = context.index
    cred = evidence.credential or {}
    wm_payload = evidence.watermark_payload
    cred_key, wm_key, expected_key, linked_key = (
        evidence.credential_key,
        evidence.watermark_key,
        evidence.expected_key,
        evidence.linked_key,
    )
    found = index.get(linked_key)
    problems = evidence.disagreements
    if cred.get("soft_binding_payload") and wm_payload and cred["soft_binding_payload"] != wm_payload:
        problems.append(
            f"the credential's soft binding {cred['soft_binding_payload']} disagrees with the watermark {wm_payload} "
            "(a credential from another asset)"
        )
    if cred_key is not None and wm_key is not None and cred_key != wm_key:
        problems.append(
            f"the credential belongs to asset {index.by_key[cred_key][0].candidate_id} but the watermark resolves to "
            f"{index.by_key[wm_key][0].candidate_id}"
        )
    elif wm_key is not None and cred.get("asset_id") and cred["asset_id"] != index.by_key[wm_key][0].candidate_id:
        problems.append(
            f"the credential names asset {cred['asset_id']} but the watermark resolves to "
            f"{index.by_key[wm_key][0].candidate_id}"
        )
    if expected_key is not None and linked_key is not None and expected_key != linked_key:
        problems.append(
            f"the ledger published asset {index.by_key[expected_key][0].candidate_id} here, but this object is "
            f"asset {index.by_key[linked_key][0].candidate_id}"
        )
    problems.extend(_metadata_disagreements(context, found, wm_payload, evidence.sha256))
    if found is not None and found[0].final_sha256 and found[0].final_sha256 != evidence.sha256:
        evidence.sha256_differs = "the bytes differ from the finalized asset's recorded sha256"


def _metadata_disagreements(
    context: InspectionContext,
    found: tuple[AssetRow, CandidateRow] | None,
    wm_payload: str | None,
    sha256: str,
) -> list[str]:
    problems: list[str] = []
    claims: list[tuple[str, str, str | None]] = []
    metadata, sidecar = context.metadata, context.sidecar
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
