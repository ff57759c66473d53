"""The same tiny-model batch rendered locally and by 1 and 2 generator actors on a local Ray cluster.

Starts a cluster on this machine (deploy/local_ray.py: a head without CPUs and two 1-CPU worker nodes), then runs
the batch flow in this process once per engine, with scoring, screening and finalize off the clock. Prints, per
engine: generation throughput from the flow's start (actor start-up and model loads included) and in steady state
(after the first chunk), the overhead per chunk against the local run at the same thread count, and each
generator's model loads and peak RSS. Run: python benchmarks/scale_out.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "deploy"))

from local_ray import local_ray_cluster  # noqa: E402

MANIFEST = """\
campaign: {{id: scale, name: Scale-out benchmark}}
defaults: {{model: embedded:tiny-sd, width: 256, height: 256, steps: {steps}, candidates: {per_prompt}, keep_top_k: 1}}
prompts:
  - prompt: "a {{thing}} on a table"
    vars: {{thing: [{things}]}}
"""


def timed_run(manifest: Path, policy: Path) -> tuple[float, float, int, list[dict]]:
    """Run the batch flow; (seconds to the last generated image, seconds to the first chunk, chunks, generators)."""
    from flows.batch import batch_flow
    from tasks.core import progress

    reports: list[tuple[float, int]] = []

    class Marks:
        def update(self, stage: str, done: int, total: int) -> None:
            if stage == "generate":
                reports.append((time.perf_counter(), done))

    began = time.perf_counter()
    with progress.progress_sink(Marks()):
        summary = batch_flow(manifest=str(manifest), policy=str(policy))
    end = max(t for t, _ in reports)
    return end - began, min(t for t, _ in reports) - began, len(reports), summary.generators


def describe(report: dict) -> str:
    """One generator's report as a line."""
    return (
        f"generator {report['worker']}: {report['chunks']} chunks, model loads {report['model_loads']}, "
        f"peak RSS {report['peak_rss_mb']:.0f} MB"
    )


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer candidates, for a smoke test")
    args = parser.parse_args()
    prompts, per_prompt, steps, chunk = (2, 12, 4, 4) if args.quick else (4, 24, 8, 4)
    count = prompts * per_prompt
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["ASSETMINT_CACHE_DIR"] = os.environ.get("ASSETMINT_CACHE_DIR", str(root / "cache"))
        things = ", ".join(f"thing{i}" for i in range(prompts))
        manifest = root / "manifest.yaml"
        manifest.write_text(MANIFEST.format(steps=steps, per_prompt=per_prompt, things=things))
        base = (
            f"generation:\n  chunk_size: {chunk}\n  batch_size: {chunk}\nsafety:\n  prompts: {{enabled: false}}\n"
            "  nsfw: {enabled: false}\n  concepts: {enabled: false}\nfinalize:\n  enabled: false\n"
        )
        engines = {
            "local, 1 thread": ("", 1),
            "local, 2 threads": ("", 2),
            "ray, 1 generator": ("execution: {engine: ray, address: ADDR, gpus_per_worker: 0, workers: 1}\n", 2),
            "ray, 2 generators": ("execution: {engine: ray, address: ADDR, gpus_per_worker: 0, workers: 2}\n", 2),
        }
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        import torch

        from tasks.stages.embedded import ensure_embedded_pipeline

        ensure_embedded_pipeline()  # build the tiny model once, outside every clock
        logging.getLogger("tasks").setLevel(logging.WARNING)
        warm = root / "warm.yaml"  # Prefect's ephemeral server and this process's model cache start once, off the clock
        warm.write_text(MANIFEST.format(steps=1, per_prompt=1, things="warm"))
        os.environ["ASSETMINT_WORK_DIR"] = str(root / "warm")
        (root / "warm-policy.yaml").write_text(base)
        timed_run(warm, root / "warm-policy.yaml")
        with local_ray_cluster(2, root, env) as address:
            results = {}
            for name, (section, threads) in engines.items():
                torch.set_num_threads(threads)
                policy = root / f"{name.replace(' ', '-').replace(',', '')}.yaml"
                policy.write_text(base + section.replace("ADDR", address))
                os.environ["ASSETMINT_WORK_DIR"] = str(root / policy.stem)
                results[name] = timed_run(manifest, policy)
        print(f"{count} candidates of the tiny model at 256x256, {steps} steps, chunks of {chunk}, CPU (2 cores)")
        print("images/s from the flow's start (on Ray: generator start-up, model loads) | after the first chunk")
        local1, local2 = results["local, 1 thread"], results["local, 2 threads"]

        def steady(result: tuple[float, float, int, list[dict]]) -> float:
            seconds, first, chunks, _ = result
            return (count - count / chunks) / (seconds - first) if chunks > 1 else float("nan")

        for name, result in results.items():
            line = f"{name:18s}: {count / result[0]:6.2f} | {steady(result):6.2f}"
            if name.startswith("ray"):
                line += f"   ({local2[0] / result[0]:.2f}x | {steady(result) / steady(local2):.2f}x local, 2 threads)"
            print(line)
            generators = result[3]
            for report in generators:
                print(f"    {describe(report)}")
        seconds, first, chunks, (generator,) = results["ray, 1 generator"]
        wall = (seconds - first) / (chunks - 1)  # per chunk after the first, one generator, so nothing overlaps
        render = (generator["render_s"] - generator["first_render_s"]) / (generator["chunks"] - 1)
        slower = (wall - (local1[0] - local1[1]) / (local1[2] - 1)) * 1e3
        print(f"one generator, per chunk after the first: {wall * 1e3:.0f} ms, rendering {render * 1e3:.0f} ms")
        print(f"  not hidden behind rendering (scheduling, transfer): {(wall - render) * 1e3:.0f} ms per chunk")
        print(f"  against the local run with 1 thread: {slower:+.0f} ms per chunk")


if __name__ == "__main__":
    main()
