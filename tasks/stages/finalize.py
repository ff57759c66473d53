"""Finalization, in the contract order of DESIGN.md: watermark -> verify -> encode -> sign -> validate -> record.

The per-asset work is a pure function of picklable inputs so that it runs in worker processes; the caller records
each outcome in the ledger, one transaction per asset, as it completes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from policies.finalize import FinalizePolicy
from policies.signing import SigningPolicy
from policies.watermark import WatermarkPolicy
from tasks.core.cache import load_once
from tasks.core.errors import AssetMintError
from tasks.core.files import write_atomic
from tasks.core.interrupts import children_ignore_stop_signals
from tasks.provenance.trust import trust_label
from tasks.provenance.watermark import IMWATERMARK_ALG_PREFIX
from tasks.storage.ledger import FinalizedAsset

MIME_BY_FORMAT = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSION_BY_FORMAT = {"png": "png", "jpeg": "jpg", "webp": "webp"}
WATERMARK_ALG_PREFIX = IMWATERMARK_ALG_PREFIX  # the invisible-watermark methods; spreadTile: SPREAD_TILE_ALG
# Below this many assets, starting worker processes costs more than it saves.
MIN_ASSETS_FOR_POOL = 4


@dataclass(frozen=True)
class FinalizeJob:
    """Everything one asset's finalization needs, picklable for a worker process."""

    run_id: str
    candidate_id: str
    asset_key: int
    image_path: str
    output_format: str
    final_path: str
    prompt: str
    negative_prompt: str
    model_name: str
    title: str
    generation: dict[str, Any]
    watermark: WatermarkPolicy
    signing: SigningPolicy
    finalize: FinalizePolicy
    dev_keys_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _keys_dir_key(policy: SigningPolicy, dev_keys_dir: str | None) -> tuple[str, str]:
    """Cache key of per-process signing material: the policy and the folder the development keys come from."""
    from tasks.provenance.keys import default_keys_dir

    return policy.model_dump_json(), dev_keys_dir or str(default_keys_dir())


@load_once(key=_keys_dir_key)
def _mark_secret_for(policy: SigningPolicy, dev_keys_dir: str | None) -> bytes:
    from tasks.provenance.mark_secrets import load_mark_secrets

    return load_mark_secrets(policy, Path(dev_keys_dir) if dev_keys_dir else None).current.secret


@load_once(key=_keys_dir_key)
def _signer_for(policy: SigningPolicy, dev_keys_dir: str | None) -> Any:
    from tasks.provenance.credentials import load_signer

    return load_signer(policy, Path(dev_keys_dir) if dev_keys_dir else None)


def encode_delivery(image: Any, output_format: str, policy: FinalizePolicy) -> bytes:
    """Encode pixels in the delivery format."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG")
    elif output_format == "jpeg":
        subsampling = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}[policy.jpeg_subsampling]
        image.convert("RGB").save(buffer, format="JPEG", quality=policy.jpeg_quality, subsampling=subsampling)
    elif output_format == "webp":
        if policy.webp_lossless:
            image.save(buffer, format="WEBP", lossless=True)
        else:
            image.save(buffer, format="WEBP", quality=policy.webp_quality)
    else:
        raise AssetMintError(f"unsupported output format {output_format!r}; allowed: {', '.join(MIME_BY_FORMAT)}")
    return buffer.getvalue()


def _prepare_pixels(image: Any, policy: WatermarkPolicy) -> tuple[Any, dict[str, Any]]:
    from PIL import Image

    from tasks.provenance.watermark import MIN_SIDE

    notes: dict[str, Any] = {}
    if min(image.size) < MIN_SIDE and policy.enabled and policy.upscale_small:
        scale = MIN_SIDE / min(image.size)
        size = (max(MIN_SIDE, round(image.width * scale)), max(MIN_SIDE, round(image.height * scale)))
        notes["upscaled_from"] = {"width": image.width, "height": image.height}
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image, notes


def finalize_one(job: FinalizeJob) -> FinalizedAsset:
    """Finalize one asset; any failure is returned with its reason, never leaving a file at final_path."""
    try:
        return _finalize(job)
    except AssetMintError as exc:
        return FinalizedAsset(candidate_id=job.candidate_id, ok=False, reason=str(exc))
    except OSError as exc:
        return FinalizedAsset(
            candidate_id=job.candidate_id, ok=False, reason=f"cannot read or write image files: {exc}"
        )
    except Exception as exc:  # noqa: BLE001 - one asset's unexpected failure must not abort the others
        return FinalizedAsset(candidate_id=job.candidate_id, ok=False, reason=f"{type(exc).__name__}: {exc}")


def _finalize(job: FinalizeJob) -> FinalizedAsset:
    from PIL import Image

    from tasks.provenance import credentials as provenance
    from tasks.provenance import watermark
    from tasks.provenance.fingerprint import make_fingerprint

    try:
        with Image.open(job.image_path) as source:
            source.load()
            image, notes = _prepare_pixels(source.convert("RGB"), job.watermark)
    except OSError as exc:  # includes PIL's UnidentifiedImageError and truncated files
        raise AssetMintError(f"candidate image {job.image_path} cannot be read: {exc}") from None
    mime = MIME_BY_FORMAT[job.output_format]
    marks: provenance.WatermarkFacts | None = None
    method = job.watermark.method
    secret = _mark_secret_for(job.signing, job.dev_keys_dir) if job.watermark.enabled else None
    if job.watermark.enabled:
        image = watermark.embed_verified(image, job.asset_key, method, secret)
        payload = watermark.payload_hex(job.asset_key, method, secret)
        marks = provenance.WatermarkFacts(
            algorithm=watermark.watermark_alg(method),
            method=method.value,
            payload_hex=payload,
            key=str(job.asset_key),
        )
    encoded = encode_delivery(image, job.output_format, job.finalize)
    if marks is not None and job.output_format != "png":
        # Lossy delivery formats change pixels: the mark must survive the exact bytes we deliver.
        with Image.open(io.BytesIO(encoded)) as delivered:
            decoded = watermark.decode(delivered.convert("RGB"), method, (secret,) if secret else ())
        if decoded.key != job.asset_key:
            return FinalizedAsset(
                candidate_id=job.candidate_id,
                ok=False,
                reason=f"{method.value} watermark did not survive {job.output_format} encoding "
                f"(decoded {decoded.key}, expected {job.asset_key})",
            )
    generation = {
        **job.generation,
        "final_size": {"width": image.width, "height": image.height},  # the delivered pixels, after any upscale
        "watermark": {"method": method.value, "payload": marks.payload_hex} if marks else {"enabled": False},
        **notes,
    }
    facts = provenance.AssetFacts(
        asset_id=job.candidate_id,
        model_name=job.model_name,
        prompt=job.prompt,
        negative_prompt=job.negative_prompt or None,
        generation=generation,
        title=job.title,
        mime=mime,
    )
    signer = _signer_for(job.signing, job.dev_keys_dir)
    definition = provenance.build_manifest_definition(facts, job.signing, marks)
    signed, report, sha256 = provenance.sign_and_validate(
        encoded, mime, definition, signer, require_trusted=job.finalize.require_trusted
    )
    write_atomic(Path(job.final_path), signed, durable=True)
    return FinalizedAsset(
        candidate_id=job.candidate_id,
        ok=True,
        watermark_method=method.value if marks else None,
        payload_hex=marks.payload_hex if marks else None,
        final_path=job.final_path,
        final_sha256=sha256,
        mime=mime,
        manifest_label=report.active_manifest_label,
        validation_state=report.state,
        trust=trust_label(report.state, report.signer, report.signer_issuer),
        signer=report.signer,
        provenance={
            "signer_is_development": signer.is_development,
            "status_codes": report.status_codes,
            "watermark_enabled": job.watermark.enabled,
            **notes,
        },
        final_width=image.width,
        final_height=image.height,
        fingerprint=make_fingerprint(image),
    )


def finalize_many(
    jobs: Sequence[FinalizeJob], workers: int, on_done: Callable[[FinalizedAsset], None] | None = None
) -> list[FinalizedAsset]:
    """Finalize assets, on `workers` processes when there are enough of them to pay for the start-up."""
    results: list[FinalizedAsset] = []
    if workers <= 1 or len(jobs) < MIN_ASSETS_FOR_POOL:
        for job in jobs:
            results.append(finalize_one(job))
            if on_done:
                on_done(results[-1])
        return results
    # spawn, not fork: the parent has torch's OpenMP pool running, which forked children can deadlock on.
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn"))
    try:
        with children_ignore_stop_signals():  # map() starts the workers
            outcomes = pool.map(finalize_one, jobs, chunksize=max(1, len(jobs) // (workers * 4)))
        for outcome in outcomes:
            results.append(outcome)
            if on_done:
                on_done(outcome)
    finally:
        # On an interrupt the queued assets are dropped, not finished; the ones already running complete their
        # atomic writes (a rerun finalizes them again), so the wait is one asset per worker at most.
        pool.shutdown(wait=True, cancel_futures=True)
    return results
