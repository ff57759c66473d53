"""The demo-model training flow: autoencoder, then text encoder + UNet, then CLIP, each saved in its standard format."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.core import progress
from tasks.core.files import write_atomic
from tasks.demo import CLIP_DIR, PIPELINE_DIR, TRAINING_RECORD, train


def _reporter(stage: str, losses: list[float]) -> train.Progress:
    def update(done: int, total: int, metrics: dict[str, float]) -> None:
        losses.append(metrics["loss"])
        progress.report(stage, done, total)

    return update


def _stage(stage: str, fn: Any, *args: Any, device: str) -> tuple[Any, dict[str, Any]]:
    """Run one training stage with progress; return its result and a record (seconds, steps, last losses)."""
    losses: list[float] = []
    result, seconds = train.timed(lambda: fn(*args, progress=_reporter(stage, losses), device=device))
    tail = losses[-50:] or [float("nan")]
    return result, {"seconds": round(seconds, 1), "steps": len(losses), "final_loss": round(sum(tail) / len(tail), 4)}


@task(name="train-autoencoder", cache_policy=NO_CACHE)
def train_autoencoder_task(recipe: train.Recipe, device: str) -> tuple[Any, dict[str, Any]]:
    """Train the KL autoencoder."""
    return _stage("autoencoder", train.train_vae, recipe, device=device)


@task(name="train-text-to-image", cache_policy=NO_CACHE)
def train_text_to_image_task(recipe: train.Recipe, vae: Any, tokenizer: Any, device: str) -> tuple[Any, dict[str, Any]]:
    """Train the text encoder and UNet on the autoencoder's latents."""
    return _stage("denoiser", train.train_text_to_image, recipe, vae, tokenizer, device=device)


@task(name="train-clip", cache_policy=NO_CACHE)
def train_clip_task(recipe: train.Recipe, tokenizer: Any, device: str) -> tuple[Any, dict[str, Any]]:
    """Train the CLIP model contrastively."""
    return _stage("clip", train.train_clip, recipe, tokenizer, device=device)


@task(name="save-pipeline", cache_policy=NO_CACHE)
def save_pipeline_task(parts: train.TextToImage, folder: Path, record: dict[str, Any]) -> None:
    """Save the diffusers pipeline folder with its training record."""
    train.save_pipeline(parts, folder)
    write_atomic(folder / TRAINING_RECORD, json.dumps(record, indent=2).encode() + b"\n")


@task(name="save-clip", cache_policy=NO_CACHE)
def save_clip_task(model: Any, tokenizer: Any, config: dict[str, Any], folder: Path, record: dict[str, Any]) -> None:
    """Save the open_clip folder with its training record."""
    train.save_clip(model, tokenizer, config, folder)
    write_atomic(folder / TRAINING_RECORD, json.dumps(record, indent=2).encode() + b"\n")


def _environment(device: str) -> dict[str, Any]:
    import diffusers
    import open_clip
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "open_clip": open_clip.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else device,
    }


MODELS = ("pipeline", "clip")


@flow(name="assetmint-train-demo-models", log_prints=False, validate_parameters=False)
def train_demo_models_flow(
    out_dir: str, recipe: str = "full", only: str | None = None, device: str = "cpu"
) -> dict[str, str]:
    """Train the shapes text-to-image pipeline and CLIP (or ``only`` one) into ``out_dir``; returns the folders.

    Each stage seeds its own generators, so training one model alone gives the same weights as training both.
    """
    if only is not None and only not in MODELS:
        raise ValueError(f"only must be one of {', '.join(MODELS)}, got {only!r}")
    loaded = train.load_recipe(recipe)
    device = train.check_device(device)
    out = Path(out_dir)
    env = _environment(device)
    tokenizer = train.make_tokenizer(loaded.context_length)
    folders: dict[str, str] = {}
    if only in (None, "pipeline"):
        folders["pipeline"] = str(_train_pipeline(loaded, tokenizer, out / PIPELINE_DIR, env, device))
    if only in (None, "clip"):
        folders["clip"] = str(_train_clip(loaded, tokenizer, out / CLIP_DIR, env, device))
    return folders


def _train_pipeline(loaded: train.Recipe, tokenizer: Any, pipeline_dir: Path, env: dict[str, Any], device: str) -> Path:
    vae, vae_record = train_autoencoder_task(loaded, device)
    parts, t2i_record = train_text_to_image_task(loaded, vae, tokenizer, device)
    sections = {k: loaded.raw[k] for k in ("vae", "text_encoder", "unet", "scheduler")}
    record = {"recipe": loaded.name, "seed": loaded.seed, "environment": env, "autoencoder": vae_record}
    save_pipeline_task(parts, pipeline_dir, {**record, "text_to_image": t2i_record, "config": sections})
    return pipeline_dir


def _train_clip(loaded: train.Recipe, tokenizer: Any, clip_dir: Path, env: dict[str, Any], device: str) -> Path:
    clip_model, clip_record = train_clip_task(loaded, tokenizer, device)
    clip_config = train.clip_model_config(loaded, len(tokenizer))
    clip_sections = {"clip": loaded.raw["clip"]}
    save_clip_task(
        clip_model,
        tokenizer,
        clip_config,
        clip_dir,
        {"recipe": loaded.name, "seed": loaded.seed, "environment": env, "clip": clip_record, "config": clip_sections},
    )
    return clip_dir
