"""Audit throughput (images/s) at 1024²: published assets from a folder and from S3, and stripped copies.

Builds a few 1024² assets the way finalize does (synthetic pictures, dwtDctSvd watermark, PNG, signed C2PA with the
development keys), publishes them with tasks/publish to a local folder and, when ASSETMINT_TEST_S3_BUCKET is set (see
deploy/s3-local.sh), to S3; then audits them with 1 and 2 worker threads. The ledger is empty: every object costs
what a real audit costs per object (fetch, sha256, C2PA read + validate, watermark decode), and the verdicts are
"verified" (a trusted credential with no ledger record) or "not_ours" for stripped copies.
Run: python benchmarks/audit_throughput.py [--count N] [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from finalize_cost import photo_like  # noqa: E402

from policies.model import load_policy  # noqa: E402
from tasks.inspection.audit import run_audit  # noqa: E402
from tasks.provenance import credentials as provenance
from tasks.provenance import watermark  # noqa: E402
from tasks.stages.finalize import encode_delivery  # noqa: E402
from tasks.storage.ledger import Ledger  # noqa: E402
from tasks.storage.publish import LocalFolderTarget, PublishItem, S3Target  # noqa: E402


def build_assets(folder: Path, count: int, policy, signer) -> list[PublishItem]:
    """Finalize `count` synthetic 1024² pictures into signed PNG files; return them as publish items."""

    items = []
    for key in range(1, count + 1):
        marked = watermark.embed_verified(photo_like(1024, key), key, "dwtDctSvd")
        data = encode_delivery(marked, "png", policy.finalize)
        facts = provenance.AssetFacts(asset_id=f"bench{key}", model_name="bench", prompt="a test", generation={})
        marks = provenance.WatermarkFacts(
            "com.assetmint.imwatermark.dwtDctSvd", "dwtDctSvd", watermark.payload_hex(key, "dwtDctSvd"), str(key)
        )
        definition = provenance.build_manifest_definition(facts, policy.signing, marks)
        signed, report, sha256 = provenance.sign_and_validate(data, "image/png", definition, signer)
        path = folder / f"bench{key}.png"
        path.write_bytes(signed)
        items.append(
            PublishItem(
                asset_id=f"bench{key}",
                run_id="bench",
                campaign="bench",
                prompt_id="p",
                policy_name="bench",
                path=path,
                sha256=sha256,
                mime="image/png",
                ext="png",
                metadata={
                    "asset-id": f"bench{key}",
                    "watermark-payload": watermark.payload_hex(key, "dwtDctSvd"),
                    "c2pa-manifest": str(report.active_manifest_label),
                },
                sidecar={"asset_id": f"bench{key}", "provenance": {"sha256": sha256}},
            )
        )
    return items


def measure(label: str, target: str, policy, ledger: Ledger, workers: int) -> None:
    """Audit `target` once and print images/s with the verdict counts."""
    began = time.perf_counter()
    summary = run_audit([target], policy, ledger, workers=workers, record=False)
    seconds = time.perf_counter() - began
    counts = Counter(r.verdict for r in summary.results)
    n = len(summary.results)
    print(f"| {label} | {workers} | {n} | {seconds:.2f} s | {n / seconds:.2f} | {dict(counts)} |")


def main() -> None:
    """Build, publish, audit, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=8, help="assets to build (default 8)")
    parser.add_argument("--quick", action="store_true", help="4 assets")
    args = parser.parse_args()
    count = 4 if args.quick else args.count
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("ASSETMINT_CONFIG_DIR", str(root / "config"))
        os.environ["ASSETMINT_WORK_DIR"] = str(root / "work")
        policy = load_policy()
        ledger = Ledger.open_file(root / "ledger.sqlite")
        (root / "final").mkdir()
        began = time.perf_counter()
        with provenance.load_signer(policy.signing) as signer:
            items = build_assets(root / "final", count, policy, signer)
        print(f"built {count} signed 1024² PNG assets in {time.perf_counter() - began:.1f} s\n")
        folder = LocalFolderTarget(root / "published", policy.publish)
        for item in items:
            folder.publish(item)
        stripped = root / "stripped"
        stripped.mkdir()
        from PIL import Image

        for item in items:
            out = io.BytesIO()
            Image.open(item.path).convert("RGB").save(out, "JPEG", quality=90, subsampling=0)
            (stripped / f"{item.asset_id}.jpg").write_bytes(out.getvalue())
        warm = run_audit([str(item.path) for item in items[:1]], policy, ledger, record=False)  # imports, c2pa
        assert warm.results[0].verdict == "verified", warm.results[0].reasons
        print("| source | workers | objects | wall | images/s | verdicts |")
        print("|---|---|---|---|---|---|")
        for workers in (1, 2):
            measure("folder, published PNG", str(root / "published"), policy, ledger, workers)
        for workers in (1, 2):
            measure("folder, stripped JPEG q90 4:4:4 (no ledger record)", str(stripped), policy, ledger, workers)
        bucket = os.environ.get("ASSETMINT_TEST_S3_BUCKET")
        if not bucket:
            print("\nS3: skipped (set ASSETMINT_TEST_S3_BUCKET and the AWS_* variables; see deploy/s3-local.sh)")
            return
        import boto3

        prefix = f"audit-bench-{uuid.uuid4().hex[:8]}"
        target = S3Target(bucket, prefix, policy.publish)
        for item in items:
            target.publish(item)
        try:
            for workers in (1, 2, 4):
                measure("S3 (radosgw on loopback)", f"s3://{bucket}/{prefix}", policy, ledger, workers)
        finally:
            s3 = boto3.client("s3")
            for entry in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=entry["Key"])


if __name__ == "__main__":
    main()
