"""Embedded models, usable with no network: the trained demo pair shipped with the package, and two tiny random ones.

``embedded:shapes-sd`` and ``embedded:shapes-clip`` are a text-to-image pipeline and a CLIP trained on the synthetic
shapes domain (``tasks/demo``; model cards in their folders); they are the defaults, so a first run shows
prompt-following images ranked by a CLIP that means something. ``embedded:tiny-sd`` and ``embedded:tiny-clip`` are
built on first use with random weights: their pictures and scores mean nothing, but they take any image size and
give the exact code path of a real model (``DiffusionPipeline.from_pretrained(folder)``,
``open_clip.create_model_and_transforms(name, pretrained=checkpoint)``) at the lowest cost, which is what tests of
the machinery want. Their weights are a pure function of SEED and each parameter's name, drawn with an integer
generator, so every machine builds the same bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import demo
from tasks.core.errors import ModelError
from tasks.core.paths import cache_dir

if TYPE_CHECKING:
    import torch

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_PIPELINE = "embedded:tiny-sd"
EMBEDDED_CLIP = "embedded:tiny-clip"
CLIP_MODEL_NAME = "assetmint-tiny-clip"
DEMO_PIPELINE = "embedded:shapes-sd"
DEMO_CLIP = "embedded:shapes-clip"
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "demo" / "models"
SHIPPED: dict[str, str] = {DEMO_PIPELINE: demo.PIPELINE_DIR, DEMO_CLIP: demo.CLIP_DIR}
RECORD_FILES = frozenset({demo.TRAINING_RECORD, demo.EVALUATION_RECORD})  # a shipped model's records, not its weights

# Bump when anything below changes what gets built: existing builds with another version are rebuilt.
FORMAT_VERSION = 1
MARKER_NAME = "assetmint-model.json"
SEED = 20261126

PIPELINE_DIR = "tiny-sd"
CLIP_DIR = "tiny-clip"
CLIP_CHECKPOINT_NAME = "open_clip_pytorch_model.bin"  # a name open_clip's local-dir: loader also finds

CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
TEXT_HIDDEN = 32

# Cross-attention only at the 16x16 level: self-attention over 64x64 or 32x32 latents costs 4-40x the whole rest
# of the UNet on a CPU, and the point here is the code path, not quality.
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,  # 64 latents x 8 = 512 px default size, like SD 1.x
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (16, 32, 64),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "cross_attention_dim": TEXT_HIDDEN,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}

# Four blocks give SD's 8x spatial factor; the channels are tiny because the last blocks run at full resolution.
VAE_CONFIG: dict[str, Any] = {
    "sample_size": 512,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (4, 8, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "norm_num_groups": 4,
}

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 64,
    "projection_dim": TEXT_HIDDEN,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": CONTEXT_LENGTH,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

# Stable Diffusion 1.5's scheduler_config.json as published, PNDM included. clip_sample is not a PNDM argument but
# rides along in the saved config, as in SD 1.5, so that a scheduler swapped in with from_config (DDIM clips by
# default) behaves as it would on the real model; skip_prk_steps keeps PNDM usable at 2-4 steps.
SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "mlp_ratio": 2.0, "patch_size": 8},
    "text_cfg": {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": VOCAB_SIZE,
        "width": 32,
        "heads": 4,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}

# log(1 / 0.07), CLIP's initial temperature, written out so no libm rounding enters the weights.
_LOGIT_SCALE_INIT = 2.6592600369327779
# Brings the decoder's output to roughly +-0.5, so pixels stay mid-range instead of clipping to 0 or 255 (a
# watermark embedded into clipped pixels would not survive).
_VAE_OUTPUT_GAIN = 0.5


@dataclass(frozen=True)
class EmbeddedClip:
    """Where the embedded open_clip model lives and the name its config is registered under."""

    model_name: str
    checkpoint: Path | None
    config_dir: Path


def is_embedded(ref: str) -> bool:
    """True when a model reference names an embedded model (``embedded:...``)."""
    return ref.startswith(EMBEDDED_PREFIX)


def ensure_embedded_pipeline(root: Path | None = None) -> Path:
    """Build the tiny diffusers pipeline folder if it is missing or outdated, and return it."""
    return _ensure(_models_root(root), PIPELINE_DIR, EMBEDDED_PIPELINE, _build_pipeline, force=False)


def ensure_embedded_clip(root: Path | None = None) -> EmbeddedClip:
    """Build the tiny open_clip checkpoint if it is missing or outdated, register its config, and return it."""
    return _clip_result(_ensure(_models_root(root), CLIP_DIR, EMBEDDED_CLIP, _build_clip, force=False))


def shipped_folder(ref: str) -> Path:
    """The packaged folder of a trained demo model; a clear error when the package was installed without it."""
    try:
        return demo.model_folder(SHIPPED_MODELS, SHIPPED[ref])
    except ModelError as exc:
        raise ModelError(f"embedded model {ref!r} is missing: {exc} Reinstall AssetMint.") from None


def check_embedded(ref: str, kind: str) -> None:
    """Refuse, building nothing, an ``embedded:`` reference that is unknown or not a `kind` ('pipeline' or 'clip')."""
    pipelines, clips = (EMBEDDED_PIPELINE, DEMO_PIPELINE), (EMBEDDED_CLIP, DEMO_CLIP)
    if ref in (pipelines if kind == "pipeline" else clips):
        return
    if ref in pipelines:
        raise ModelError(f"{ref!r} is an embedded text-to-image pipeline, not a CLIP model.")
    if ref in clips:
        raise ModelError(f"{ref!r} is an embedded CLIP model, not a text-to-image pipeline.")
    valid = ", ".join(sorted((*pipelines, *clips)))
    raise ModelError(f"unknown embedded model {ref!r}; valid embedded models are: {valid}")


def resolve_embedded(ref: str) -> Path | EmbeddedClip:
    """Return the pipeline folder or the open_clip model for an ``embedded:`` reference, building it if needed."""
    if ref == EMBEDDED_PIPELINE:
        return ensure_embedded_pipeline()
    if ref == EMBEDDED_CLIP:
        return ensure_embedded_clip()
    if ref == DEMO_PIPELINE:
        return shipped_folder(ref)
    if ref == DEMO_CLIP:
        folder = shipped_folder(ref)
        return EmbeddedClip(model_name=f"local-dir:{folder}", checkpoint=None, config_dir=folder)
    valid = ", ".join(sorted((EMBEDDED_PIPELINE, EMBEDDED_CLIP, *SHIPPED)))
    if not is_embedded(ref):
        raise ModelError(f"{ref!r} is not an embedded model reference; valid embedded models are: {valid}")
    raise ModelError(f"unknown embedded model {ref!r}; valid embedded models are: {valid}")


def build_all(root: Path | None = None, force: bool = False) -> dict[str, Path]:
    """Build every embedded model (rebuild when force) and return each reference's folder."""
    base = _models_root(root)
    pipeline = _ensure(base, PIPELINE_DIR, EMBEDDED_PIPELINE, _build_pipeline, force=force)
    clip = _clip_result(_ensure(base, CLIP_DIR, EMBEDDED_CLIP, _build_clip, force=force))
    return {EMBEDDED_PIPELINE: pipeline, EMBEDDED_CLIP: clip.config_dir}


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The build marker of an embedded model folder (format, reference, weights digest), or None if absent."""
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------------------------
# Cache folder handling


def _models_root(root: Path | None) -> Path:
    return Path(root) if root is not None else cache_dir() / "models"


def _is_current(folder: Path, ref: str) -> bool:
    marker = read_marker(folder)
    return marker is not None and marker.get("format") == FORMAT_VERSION and marker.get("ref") == ref


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _ensure(root: Path, dirname: str, ref: str, builder: Callable[[Path], None], *, force: bool) -> Path:
    folder = root / dirname
    if not force and _is_current(folder, ref):
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root / f".{dirname}.lock"):
            # Another process may have finished the same build while this one waited for the lock.
            if not force and _is_current(folder, ref):
                return folder
            for stale in root.glob(f".{dirname}.tmp-*"):  # left by an interrupted build; we hold the lock
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dirname}.tmp-", dir=root))
            try:
                builder(tmp)
                _write_marker(tmp, ref)
                _move_into_place(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except ModelError:
        raise
    except Exception as exc:  # any failure to build is reported as this model's problem, with the cause chained
        raise ModelError(f"cannot build embedded model {ref!r} in {folder}: {exc}") from exc
    return folder


def _move_into_place(tmp: Path, folder: Path) -> None:
    # os.replace cannot overwrite a non-empty directory: move the old build aside first, then drop it.
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.tmp-old-{os.getpid()}")
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_marker(folder: Path, ref: str) -> None:
    files = {
        str(path.relative_to(folder)): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in (".safetensors", ".bin")
    }
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    marker = {"format": FORMAT_VERSION, "ref": ref, "seed": SEED, "weights_sha256": digest, "files": files}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Deterministic weights


def _uniform(shape: tuple[int, ...], std: float, key: str) -> torch.Tensor:
    """Uniform values with the given std, a pure function of (SEED, key): integer PCG64 draws, exact float math."""
    import numpy as np
    import torch

    seed = int.from_bytes(hashlib.sha256(f"{SEED}:{key}".encode()).digest()[:8], "little")
    count = math.prod(shape)
    raw = np.random.PCG64(seed).random_raw(count)
    unit = ((raw >> np.uint64(40)).astype(np.float64) + 0.5) * (2.0 / 2**24) - 1.0  # exactly representable
    values = (unit * (std * math.sqrt(3.0))).astype(np.float32)
    return torch.from_numpy(values.reshape(shape))


def _init_weights(model: torch.nn.Module, namespace: str, gains: dict[str, float] | None = None) -> None:
    """Overwrite every parameter: norms 1, biases 0, embeddings std 0.02, other weights std 1/sqrt(fan_in)."""
    import torch

    gains = gains or {}
    embeddings = {
        f"{module_name}.{param_name}" if module_name else param_name
        for module_name, module in model.named_modules()
        if isinstance(module, torch.nn.Embedding)
        for param_name, _ in module.named_parameters(recurse=False)
    }
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "logit_scale":
                param.fill_(_LOGIT_SCALE_INIT)
                continue
            if param.ndim <= 1 and leaf == "bias":
                param.zero_()
                continue
            if param.ndim <= 1 and leaf == "weight":
                param.fill_(1.0)
                continue
            # Only sqrt and division below: IEEE rounds both exactly, unlike pow or log from the platform's libm.
            if name in embeddings or "embedding" in leaf:  # the latter: open_clip's raw positional/class params
                std = 0.02
            elif leaf in ("proj", "text_projection"):
                std = 1.0 / math.sqrt(param.shape[0])  # open_clip applies these as x @ P: fan_in is the first dim
            else:
                std = 1.0 / math.sqrt(math.prod(param.shape[1:]))
            std *= gains.get(name, 1.0)
            param.copy_(_uniform(tuple(param.shape), std, f"{namespace}/{name}"))


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer files


def clip_bpe_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP's 49408-entry vocabulary and merge list, derived from the BPE merges file open_clip ships."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    # As CLIP does: skip the header line, keep 49152 - 256 bytes - 2 specials merges.
    merges = lines[1 : 49152 - 256 - 2 + 1]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ModelError(f"open_clip's BPE file {default_bpe()} gives {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return vocab, merges


def _write_tokenizer_files(folder: Path, vocab: dict[str, int], merges: list[str]) -> None:
    """vocab.json and merges.txt in the layout of openai/clip-vit-large-patch14 (what older tokenizers load)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Builders


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide transformers' 'Writing model shards' bar during a build; restores the caller's setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _caller_rng_untouched() -> Iterator[None]:
    """Building modules draws from torch's global generator; give the caller's state back afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        yield


def _build_pipeline(folder: Path) -> None:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    tokenizer_dir = folder / "tokenizer"
    _write_tokenizer_files(tokenizer_dir, vocab, merges)
    # Positional file paths: the one call both transformers 5 (vocab, merges) and 4 (vocab_file, merges_file) take.
    tokenizer = CLIPTokenizer(
        str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"), model_max_length=CONTEXT_LENGTH
    )
    with _caller_rng_untouched():
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG))
        unet = UNet2DConditionModel(**UNET_CONFIG)
        vae = AutoencoderKL(**VAE_CONFIG)
    _init_weights(text_encoder, "text_encoder")
    _init_weights(unet, "unet")
    _init_weights(vae, "vae", gains={"decoder.conv_out.weight": _VAE_OUTPUT_GAIN})
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with _quiet_progress_bars():
        pipeline.save_pretrained(folder, safe_serialization=True)
    # transformers 5 saves only tokenizer.json and leaves these alone; transformers 4 rewrites them in its own
    # formatting. Writing them last keeps the folder's bytes the same under either.
    _write_tokenizer_files(tokenizer_dir, vocab, merges)


def _build_clip(folder: Path) -> None:
    import open_clip
    import torch

    with _caller_rng_untouched():
        model = open_clip.CLIP(**CLIP_CONFIG)
    _init_weights(model, "clip")
    torch.save(model.state_dict(), folder / CLIP_CHECKPOINT_NAME)
    config_text = json.dumps(CLIP_CONFIG, indent=2) + "\n"
    (folder / f"{CLIP_MODEL_NAME}.json").write_text(config_text, encoding="utf-8")
    # Lets open_clip's own "local-dir:<folder>" schema load the model as well.
    local_dir_config = {"model_cfg": CLIP_CONFIG, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(local_dir_config, indent=2) + "\n", encoding="utf-8")


def _clip_result(folder: Path) -> EmbeddedClip:
    """Register the folder's config with open_clip unless an identical one already is, and describe the model."""
    import open_clip

    config_file = folder / f"{CLIP_MODEL_NAME}.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"embedded open_clip config {config_file} is unreadable: {exc}") from exc
    if open_clip.get_model_config(CLIP_MODEL_NAME) != config:
        open_clip.add_model_config(config_file)
    return EmbeddedClip(model_name=CLIP_MODEL_NAME, checkpoint=folder / CLIP_CHECKPOINT_NAME, config_dir=folder)
