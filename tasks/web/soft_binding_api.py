"""The C2PA Soft Binding Resolution API over the ledger: from a watermark (or an image) to its manifest store.

Routes (the C2PA specification's vocabulary): ``GET|POST /matches/byBinding`` (a soft binding's ``alg`` and
``value``: base64 of the payload bytes as the specification says, or the payload as hex, as it appears in our
``c2pa.soft-binding`` assertions), ``POST /matches/byContent`` (an image body: the inspection engine decodes its
watermark, rescaled to the ledger's sizes when needed; a mark whose asset's fingerprint the pixels do not match, a
copied or forged mark, is no match), ``GET /manifests/{manifestId}`` (the manifest store bytes,
``application/c2pa``) and ``GET /services/supportedAlgorithms``. Matches answer
``{"matches": [{"manifestId", "similarityScore"}]}``; manifest ids are the C2PA manifest labels the ledger
recorded at finalization.

Read-only (lookups only), no authentication (it serves what published assets already carry), separate from the
review server. FastAPI is imported at module level (route annotations are resolved against this module); import
this module only to serve. Inputs are bounded (`tasks.web.bounds`): ``maxResults`` from 1 to MAX_RESULTS, a binding
``value`` of at most MAX_VALUE_CHARS characters (414 in a URL, 400 in a body), ``alg`` and manifest ids of at most
MAX_NAME_CHARS, request bodies capped while read (413); only PNG, JPEG or WebP images are decoded (415), and one whose
header claims more than the audit's MAX_PIXELS is refused before decoding (413). Every refusal is JSON ``{"detail"}``.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from tasks.core.media import SNIFFABLE, sniff_mime
from tasks.inspection.audit import manifest_store_bytes
from tasks.inspection.engine import (
    ImageTooLarge,
    InspectionContext,
    LedgerIndex,
    Unreadable,
    inspect_bytes,
    install_bomb_guard,
    open_header,
    watermark_secrets_for,
)
from tasks.web.bounds import BodyLimit, check_text, quoted, validation_message

if TYPE_CHECKING:
    from policies.model import Policy
    from tasks.storage.ledger import AssetRow, Ledger

MAX_BODY_BYTES = 20 * 1024 * 1024  # an uploaded image (/matches/byContent)
MAX_QUERY_BODY_BYTES = 4 * 1024  # a JSON soft binding query {alg, value}
DEFAULT_RESULTS = 10  # the specification's default
MAX_RESULTS = 100  # the specification sets no maximum; one watermark resolves to one asset, so 100 is generous
# A binding value is base64 (12 characters) or hex (16) of a 64-bit payload at most; 64 leaves room for padding.
MAX_VALUE_CHARS = 64
MAX_NAME_CHARS = 256  # an alg name, a manifest id (urn:c2pa:<uuid>...)
INDEX_TTL_S = 5.0
MANIFEST_MEDIA_TYPE = "application/c2pa"


class _IndexCache:
    """The ledger index, rebuilt when older than INDEX_TTL_S (new assets appear without a restart)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()
        self._index: LedgerIndex | None = None
        self._built = 0.0

    def get(self, fresh: bool = False) -> LedgerIndex:
        """The current index; `fresh` forces a rebuild unless it is under a second old."""
        with self._lock:
            age = time.monotonic() - self._built
            if self._index is None or age > INDEX_TTL_S or (fresh and age > 1.0):
                self._index = LedgerIndex.build(self.ledger)
                self._built = time.monotonic()
            return self._index


def _payload_hex(value: str, method: str) -> str | None:
    """The payload as lowercase hex from a query value: base64 of the payload bytes, or hex; None when neither."""
    from tasks.provenance.watermark import payload_length

    size = payload_length(method) // 8
    text = value.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        if len(raw) == size:
            return raw.hex()
    except (binascii.Error, ValueError):
        pass
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw.hex() if len(raw) == size else None


def _method_of(alg: str | None, default: str) -> str | None:
    from tasks.provenance.watermark import method_of_alg

    return method_of_alg(alg) if alg else default


def _matches(assets: list[AssetRow], limit: int) -> dict[str, Any]:
    found = [a for a in assets if a.manifest_label][:limit]
    return {"matches": [{"manifestId": a.manifest_label, "similarityScore": 100} for a in found]}


def _store_from_asset(asset: AssetRow, policy: Policy) -> bytes | None:
    """The manifest store of an asset: from its finalized file, else its published copy (folder or S3)."""
    candidates: list[bytes] = []
    if asset.final_path and Path(asset.final_path).is_file():
        candidates.append(Path(asset.final_path).read_bytes())
    receipt = asset.published or {}
    if not candidates and receipt.get("key"):
        if receipt.get("bucket"):
            from tasks.storage.publish import make_s3_client

            try:
                body = make_s3_client(policy.publish).get_object(Bucket=receipt["bucket"], Key=receipt["key"])
                candidates.append(body["Body"].read())
            except Exception:  # noqa: BLE001 - an unreachable copy is just not a source
                pass
        elif str(receipt.get("target", "")).startswith("file://"):
            path = Path(str(receipt["target"])[len("file://") :]).joinpath(*str(receipt["key"]).split("/"))
            if path.is_file():
                candidates.append(path.read_bytes())
    for data in candidates:
        store = manifest_store_bytes(data)
        if store is not None:
            return store
    return None


def max_results(
    value: int = Query(DEFAULT_RESULTS, alias="maxResults", description=f"1 to {MAX_RESULTS}"),
) -> int:
    """The maxResults query parameter, from 1 to MAX_RESULTS; 400 naming the range otherwise."""
    if not 1 <= value <= MAX_RESULTS:
        raise HTTPException(400, f"maxResults must be from 1 to {MAX_RESULTS}, got {value}.")
    return value


def check_upload(data: bytes) -> None:
    """Refuse an upload that is not a PNG, JPEG or WebP image (415) or whose header claims too many pixels (413)."""
    if sniff_mime(data) is None:
        raise HTTPException(415, f"the body is not a {SNIFFABLE} image.")
    try:
        open_header(data)  # the header only: a bomb is refused before any pixel is decoded
    except ImageTooLarge as exc:
        raise HTTPException(413, f"{exc}.") from None
    except Unreadable as exc:
        raise HTTPException(415, f"{exc}.") from None


def create_app(policy: Policy, ledger: Ledger | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving soft-binding lookups from the ledger the policy names (or `ledger`)."""
    from tasks.provenance.watermark import WatermarkMethod, watermark_alg
    from tasks.storage.ledger import Ledger as LedgerClass

    install_bomb_guard()
    cache = _IndexCache(ledger or LedgerClass.open(policy.ledger_url()))
    secrets = watermark_secrets_for(policy)  # loaded once: a misconfigured secret fails at start-up
    default_method = policy.watermark.method.value
    app = FastAPI(
        title="AssetMint soft-binding resolution API",
        description="C2PA Soft Binding Resolution API over the AssetMint ledger (read-only).",
        version="1.0.0",
    )
    app.add_middleware(BodyLimit, max_bytes=MAX_QUERY_BODY_BYTES, per_path={"/matches/byContent": max_body_bytes})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(exc)}, status_code=400)  # the specification's 400

    def by_payload(payload: str, limit: int) -> dict[str, Any]:
        index = cache.get()
        if payload not in index.by_payload:
            index = cache.get(fresh=True)
        key = index.by_payload.get(payload)
        return _matches([index.by_key[key][0]] if key is not None else [], limit)

    def method_of(alg: str | None) -> str | None:
        if alg is None:
            return None
        method = _method_of(check_text("alg", alg, MAX_NAME_CHARS), default_method)
        if method is None:
            raise HTTPException(
                400, f"unsupported soft binding algorithm {quoted(alg)}; see /services/supportedAlgorithms."
            )
        return method

    def binding(alg: str, value: str, limit: int, too_long: int) -> dict[str, Any]:
        method = str(method_of(alg))
        if len(value) > MAX_VALUE_CHARS:
            raise HTTPException(
                too_long, f"value is {len(value)} characters long; a binding value is at most {MAX_VALUE_CHARS}."
            )
        payload = _payload_hex(value, method)
        if payload is None:
            raise HTTPException(400, f"value {quoted(value)} is not a {method} payload (base64 of its bytes, or hex).")
        return by_payload(payload, limit)

    @app.get("/services/supportedAlgorithms")
    def supported() -> dict[str, Any]:
        """The soft binding algorithms this service resolves."""
        return {"watermarks": [{"alg": watermark_alg(m)} for m in WatermarkMethod], "fingerprints": []}

    @app.get("/matches/byBinding")
    def match_binding(alg: str = Query(...), value: str = Query(...), limit: int = Depends(max_results)) -> Any:
        """Manifest ids whose soft binding equals the given one."""
        return binding(alg, value, limit, too_long=414)  # the specification's "query too long"

    @app.post("/matches/byBinding")
    def match_binding_post(query: dict[str, Any], limit: int = Depends(max_results)) -> Any:
        """The same lookup with the query as a JSON body {alg, value}."""
        if not isinstance(query.get("alg"), str) or not isinstance(query.get("value"), str):
            raise HTTPException(400, "the body must be a JSON object with string fields alg and value.")
        return binding(query["alg"], query["value"], limit, too_long=400)

    @app.post("/matches/byContent")
    async def match_content(request: Request, alg: str | None = Query(None), limit: int = Depends(max_results)) -> Any:
        """Manifest ids of the asset whose watermark the uploaded image carries."""
        method = method_of(alg or None)
        data = await request.body()  # BodyLimit has refused one over max_body_bytes (413)
        check_upload(data)
        payload = await run_in_threadpool(decode, data, method)
        if payload is None:
            return {"matches": []}
        return by_payload(payload, limit)

    def decode(data: bytes, method: str | None) -> str | None:
        # The engine's decoder choice and rescale sizes, watermark only: an uploaded image's credential is not read.
        context = InspectionContext(
            policy=policy, index=cache.get(), read_credential=False, requested_method=method, secrets=secrets
        )
        found = inspect_bytes(data, context)
        if found.unreadable is not None:
            raise HTTPException(415, found.unreadable)
        if found.mark_mismatch is not None:
            return None  # the mark names an asset whose pixels these are not (copied or forged): no match
        return found.watermark_payload

    @app.get("/manifests/{manifest_id:path}")
    def manifest(manifest_id: str, return_active: bool = Query(False, alias="returnActiveManifest")) -> Response:
        """The manifest store (JUMBF) the manifest id belongs to, as embedded in the finalized asset."""
        check_text("manifestId", manifest_id, MAX_NAME_CHARS)  # the specification's 400 "invalid manifest id"
        index = cache.get()
        if manifest_id not in index.by_label:
            index = cache.get(fresh=True)
        key = index.by_label.get(manifest_id)
        if key is None:
            raise HTTPException(404, f"no manifest {quoted(manifest_id)} in this ledger.")
        store = _store_from_asset(index.by_key[key][0], policy)
        if store is None:
            raise HTTPException(404, f"the asset of manifest {quoted(manifest_id)} is no longer available.")
        # The store holds exactly one manifest (AssetMint assets have no ingredients), so the active manifest
        # and the whole store are the same bytes: returnActiveManifest changes nothing.
        return Response(content=store, media_type=MANIFEST_MEDIA_TYPE)

    return app
