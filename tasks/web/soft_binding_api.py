"""The C2PA Soft Binding Resolution API over the ledger: from a watermark (or an image) to its manifest store.

Routes (the C2PA specification's vocabulary): ``GET|POST /matches/byBinding`` (a soft binding's ``alg`` and
``value``: base64 of the payload bytes as the specification says, or the payload as hex, as it appears in our
``c2pa.soft-binding`` assertions), ``POST /matches/byContent`` (an image body: the inspection engine decodes its
watermark, rescaled to the ledger's sizes when needed), ``GET /manifests/{manifestId}`` (the manifest store bytes,
``application/c2pa``) and ``GET /services/supportedAlgorithms``. Matches answer
``{"matches": [{"manifestId", "similarityScore"}]}``; manifest ids are the C2PA manifest labels the ledger
recorded at finalization.

Read-only (lookups only), no authentication (it serves what published assets already carry), separate from the
review server. FastAPI is imported at module level (route annotations are resolved against this module); import
this module only to serve. Request bodies are capped (413); only images are decoded (415), with the audit's bomb guard.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from tasks.core.media import SNIFFABLE, sniff_mime
from tasks.inspection.audit import manifest_store_bytes
from tasks.inspection.engine import InspectionContext, LedgerIndex, inspect_bytes, install_bomb_guard

if TYPE_CHECKING:
    from policies.model import Policy
    from tasks.storage.ledger import AssetRow, Ledger

MAX_BODY_BYTES = 20 * 1024 * 1024
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
    from tasks.provenance.watermark import WatermarkMethod
    from tasks.stages.finalize import WATERMARK_ALG_PREFIX

    if not alg:
        return default
    if not alg.startswith(WATERMARK_ALG_PREFIX):
        return None
    method = alg[len(WATERMARK_ALG_PREFIX) :]
    return method if method in {m.value for m in WatermarkMethod} else None


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


def create_app(policy: Policy, ledger: Ledger | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving soft-binding lookups from the ledger the policy names (or `ledger`)."""
    from tasks.provenance.watermark import WatermarkMethod
    from tasks.stages.finalize import WATERMARK_ALG_PREFIX
    from tasks.storage.ledger import Ledger as LedgerClass

    install_bomb_guard()
    cache = _IndexCache(ledger or LedgerClass.open(policy.ledger_url()))
    default_method = policy.watermark.method.value
    app = FastAPI(
        title="AssetMint soft-binding resolution API",
        description="C2PA Soft Binding Resolution API over the AssetMint ledger (read-only).",
        version="1.0.0",
    )

    def by_payload(payload: str, limit: int) -> dict[str, Any]:
        index = cache.get()
        if payload not in index.by_payload:
            index = cache.get(fresh=True)
        key = index.by_payload.get(payload)
        return _matches([index.by_key[key][0]] if key is not None else [], limit)

    def binding(alg: str, value: str, limit: int) -> dict[str, Any]:
        method = _method_of(alg, default_method)
        if method is None:
            raise HTTPException(400, f"unsupported soft binding algorithm {alg!r}; see /services/supportedAlgorithms")
        payload = _payload_hex(value, method)
        if payload is None:
            raise HTTPException(400, f"value is not a {method} payload (base64 of its bytes, or hex)")
        return by_payload(payload, limit)

    @app.get("/services/supportedAlgorithms")
    def supported() -> dict[str, Any]:
        """The soft binding algorithms this service resolves."""
        return {"watermarks": [{"alg": WATERMARK_ALG_PREFIX + m.value} for m in WatermarkMethod], "fingerprints": []}

    @app.get("/matches/byBinding")
    def match_binding(
        alg: str = Query(...), value: str = Query(...), max_results: int = Query(10, alias="maxResults", ge=1)
    ) -> dict[str, Any]:
        """Manifest ids whose soft binding equals the given one."""
        return binding(alg, value, max_results)

    @app.post("/matches/byBinding")
    def match_binding_post(query: dict[str, Any], max_results: int = Query(10, alias="maxResults", ge=1)) -> Any:
        """The same lookup with the query as a JSON body {alg, value}."""
        if not isinstance(query.get("alg"), str) or not isinstance(query.get("value"), str):
            raise HTTPException(400, "the body must be a JSON object with string fields alg and value")
        return binding(query["alg"], query["value"], max_results)

    @app.post("/matches/byContent")
    async def match_content(
        request: Request,
        alg: str | None = Query(None),
        max_results: int = Query(10, alias="maxResults", ge=1),
    ) -> Any:
        """Manifest ids of the asset whose watermark the uploaded image carries."""
        method = _method_of(alg, default_method) if alg else None
        if alg and method is None:
            raise HTTPException(400, f"unsupported soft binding algorithm {alg!r}; see /services/supportedAlgorithms")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            return JSONResponse({"detail": f"the body is over {max_body_bytes} bytes"}, status_code=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return JSONResponse({"detail": f"the body is over {max_body_bytes} bytes"}, status_code=413)
            chunks.append(chunk)
        data = b"".join(chunks)
        if sniff_mime(data) is None:
            return JSONResponse({"detail": f"the body is not a {SNIFFABLE} image"}, status_code=415)
        payload = await run_in_threadpool(decode, data, method)
        if payload is None:
            return {"matches": []}
        return by_payload(payload, max_results)

    def decode(data: bytes, method: str | None) -> str | None:
        # The engine's decoder choice and rescale sizes, watermark only: an uploaded image's credential is not read.
        context = InspectionContext(policy=policy, index=cache.get(), read_credential=False, requested_method=method)
        found = inspect_bytes(data, context)
        if found.unreadable is not None:
            raise HTTPException(415, found.unreadable)
        return found.watermark_payload

    @app.get("/manifests/{manifest_id:path}")
    def manifest(manifest_id: str, return_active: bool = Query(False, alias="returnActiveManifest")) -> Response:
        """The manifest store (JUMBF) the manifest id belongs to, as embedded in the finalized asset."""
        index = cache.get()
        if manifest_id not in index.by_label:
            index = cache.get(fresh=True)
        key = index.by_label.get(manifest_id)
        if key is None:
            raise HTTPException(404, f"no manifest {manifest_id!r} in this ledger")
        store = _store_from_asset(index.by_key[key][0], policy)
        if store is None:
            raise HTTPException(404, f"the asset of manifest {manifest_id!r} is no longer available to read it from")
        # The store holds exactly one manifest (AssetMint assets have no ingredients), so the active manifest
        # and the whole store are the same bytes: returnActiveManifest changes nothing.
        return Response(content=store, media_type=MANIFEST_MEDIA_TYPE)

    return app
