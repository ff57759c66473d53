"""Text-to-image generation with any diffusers pipeline: loaded once per process, batched, one generator per seed."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.cache import load_once
from tasks.core.errors import ModelError
from tasks.core.files import sweep_temp_files, write_atomic
from tasks.core.quiet import quiet_diffusers
from tasks.core.schedulers import get_scheduler_preset
from tasks.stages.batch_invariance import make_batch_invariant
from tasks.stages.models import ModelSource
from tasks.storage.ledger import GeneratedImage
from tasks.storage.workdir import candidate_image_path

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeChoice:
    """Device and dtype a pipeline runs with."""

    device: str
    dtype: str
    batch_invariant: bool = True


@dataclass(frozen=True)
class CandidateSpec:
    """Everything needed to generate one candidate."""

    candidate_id: str
    model_ref: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    seed: int

    @classmethod
    def from_record(cls, row: Any) -> CandidateSpec:
        """The spec of a candidate recorded in the ledger."""
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    def batch_key(self) -> tuple[Any, ...]:
        """Candidates with equal keys can share one pipeline call."""
        return (
            self.model_ref,
            self.prompt,
            self.negative_prompt,
            self.width,
            self.height,
            self.steps,
            self.guidance,
            self.scheduler,
        )


@dataclass
class LoadedPipeline:
    """A loaded diffusers pipeline and what it was loaded from."""

    pipeline: Any
    source: ModelSource
    runtime: RuntimeChoice
    kind: str
    base_scheduler_config: Any
    lock: threading.Lock


def choose_runtime(device: str = "auto", dtype: str = "auto", batch_invariant: str = "auto") -> RuntimeChoice:
    """Pick device and dtype: CUDA with bf16 (fp16 where bf16 is unsupported), else CPU fp32; explicit values win.

    Batch invariance (see tasks/stages/batch_invariance.py) is on by default on the CPU, where it costs little, and
    off on accelerators, where batching the denoiser is where the throughput comes from.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("policy asks for device 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
    if dtype == "auto":
        if device == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif device == "mps":
            dtype = "float16"
        else:
            dtype = "float32"
    invariant = device == "cpu" if batch_invariant == "auto" else batch_invariant == "on"
    return RuntimeChoice(device=device, dtype=dtype, batch_invariant=invariant)


@load_once(key=lambda source, runtime: (source.location, runtime.device, runtime.dtype, runtime.batch_invariant))
def load_pipeline(source: ModelSource, runtime: RuntimeChoice) -> LoadedPipeline:
    """Load (once per process) a text-to-image pipeline from a folder or model id."""
    import torch
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    quiet_diffusers()
    kwargs: dict[str, Any] = {"dtype": getattr(torch, runtime.dtype)}
    if source.revision and not source.local:
        kwargs["revision"] = source.revision
    if source.local:
        kwargs["local_files_only"] = True
    try:
        try:
            pipeline = AutoPipelineForText2Image.from_pretrained(source.location, **kwargs)
        except ValueError:
            # AutoPipeline only knows registered families; any text-to-image DiffusionPipeline still works.
            pipeline = DiffusionPipeline.from_pretrained(source.location, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model {source.ref!r} from {source.location}: {exc}") from None
    pipeline = pipeline.to(runtime.device)
    pipeline.set_progress_bar_config(disable=True)
    if runtime.batch_invariant:
        make_batch_invariant(pipeline)
    return LoadedPipeline(
        pipeline=pipeline,
        source=source,
        runtime=runtime,
        kind=type(pipeline).__name__,
        base_scheduler_config=pipeline.scheduler.config,
        lock=threading.Lock(),
    )


def pipeline_kind(source: ModelSource) -> str:
    """The pipeline class a folder declares (model_index.json), without loading weights."""
    import json

    index = Path(source.location) / "model_index.json"
    if source.local and index.is_file():
        return str(json.loads(index.read_text()).get("_class_name", "DiffusionPipeline"))
    return "DiffusionPipeline"


def _set_scheduler(loaded: LoadedPipeline, name: str) -> None:
    import diffusers

    preset = get_scheduler_preset(name)
    class_name = preset.class_name or loaded.base_scheduler_config["_class_name"]
    cls = getattr(diffusers, class_name)
    loaded.pipeline.scheduler = cls.from_config(loaded.base_scheduler_config, **preset.config)


def prompt_token_overflow(loaded: LoadedPipeline, prompt: str) -> int:
    """How many tokens of `prompt` the pipeline's text encoder will drop (0 when it fits)."""
    tokenizer = getattr(loaded.pipeline, "tokenizer", None)
    if tokenizer is None:
        return 0
    ids = tokenizer(prompt, truncation=False, add_special_tokens=True)["input_ids"]
    return max(0, len(ids) - tokenizer.model_max_length)


def run_pipeline(loaded: LoadedPipeline, specs: Sequence[CandidateSpec]) -> list[Image.Image]:
    """Generate one image per spec in a single pipeline call; all specs must share a batch key."""
    import torch

    first = specs[0]
    if any(spec.batch_key() != first.batch_key() for spec in specs):
        raise ValueError("run_pipeline needs specs that differ only by seed")
    # One CPU generator per candidate: the initial noise of a candidate depends only on its seed,
    # never on the batch it happens to share or on the device.
    generators = [torch.Generator(device="cpu").manual_seed(spec.seed) for spec in specs]
    with loaded.lock, torch.inference_mode(), warnings.catch_warnings():
        # diffusers' sigma schedules call np.array on tensors, which numpy 2 flags; harmless and not ours to fix.
        warnings.filterwarnings(
            "ignore", message=r".*__array__ implementation doesn't accept a copy keyword", category=DeprecationWarning
        )
        _set_scheduler(loaded, first.scheduler)
        result = loaded.pipeline(
            prompt=first.prompt,
            negative_prompt=first.negative_prompt or None,
            width=first.width,
            height=first.height,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            num_images_per_prompt=len(specs),
            generator=generators,
            output_type="pil",
        )
    return list(result.images)


def pixel_sha256(image: Image.Image) -> str:
    """sha256 of an image's size, mode and raw pixels: independent of the file encoder."""
    header = f"{image.mode}:{image.width}x{image.height}:".encode()
    return hashlib.sha256(header + image.tobytes()).hexdigest()


def encode_png(image: Image.Image) -> bytes:
    """A candidate image as PNG: one encoder for every engine, so local and cluster runs match byte for byte."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class RenderedCandidate:
    """A rendered candidate before it is stored: its PNG file, pixel digest and how it was made."""

    candidate_id: str
    png: bytes
    pixel_sha256: str
    generation: dict[str, Any]


def render_batches(
    loaded: LoadedPipeline, specs: Sequence[CandidateSpec], batch_size: int
) -> Iterator[list[RenderedCandidate]]:
    """Render candidates one pipeline call at a time, batching those that differ only by seed."""
    import diffusers
    import torch

    groups: dict[tuple[Any, ...], list[CandidateSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.batch_key(), []).append(spec)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            began = time.perf_counter()
            images = run_pipeline(loaded, batch)
            seconds = (time.perf_counter() - began) / len(batch)
            yield [
                RenderedCandidate(
                    candidate_id=spec.candidate_id,
                    png=encode_png(image),
                    pixel_sha256=pixel_sha256(image),
                    generation={
                        "device": loaded.runtime.device,
                        "dtype": loaded.runtime.dtype,
                        "batch_invariant": loaded.runtime.batch_invariant,
                        "batch_size": len(batch),
                        "seconds_per_image": round(seconds, 4),
                        "diffusers": diffusers.__version__,
                        "torch": torch.__version__,
                    },
                )
                for spec, image in zip(batch, images, strict=True)
            ]


def store_rendered(rendered: Sequence[RenderedCandidate], image_store: Path) -> list[GeneratedImage]:
    """Write rendered candidates into the content-addressed store (never a partial file) and describe them."""
    results: list[GeneratedImage] = []
    swept: set[Path] = set()
    for candidate in rendered:
        path = candidate_image_path(image_store, candidate.candidate_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent not in swept:  # what a killed generation left in this shard of the store
            swept.add(path.parent)
            sweep_temp_files(path.parent)
        write_atomic(path, candidate.png)
        results.append(
            GeneratedImage(
                candidate_id=candidate.candidate_id,
                image_path=str(path),
                image_sha256=hashlib.sha256(candidate.png).hexdigest(),
                pixel_sha256=candidate.pixel_sha256,
                generation=candidate.generation,
            )
        )
    return results


def generate_candidates(
    loaded: LoadedPipeline,
    specs: Sequence[CandidateSpec],
    image_store: Path,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[GeneratedImage]:
    """Generate, save and describe candidates in this process, one pipeline call at a time."""
    results: list[GeneratedImage] = []
    for batch in render_batches(loaded, specs, batch_size):
        results += store_rendered(batch, image_store)
        if on_batch is not None:
            on_batch(len(batch))
    return results
