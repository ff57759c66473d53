"""Cost of finalizing one asset (embed + verify + encode + sign + read back) per size and watermark method.

Also the throughput of the finalize stage on all cores at 1024x1024 with the policy's default method.
Run: python benchmarks/finalize_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from policies.model import load_policy
from tasks.provenance import credentials as provenance
from tasks.provenance import watermark
from tasks.stages.finalize import FinalizeJob, encode_delivery, finalize_many


def photo_like(size: int, seed: int) -> Image.Image:
    """A smooth, detailed test picture: gradients, shapes and mild noise (no network, no sample data needed)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.5 + 0.4 * np.sin(6 * x + seed), 0.5 + 0.4 * np.cos(5 * y), 0.5 + 0.3 * np.sin(4 * (x + y))], -1)
    image = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, size, 2)
        r = int(rng.integers(size // 20, size // 5))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    image = image.filter(ImageFilter.GaussianBlur(size / 400))
    noise = rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


BENCH_SECRET = b"assetmint/benchmark/watermark-secret/v1 (not a deployment secret)"


def time_one(image: Image.Image, method: str, fmt: str, signer, policy, repeats: int) -> dict[str, float]:
    """Median seconds per step for one image (spreadTile with a benchmark secret)."""
    steps: dict[str, list[float]] = {k: [] for k in ("embed+verify", "encode", "sign+read back", "total")}
    for key in range(1, repeats + 1):
        t0 = time.perf_counter()
        marked = watermark.embed_verified(image, key, method, BENCH_SECRET)
        t1 = time.perf_counter()
        data = encode_delivery(marked, fmt, policy.finalize)
        t2 = time.perf_counter()
        marks = provenance.WatermarkFacts(
            algorithm=watermark.watermark_alg(method),
            method=method,
            payload_hex=watermark.payload_hex(key, method, BENCH_SECRET),
            key=str(key),
        )
        facts = provenance.AssetFacts(
            asset_id=f"bench{key}", model_name="bench", prompt="a test", generation={"seed": key}, mime=f"image/{fmt}"
        )
        definition = provenance.build_manifest_definition(facts, policy.signing, marks)
        provenance.sign_and_validate(data, f"image/{fmt}", definition, signer)
        t3 = time.perf_counter()
        for name, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
            steps[name].append(value)
    return {name: float(np.median(values)) for name, values in steps.items()}


def main() -> None:
    """Measure and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ASSETMINT_CONFIG_DIR", str(Path(tmp) / "config"))
        policy = load_policy()
        signer = provenance.load_signer(policy.signing)
        print("| size | method | format | embed+verify | encode | sign+read back | total | images/s (1 core) |")
        print("|---|---|---|---|---|---|---|---|")
        methods = ["spreadTile", "dwtDctSvd", "dwtDct"] + ([] if args.quick else ["rivaGan"])
        for size in (512, 1024):
            image = photo_like(size, 1)
            for method in methods:
                n = 1 if method == "rivaGan" else repeats
                for fmt in ("png", "jpeg"):
                    try:
                        time_one(image, method, fmt, signer, policy, 1)  # warm-up: imports, model loads
                        t = time_one(image, method, fmt, signer, policy, n)
                    except watermark.WatermarkVerificationError as exc:
                        print(f"| {size}² | {method} | {fmt} | refused: {exc} | | | | |")
                        continue
                    ms = {name: f"{seconds * 1000:.0f} ms" for name, seconds in t.items()}
                    print(
                        f"| {size}² | {method} | {fmt} | {ms['embed+verify']} | {ms['encode']} | {ms['sign+read back']}"
                        f" | {ms['total']} | {1 / t['total']:.2f} |"
                    )
        count = 8 if args.quick else 24
        folder = Path(tmp) / "images"
        folder.mkdir()
        jobs = []
        for i in range(count):
            path = folder / f"{i}.png"
            photo_like(1024, i).save(path)
            jobs.append(
                FinalizeJob(
                    run_id="bench",
                    candidate_id=f"c{i}",
                    asset_key=i + 1,
                    image_path=str(path),
                    output_format="png",
                    final_path=str(folder / f"final-{i}.png"),
                    prompt="a test",
                    negative_prompt="",
                    model_name="bench",
                    title="bench",
                    generation={"seed": i},
                    watermark=policy.watermark,
                    signing=policy.signing,
                    finalize=policy.finalize,
                    dev_keys_dir=str(Path(os.environ["ASSETMINT_CONFIG_DIR"]) / "keys"),
                )
            )
        began = time.perf_counter()
        outcomes = finalize_many(jobs, policy.finalize.workers)
        seconds = time.perf_counter() - began
        assert all(o.ok for o in outcomes), [o.reason for o in outcomes if not o.ok]
        print(
            f"\nfinalize stage, {count} PNG assets at 1024², {policy.watermark.method.value}, "
            f"{policy.finalize.workers} worker processes (incl. their start-up): {count / seconds:.2f} images/s"
        )


if __name__ == "__main__":
    main()
