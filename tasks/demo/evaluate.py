"""Measured quality of the demo models, on prompts and images the training never saw, in two held-out sets.

- ``unseen_scenes``: fresh scenes from the training distribution (seeds the training never drew), the usual test
  set. Their colour-shape pairs occur in training; the pictures and layouts do not.
- ``unseen_pairs``: every scene contains a colour-shape pair that training excluded (e.g. a purple star), so the
  figures measure composition, a much harder test.

Measures, per set:

- CLIP caption pick: for each image, the true caption against 8 random captions, and against 8 distractors that
  each change one thing (an object's colour or shape, the background, the relation, or which colour goes with
  which shape).
- Autoencoder round trip: held-out renders encoded and decoded by the pipeline's autoencoder, judged by the checker.
  Generation decodes through the same autoencoder, so this is the ceiling of the next measure.
- Generation: one image per held-out prompt, judged by the pixel-level checker (``tasks.demo.checker``).
- Ranking: on a generated batch (several seeds per prompt), Spearman correlation between each image's CLIP score
  for its prompt and the checker's fraction of satisfied aspects (colours, shapes, relation).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.demo.checker import check
from tasks.demo.shapes import CaptionSpec, Split, caption, perturb, perturbations, render, scenes

DISTRACTORS = 8
EVAL_SEED = 7_000_001
HELD_OUT_SETS: dict[str, Split] = {"unseen_scenes": "train", "unseen_pairs": "heldout"}


@dataclass(frozen=True)
class EvalSettings:
    """How much to evaluate and how to sample."""

    clip_images: int = 500
    generation_prompts: int = 200
    ranking_prompts: int = 40
    ranking_seeds: int = 4
    steps: int = 25
    guidance: float = 5.0
    batch_size: int = 20


@dataclass
class SetReport:
    """The figures for one held-out set."""

    clip_pick_accuracy: float | None = None
    clip_pick_by_kind: dict[str, float] = field(default_factory=dict)
    clip_pick_random_accuracy: float | None = None
    autoencoder_colour_shape: float | None = None
    generation_colour_shape: float | None = None
    generation_full_match: float | None = None
    generation_by_objects: dict[str, float] = field(default_factory=dict)
    ranking_spearman: float | None = None
    ranking_top1_match: float | None = None
    ranking_mean_match: float | None = None


@dataclass
class EvalReport:
    """The figures the evaluation prints and the model cards record: one SetReport per held-out set."""

    sets: dict[str, SetReport] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def distractors(spec: CaptionSpec, rng: np.random.Generator, n: int = DISTRACTORS) -> list[tuple[str, str]]:
    """``n`` distinct (caption, kind of change) pairs, each the true caption with one thing changed, kinds cycling."""
    truth = caption(spec)
    out: dict[str, str] = {}
    kinds = perturbations(spec)
    attempts = 0
    while len(out) < n:
        kind = kinds[attempts % len(kinds)]
        attempts += 1
        text = caption(perturb(spec, rng, kind))
        if text != truth and text not in out:
            out[text] = kind
        if attempts > 50 * n:
            raise RuntimeError(f"cannot find {n} distinct distractors for {truth!r}")
    return list(out.items())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x), dtype=np.float64)
        r[order] = np.arange(len(x), dtype=np.float64)
        for value in np.unique(x):
            tied = x == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(np.asarray(a, dtype=np.float64)), ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


class ClipJudge:
    """An open_clip model loaded from a ``local-dir:`` folder, scoring images against texts by cosine."""

    def __init__(self, folder: Path) -> None:
        import open_clip

        name = f"local-dir:{folder}"
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)

    def images(self, images: list[Any]) -> np.ndarray:
        """Unit image embeddings."""
        import torch

        with torch.inference_mode():
            batch = torch.stack([self.preprocess(im) for im in images])
            return self.model.encode_image(batch, normalize=True).numpy()

    def texts(self, texts: list[str]) -> np.ndarray:
        """Unit text embeddings."""
        import torch

        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(texts), normalize=True).numpy()


def evaluate_clip(judge: ClipJudge, settings: EvalSettings, split: Split, report: SetReport) -> None:
    """Caption pick among one-change distractors and among random captions, on held-out images."""
    rng = np.random.default_rng(EVAL_SEED)
    held = list(scenes(settings.clip_images, EVAL_SEED, split=split))
    others = [caption(s) for s in scenes(settings.clip_images * DISTRACTORS, EVAL_SEED + 1, split="all")]
    hits, random_hits = 0, 0
    by_kind: Counter[str] = Counter()
    kind_total: Counter[str] = Counter()
    for start in range(0, len(held), 50):
        chunk = held[start : start + 50]
        image_vecs = judge.images([render(s) for s in chunk])
        for offset, (scene, vec) in enumerate(zip(chunk, image_vecs, strict=True)):
            spec = scene.spec()
            wrong = distractors(spec, rng)
            sims = judge.texts([caption(spec), *(text for text, _ in wrong)]) @ vec
            hits += int(sims.argmax() == 0)
            for (_, kind), sim in zip(wrong, sims[1:], strict=True):
                kind_total[kind] += 1
                by_kind[kind] += int(sim < sims[0])
            i = start + offset
            randoms = [caption(spec), *others[i * DISTRACTORS : (i + 1) * DISTRACTORS]]
            random_hits += int((judge.texts(randoms) @ vec).argmax() == 0)
    report.clip_pick_accuracy = hits / len(held)
    report.clip_pick_random_accuracy = random_hits / len(held)
    report.clip_pick_by_kind = {k: by_kind[k] / kind_total[k] for k in sorted(kind_total)}


def _generate(pipeline: Any, prompts: list[str], seeds: list[int], settings: EvalSettings) -> list[Any]:
    import torch

    images: list[Any] = []
    for start in range(0, len(prompts), settings.batch_size):
        batch = prompts[start : start + settings.batch_size]
        generators = [torch.Generator().manual_seed(s) for s in seeds[start : start + settings.batch_size]]
        out = pipeline(
            batch,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            generator=generators,
        )
        images.extend(out.images)
    return images


def round_trip(vae: Any, images: list[Any]) -> list[Any]:
    """Each image encoded to its latent mean and decoded back by the autoencoder."""
    import torch
    from PIL import Image

    pixels = np.stack([np.asarray(im.convert("RGB")) for im in images])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
    out = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(o) for o in out]


def evaluate_autoencoder(vae: Any, settings: EvalSettings, split: Split, report: SetReport) -> None:
    """Held-out renders through the autoencoder and back, judged by the checker: what generation can reach at best."""
    held = list(scenes(settings.generation_prompts, EVAL_SEED + 4, split=split))
    decoded = round_trip(vae, [render(s) for s in held])
    results = [check(im, caption(s)) for im, s in zip(decoded, held, strict=True)]
    report.autoencoder_colour_shape = float(np.mean([r.colour_ok and r.shape_ok for r in results]))


def evaluate_generation(pipeline: Any, settings: EvalSettings, split: Split, report: SetReport) -> list[Any]:
    """Held-out prompts, one image each, judged by the pixel checker; returns the images."""
    held = list(scenes(settings.generation_prompts, EVAL_SEED + 2, split=split))
    prompts = [caption(s) for s in held]
    images = _generate(pipeline, prompts, [EVAL_SEED + i for i in range(len(prompts))], settings)
    results = [check(im, p) for im, p in zip(images, prompts, strict=True)]
    report.generation_colour_shape = float(np.mean([r.colour_ok and r.shape_ok for r in results]))
    report.generation_full_match = float(np.mean([r.matches for r in results]))
    for n in (1, 2):
        picked = [r.colour_ok and r.shape_ok for r, s in zip(results, held, strict=True) if len(s.objects) == n]
        if picked:
            report.generation_by_objects[f"{n}_object"] = float(np.mean(picked))
    return images


def evaluate_ranking(pipeline: Any, judge: ClipJudge, settings: EvalSettings, split: Split, report: SetReport) -> None:
    """Spearman correlation of CLIP score and checker score over a generated batch; top-1 vs. mean match rate."""
    held = list(scenes(settings.ranking_prompts, EVAL_SEED + 3, split=split))
    prompts = [caption(s) for s in held for _ in range(settings.ranking_seeds)]
    seeds = [EVAL_SEED + 10_000 + i for i in range(len(prompts))]
    images = _generate(pipeline, prompts, seeds, settings)
    image_vecs = judge.images(images)
    text_vecs = judge.texts(prompts)
    clip = (image_vecs * text_vecs).sum(axis=1)
    results = [check(im, p) for im, p in zip(images, prompts, strict=True)]
    graded = np.array([(r.colour_ok + r.shape_ok + r.relation_ok) / 3 for r in results])
    report.ranking_spearman = spearman(clip, graded)
    k = settings.ranking_seeds
    matches = np.array([r.matches for r in results], dtype=np.float64).reshape(-1, k)
    top = clip.reshape(-1, k).argmax(axis=1)
    report.ranking_top1_match = float(matches[np.arange(len(top)), top].mean())
    report.ranking_mean_match = float(matches.mean())


def evaluate(pipeline_dir: Path, clip_dir: Path, settings: EvalSettings | None = None) -> EvalReport:
    """Run all three measurements on the two model folders."""
    from diffusers import DiffusionPipeline

    settings = settings or EvalSettings()
    report = EvalReport(settings=asdict(settings))
    judge = ClipJudge(clip_dir)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # the loading bar; the evaluation prints its own figures
    try:
        pipeline = DiffusionPipeline.from_pretrained(pipeline_dir)
    finally:
        diffusers_logging.enable_progress_bar()
    pipeline.set_progress_bar_config(disable=True)
    for name, split in HELD_OUT_SETS.items():
        part = report.sets[name] = SetReport()
        start = time.perf_counter()
        evaluate_clip(judge, settings, split, part)
        evaluate_autoencoder(pipeline.vae, settings, split, part)
        evaluate_generation(pipeline, settings, split, part)
        evaluate_ranking(pipeline, judge, settings, split, part)
        report.seconds[name] = round(time.perf_counter() - start, 1)
    return report
