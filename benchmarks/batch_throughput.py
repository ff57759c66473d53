"""Batch flow vs. a raw diffusers loop on the same tiny model and candidates; peak RSS of a large run.

Prints throughput of both, their ratio, orchestration overhead per image, and the peak resident memory of a
1,000-candidate `assetmint run` in a child process. Run: python benchmarks/batch_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MANIFEST = """\
campaign: {{id: bench, name: Benchmark}}
defaults:
  model: embedded:tiny-sd
  width: {size}
  height: {size}
  steps: {steps}
  guidance: 5.0
  candidates: {per_prompt}
  base_seed: 0
prompts:
  - prompt: "a {{thing}} on a table"
    vars: {{thing: [{things}]}}
"""


def write_manifest(folder: Path, prompts: int, per_prompt: int, size: int, steps: int) -> Path:
    things = ", ".join(f"thing{i}" for i in range(prompts))
    path = folder / f"bench-{prompts}x{per_prompt}.yaml"
    path.write_text(MANIFEST.format(size=size, steps=steps, per_prompt=per_prompt, things=things))
    return path


def raw_loop(prompts: int, per_prompt: int, size: int, steps: int, batch: int, out: Path) -> float:
    """The same images with plain diffusers: one generator per seed, PNG files; returns seconds."""
    import torch
    from diffusers import DiffusionPipeline

    from tasks.stages.batch_invariance import make_batch_invariant
    from tasks.stages.embedded import ensure_embedded_pipeline

    pipe = DiffusionPipeline.from_pretrained(ensure_embedded_pipeline(), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    make_batch_invariant(pipe)  # the flow runs invariant on CPU; compare like with like
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    for p in range(prompts):
        for start in range(0, per_prompt, batch):
            seeds = list(range(start, min(per_prompt, start + batch)))
            images = pipe(
                prompt=f"a thing{p} on a table",
                width=size,
                height=size,
                num_inference_steps=steps,
                guidance_scale=5.0,
                num_images_per_prompt=len(seeds),
                generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            ).images
            for seed, image in zip(seeds, images, strict=True):
                image.save(out / f"{p}-{seed}.png")
    return time.perf_counter() - began


def flow_generation(manifest: Path, policy: Path) -> tuple[float, float]:
    """Run the batch flow in-process; returns (generation seconds, whole-flow seconds)."""
    from flows.batch import batch_flow
    from tasks.core import progress

    marks: dict[str, float] = {}

    class Marks:
        def update(self, stage: str, done: int, total: int) -> None:
            marks.setdefault(f"{stage}-start", time.perf_counter())
            if done == total:
                marks[f"{stage}-end"] = time.perf_counter()

    began = time.perf_counter()
    with progress.progress_sink(Marks()):
        batch_flow(manifest=str(manifest), policy=str(policy))
    total = time.perf_counter() - began
    return marks["generate-end"] - began, total


def peak_rss_of_run(manifest: Path, policy: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run `assetmint run` in a child; returns (seconds, peak RSS in MiB)."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cli", "run", str(manifest), "--policy", str(policy)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - began
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke test")
    parser.add_argument("--skip-large", action="store_true", help="skip the 1,000-candidate peak-RSS run")
    args = parser.parse_args()
    prompts, per_prompt = (2, 8) if args.quick else (4, 16)
    large = 100 if args.quick else 1000
    size, steps, batch = 256, 2, 4
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["ASSETMINT_WORK_DIR"] = str(root / "work")
        policy = root / "policy.yaml"
        policy.write_text(f"generation:\n  chunk_size: 16\n  batch_size: {batch}\n")
        manifest = write_manifest(root, prompts, per_prompt, size, steps)
        count = prompts * per_prompt
        raw_loop(1, batch, size, steps, batch, root / "warmup")  # load weights, warm kernels
        # Warm the flow the same way: Prefect's ephemeral server and the per-process model caches start once.
        (root / "warm").mkdir()
        flow_generation(write_manifest(root / "warm", 1, 1, size, steps), policy)
        raw = raw_loop(prompts, per_prompt, size, steps, batch, root / "raw")
        generation, whole = flow_generation(manifest, policy)
        print(f"images: {count} at {size}x{size}, {steps} steps, batch {batch}, CPU")
        print(f"raw diffusers loop : {count / raw:7.2f} images/s ({raw:.2f} s)")
        print(f"batch flow, generation stage: {count / generation:7.2f} images/s ({generation:.2f} s incl. flow start)")
        print(f"batch flow, whole run (+ scoring, selection, finalize): {count / whole:7.2f} images/s ({whole:.2f} s)")
        print(f"throughput ratio (flow generation / raw): {raw / generation:.3f}x")
        print(f"orchestration overhead per image: {(generation - raw) / count * 1000:.1f} ms")
        if args.skip_large:
            return
        big = write_manifest(root, 10, large // 10, size, 1)
        env = dict(os.environ, ASSETMINT_WORK_DIR=str(root / "work-large"))
        seconds, rss = peak_rss_of_run(big, policy, env)
        print(f"{large}-candidate run ({size}x{size}, 1 step): {seconds:.1f} s, peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
