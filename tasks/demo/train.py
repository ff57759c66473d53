"""Training the demo models on the synthetic shapes domain: a KL autoencoder, a text-conditioned UNet, and a CLIP.

Every batch is rendered on the fly from a seeded scene stream (rendering costs ~0.1 ms an image), so no dataset is
stored and no two steps see the same pictures. Only the train split is used: held-out colour-shape pairs stay
unseen. Each stage is a plain function taking a recipe and a seed; ``flows/train_demo.py`` puts them in order.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from tasks.demo.shapes import Scene, caption, perturb, render, sample_scene, split_of
from tasks.demo.vocabulary import write_tokenizer

RECIPE_FILE = Path(__file__).with_name("data") / "recipe.yaml"
# The image normalisation the CLIP's preprocessing applies (OpenAI CLIP's), so training sees what scoring sees.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Progress = Callable[[int, int, dict[str, float]], None]
_SECTIONS = ("vae", "text_encoder", "unet", "scheduler", "clip")
LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Recipe:
    """The parsed recipe file: seed, image size, context length and one section per model."""

    seed: int
    image_size: int
    context_length: int
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    unet: dict[str, Any]
    scheduler: dict[str, Any]
    clip: dict[str, Any]
    name: str = "full"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def load_recipe(variant: str = "full", path: Path = RECIPE_FILE) -> Recipe:
    """The training recipe; ``quick`` applies the file's short-run overrides. Unknown variants list the valid ones."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    variants = ("full", *(k for k, v in raw.items() if isinstance(v, dict) and k not in _SECTIONS))
    if variant not in variants:
        raise ValueError(f"unknown training recipe {variant!r}; valid recipes: {', '.join(variants)}")
    merged = copy.deepcopy(raw)
    if variant != "full":
        for section, overrides in raw[variant].items():
            merged[section].update(overrides)
    for section in ("vae", "unet", "clip"):
        kind = merged[section].setdefault("lr_schedule", "cosine")
        if kind not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {kind!r} in {section}; valid schedules: {', '.join(LR_SCHEDULES)}")
    return Recipe(
        seed=int(merged["seed"]),
        image_size=int(merged["image_size"]),
        context_length=int(merged["context_length"]),
        name=variant,
        raw=merged,
        **{s: merged[s] for s in _SECTIONS},
    )


# ---------------------------------------------------------------------------------------------------------------
# Data


class SceneStream:
    """Seeded batches of train-split scenes, rendered as float tensors in [0, 1] with their captions."""

    def __init__(self, seed: int, size: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.size = size

    def scenes(self, n: int) -> list[Scene]:
        """The next ``n`` train-split scenes."""
        out: list[Scene] = []
        while len(out) < n:
            scene = sample_scene(self.rng)
            if split_of(scene) == "train":
                out.append(scene)
        return out

    def batch(self, n: int) -> tuple[torch.Tensor, list[Scene]]:
        """The next ``n`` scenes rendered as an (n, 3, size, size) float tensor in [0, 1]."""
        scenes = self.scenes(n)
        pixels = np.stack([np.asarray(render(s, self.size)) for s in scenes])
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0), scenes


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up, then constant or cosine down to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(params: Any, section: dict[str, Any], steps: int, warmup: int) -> tuple[torch.optim.Optimizer, Any]:
    lr, kind = float(section["learning_rate"]), section["lr_schedule"]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup, kind))
    return opt, schedule


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)


# ---------------------------------------------------------------------------------------------------------------
# Autoencoder


def train_vae(recipe: Recipe, progress: Progress | None = None, device: str = "cpu") -> Any:
    """Train the KL autoencoder (pixel L1 + MSE, a tiny KL term) and set its latent scaling factor."""
    from diffusers import AutoencoderKL

    cfg = recipe.vae
    torch.manual_seed(recipe.seed + 1)
    vae = AutoencoderKL(**cfg["config"]).to(device)
    stream = SceneStream(recipe.seed + 1, recipe.image_size)
    steps = int(cfg["steps"])
    opt, schedule = _optimizer(vae.parameters(), cfg, steps, max(1, steps // 20))
    vae.train()
    for step in range(steps):
        x, _ = stream.batch(int(cfg["batch_size"]))
        x = x.to(device) * 2 - 1
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec_loss = F.mse_loss(recon, x) + F.l1_loss(recon, x)
        loss = rec_loss + float(cfg["kl_weight"]) * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        schedule.step()
        if progress:
            progress(step + 1, steps, {"loss": rec_loss.item()})
    vae = vae.to("cpu").eval()
    with torch.no_grad():
        x, _ = SceneStream(recipe.seed + 2, recipe.image_size).batch(256)
        latents = vae.encode(x * 2 - 1).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae


# ---------------------------------------------------------------------------------------------------------------
# Text-to-image


def make_tokenizer(context_length: int) -> Any:
    """The domain tokenizer as a CLIPTokenizer (built in a scratch folder; savers write the files they need)."""
    import tempfile

    from transformers import CLIPTokenizer

    from tasks.demo.vocabulary import write_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        write_tokenizer(Path(scratch), context_length)
        return CLIPTokenizer.from_pretrained(scratch)


def _tokens(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def _scheduler(recipe: Recipe) -> Any:
    import diffusers

    cls = getattr(diffusers, recipe.scheduler["class"])
    return cls.from_config(recipe.scheduler["config"])


@dataclass
class TextToImage:
    """The trained parts of the text-to-image pipeline."""

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler: Any


def train_text_to_image(
    recipe: Recipe, vae: Any, tokenizer: Any, progress: Progress | None = None, device: str = "cpu"
) -> TextToImage:
    """Train the text encoder and UNet together on frozen-VAE latents: epsilon loss, min-SNR weights, EMA weights."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = recipe.unet
    torch.manual_seed(recipe.seed + 3)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=recipe.context_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **recipe.text_encoder,
        )
    ).to(device)
    unet = UNet2DConditionModel(cross_attention_dim=recipe.text_encoder["hidden_size"], **cfg["config"]).to(device)
    noise_schedule = DDPMScheduler.from_config(recipe.scheduler["config"])
    alphas = noise_schedule.alphas_cumprod
    snr = (alphas / (1 - alphas)).to(device)
    params = [*unet.parameters(), *text_encoder.parameters()]
    steps = int(cfg["steps"])
    opt, schedule = _optimizer(params, cfg, steps, int(cfg["warmup_steps"]))
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    stream = SceneStream(recipe.seed + 3, recipe.image_size)
    generator = torch.Generator().manual_seed(recipe.seed + 3)
    vae.to(device).eval().requires_grad_(False)
    scaling = float(vae.config.scaling_factor)
    batch_size = int(cfg["batch_size"])
    unet.train()
    text_encoder.train()
    for step in range(steps):
        x, scenes = stream.batch(batch_size)
        with torch.no_grad():
            latents = vae.encode(x.to(device) * 2 - 1).latent_dist.mean * scaling
        drop = torch.rand(batch_size, generator=generator) < float(cfg["uncond_probability"])
        texts = ["" if d else caption(s) for d, s in zip(drop.tolist(), scenes, strict=True)]
        hidden = text_encoder(_tokens(tokenizer, texts).to(device)).last_hidden_state
        # Drawn on the CPU generator whatever the device, so every device sees the same noise and timesteps.
        noise = torch.randn(latents.shape, generator=generator).to(device)
        t = torch.randint(0, len(alphas), (batch_size,), generator=generator).to(device)
        noisy = noise_schedule.add_noise(latents, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=hidden).sample
        weight = torch.clamp(snr[t], max=float(cfg["min_snr_gamma"])) / snr[t]
        loss = (weight * F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        decay = min(float(cfg["ema_decay"]), (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_text, text_encoder, decay)
        if progress:
            progress(step + 1, steps, {"loss": loss.item()})
    return TextToImage(tokenizer, ema_text.to("cpu"), ema_unet.to("cpu"), vae.to("cpu"), _scheduler(recipe))


def save_pipeline(parts: TextToImage, folder: Path) -> None:
    """Save as a standard StableDiffusionPipeline folder (no safety checker: AssetMint's own filters run instead)."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=parts.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    # vocab.json and merges.txt too, not only tokenizer.json: what older transformers releases load.
    write_tokenizer(folder / "tokenizer", parts.tokenizer.model_max_length)


# ---------------------------------------------------------------------------------------------------------------
# CLIP


def partial_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A short text about one object of the scene: 'a red knife' or 'a knife'."""
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    words = [obj.colour, obj.shape] if rng.random() < 0.5 else [obj.shape]
    return f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}"


def clip_model_config(recipe: Recipe, vocab_size: int) -> dict[str, Any]:
    """The open_clip model config: the recipe's architecture with the domain tokenizer's size and context length."""
    cfg = copy.deepcopy(recipe.clip["config"])
    # Any non-empty hf_tokenizer_name makes open_clip use a transformers tokenizer; loaded as 'local-dir:', it reads
    # the tokenizer files saved in the model folder, so the name itself is never looked up.
    cfg["text_cfg"].update(
        vocab_size=vocab_size, context_length=recipe.context_length, hf_tokenizer_name="assetmint/shapes-clip"
    )
    return cfg


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _degrade(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mild blur and noise on some images, so scores hold up on a generator's softer, noisier pictures."""
    n = x.shape[0]
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = (torch.rand(n, 1, 1, 1, generator=generator) < 0.3).float()
    x = mix * blurred + (1 - mix) * x
    sigma = torch.rand(n, 1, 1, 1, generator=generator) * 0.04
    return (x + sigma * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def train_clip(recipe: Recipe, tokenizer: Any, progress: Progress | None = None, device: str = "cpu") -> Any:
    """Contrastive training with in-batch negatives plus NegCLIP-style hard negatives (one attribute changed)."""
    import open_clip

    cfg = recipe.clip
    torch.manual_seed(recipe.seed + 4)
    model = open_clip.CLIP(**clip_model_config(recipe, len(tokenizer))).to(device)
    stream = SceneStream(recipe.seed + 4, recipe.image_size)
    rng = np.random.default_rng(recipe.seed + 4)
    generator = torch.Generator().manual_seed(recipe.seed + 4)
    steps, batch_size = int(cfg["steps"]), int(cfg["batch_size"])
    hard, partial_p = int(cfg["hard_negatives"]), float(cfg["partial_caption_probability"])
    opt, schedule = _optimizer(model.parameters(), cfg, steps, int(cfg["warmup_steps"]))
    model.train()
    for step in range(steps):
        x, scenes = stream.batch(batch_size)
        positives, negatives = [], []
        for scene in scenes:
            positives.append(partial_caption(scene, rng) if rng.random() < partial_p else caption(scene))
            negatives += [caption(perturb(scene.spec(), rng)) for _ in range(hard)]
        images = model.encode_image(_normalise(_degrade(x, generator)).to(device), normalize=True)
        texts = model.encode_text(_tokens(tokenizer, positives + negatives).to(device), normalize=True)
        logits = model.logit_scale.exp() * images @ texts.T
        target = torch.arange(batch_size, device=device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :batch_size].T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if progress:
            progress(step + 1, steps, {"loss": loss.item()})
    return model.to("cpu").eval()


def save_clip(model: Any, tokenizer: Any, config: dict[str, Any], folder: Path) -> None:
    """Save as an open_clip ``local-dir:`` folder: open_clip_config.json, safetensors weights, tokenizer files."""
    import json

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    preprocess = {"mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
    payload = {"model_cfg": config, "preprocess_cfg": preprocess}
    (folder / "open_clip_config.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    write_tokenizer(folder, tokenizer.model_max_length)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` and return its result with the wall seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def check_device(name: str) -> str:
    """``name`` if torch can train on that device here; otherwise a ValueError that says why."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} is not available: this torch build sees no CUDA GPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} is not available: this torch build sees no Apple GPU")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not supported for training; use cpu, cuda[:N] or mps")
    return name
