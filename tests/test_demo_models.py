"""The shipped demo models mean something: CLIP prefers the right caption, images follow prompts, knives are caught.

Everything here goes through the production code paths (``embedded:`` references, ``tasks.stages.score``, the safety
screen, the batch flow) with the packaged weights; thresholds sit well below the measured figures in the model cards
so that CPU-to-CPU numeric differences cannot flip them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cli.main import main
from conftest import PACKAGED_DEFAULT_POLICY, work_ledger, write
from policies.model import load_policy
from tasks.demo.checker import check
from tasks.demo.evaluate import round_trip, spearman
from tasks.demo.shapes import caption, perturb, perturbations, render, scenes
from tasks.stages.embedded import DEMO_CLIP, DEMO_PIPELINE, resolve_embedded
from tasks.stages.safety.images import screen_images
from tasks.stages.score import encode_images, encode_texts, load_scorer


@pytest.fixture(scope="module")
def scorer() -> Any:
    return load_scorer(DEMO_CLIP)


@pytest.fixture(scope="module")
def pipeline() -> Any:
    from diffusers import DiffusionPipeline

    folder = resolve_embedded(DEMO_PIPELINE)
    assert isinstance(folder, Path)
    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _save(images: list[Image.Image], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i}.png")
        image.save(paths[-1])
    return paths


def _generate(pipeline: Any, prompts: list[str], seed: int) -> list[Image.Image]:
    import torch

    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    return pipeline(prompts, num_inference_steps=20, guidance_scale=5.0, generator=generators).images


def test_matching_caption_scores_higher_than_mismatched(scorer: Any, tmp_path: Path) -> None:
    held = list(scenes(24, seed=404, split="train"))  # scenes the training never drew
    images = encode_images(scorer, _save([render(s) for s in held], tmp_path), batch_size=8)
    rng = np.random.default_rng(404)
    wins, total = 0, 0
    for scene, image in zip(held, images, strict=True):
        spec = scene.spec()
        true_score = float(encode_texts(scorer, [caption(spec)])[0] @ image)
        for kind in perturbations(spec):
            wrong = float(encode_texts(scorer, [caption(perturb(spec, rng, kind))])[0] @ image)
            wins += true_score > wrong
            total += 1
    assert wins / total >= 0.9, f"true caption preferred in {wins}/{total} one-change comparisons"


@pytest.mark.parametrize(("objects", "at_least"), [(1, 10), (2, 6)])
def test_generated_images_follow_prompts(pipeline: Any, objects: int, at_least: int) -> None:
    prompts = [caption(s) for s in scenes(200, seed=405, split="train") if len(s.objects) == objects][:12]
    results = [check(image, p) for image, p in zip(_generate(pipeline, prompts, 405), prompts, strict=True)]
    matched = sum(r.colour_ok and r.shape_ok for r in results)
    assert matched >= at_least, "\n".join(f"{p}: {r.details}" for p, r in zip(prompts, results, strict=True))


def test_autoencoder_round_trip_keeps_colours_and_shapes(pipeline: Any) -> None:
    held = list(scenes(24, seed=409, split="train"))
    decoded = round_trip(pipeline.vae, [render(s) for s in held])
    results = [check(im, caption(s)) for im, s in zip(decoded, held, strict=True)]
    assert sum(r.colour_ok and r.shape_ok for r in results) >= 18, [r.details for r in results if not r.matches]


def test_clip_ranks_a_generated_batch_like_the_checker(pipeline: Any, scorer: Any, tmp_path: Path) -> None:
    prompts = [caption(s) for s in scenes(40, seed=406, split="train") if len(s.objects) == 2][:6]
    batch = [p for p in prompts for _ in range(4)]  # four candidates per prompt, as a run would make
    images = _generate(pipeline, batch, 406)
    vectors = encode_images(scorer, _save(images, tmp_path), batch_size=8)
    scores = (vectors * encode_texts(scorer, batch)).sum(axis=1)
    graded = np.array([(r.colour_ok + r.shape_ok + r.relation_ok) / 3 for r in map(check, images, batch)])
    assert spearman(scores, graded) > 0.2  # measured 0.38 here, 0.53 over 160 images in the model card
    picked = graded.reshape(-1, 4)[np.arange(len(prompts)), scores.reshape(-1, 4).argmax(axis=1)]
    assert picked.mean() >= graded.mean(), f"CLIP's picks score {picked.mean():.2f}, all images {graded.mean():.2f}"


def test_unsafe_demo_shape_is_flagged_by_the_default_policy(scorer: Any, tmp_path: Path) -> None:
    policy = load_policy(PACKAGED_DEFAULT_POLICY).safety
    assert [r.concept for r in policy.concepts.rules] == ["a knife"]
    with_knife = [s for s in scenes(200, seed=407) if any(o.shape == "knife" for o in s.objects)][:10]
    without = [s for s in scenes(200, seed=408) if all(o.shape != "knife" for o in s.objects)][:10]
    paths = _save([render(s) for s in with_knife + without], tmp_path)
    verdicts = screen_images(paths, encode_images(scorer, paths, 8), lambda t: encode_texts(scorer, t), policy)
    flagged = [v.flagged for v in verdicts]
    assert sum(flagged[:10]) >= 9 and sum(flagged[10:]) <= 1, [v.reasons for v in verdicts]
    assert any("concepts 'a knife' score" in r for r in verdicts[0].reasons + verdicts[1].reasons)


MANIFEST = """\
campaign: {id: demo, name: Demo models}
defaults: {model: embedded:shapes-sd, width: 64, height: 64, steps: 20, guidance: 5.0, candidates: 4, keep_top_k: 1}
prompts:
  - {id: circle, prompt: a blue circle on a yellow background}
  - {id: knife, prompt: a black knife on a yellow background}
"""


def test_batch_flow_on_demo_models_selects_a_matching_image_and_flags_knives(tmp_path: Path) -> None:
    manifest = write(tmp_path / "m.yaml", MANIFEST)
    assert main(["run", str(manifest), "--policy", str(PACKAGED_DEFAULT_POLICY)]) == 0
    ledger = work_ledger(tmp_path)
    run_id = ledger.runs()[0].run_id
    rows = ledger.candidates(run_id)
    knives = [r for r in rows if r.prompt.startswith("a black knife")]
    assert len(knives) == 4 and all(r.state == "screened_flagged" for r in knives), [r.state for r in knives]
    circles = [r for r in rows if r.prompt.startswith("a blue circle")]
    assert all(r.state != "screened_flagged" for r in circles), [r.safety["reasons"] for r in circles]
    chosen = [r for r in circles if r.state == "finalized"]
    assert len(chosen) == 1 and chosen[0].rank == 1
    with Image.open(str(chosen[0].image_path)) as image:
        assert image.size == (64, 64)
        assert check(image, chosen[0].prompt).matches
    assets = ledger.assets(run_id)
    assert len(assets) == 1
    with Image.open(assets[0].final_path) as final:
        assert final.size == (256, 256)  # upscaled for the watermark by the default policy


def test_clip_references_to_open_clip_folders(tmp_path: Path) -> None:
    from tasks.core.errors import ModelError
    from tasks.stages.embedded import SHIPPED_MODELS
    from tasks.stages.score import resolve_clip

    shipped = SHIPPED_MODELS / "shapes-clip"
    assert resolve_clip(f"local-dir:{shipped}").model_name == f"local-dir:{shipped.resolve()}"
    assert resolve_clip(DEMO_CLIP).pretrained is None  # the folder carries its weights
    with pytest.raises(ModelError, match="is not an open_clip model folder"):
        resolve_clip(f"local-dir:{tmp_path}")
    with pytest.raises(ModelError, match="is an embedded CLIP model, not a text-to-image pipeline"):
        from tasks.stages.models import resolve_model

        resolve_model(DEMO_CLIP)


def test_models_eval_prints_both_held_out_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    report_file = tmp_path / "report.json"
    assert main(["models", "eval", "--quick", "--json", str(report_file)]) == 0
    out = capsys.readouterr().out
    assert "unseen_scenes" in out and "unseen_pairs" in out and ">= 80%" in out
    report = json.loads(report_file.read_text())
    assert report["settings"]["clip_images"] == 50
    assert report["sets"]["unseen_scenes"]["clip_pick_random_accuracy"] >= 0.9  # measured 100% at 500 images


def test_missing_shipped_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.core.errors import ModelError
    from tasks.stages import embedded

    monkeypatch.setattr(embedded, "SHIPPED_MODELS", tmp_path)
    with pytest.raises(ModelError, match="embedded model 'embedded:shapes-sd' is missing: .* has no model_index.json"):
        resolve_embedded(DEMO_PIPELINE)
