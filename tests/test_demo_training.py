"""Demo-model training machinery: domain tokenizer, hard negatives, recipes, the training flow, evaluation, cards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks.demo.evaluate import DISTRACTORS, EvalSettings, distractors, evaluate, spearman
from tasks.demo.shapes import (
    COLOURS,
    OPPOSITE,
    PERTURBATIONS,
    CaptionSpec,
    ObjectSpec,
    caption,
    parse_caption,
    perturb,
    perturbations,
    scenes,
)
from tasks.demo.train import RECIPE_FILE, load_recipe, lr_factor
from tasks.demo.vocabulary import DOMAIN_WORDS, EOS_TOKEN, build_vocabulary, write_tokenizer


def test_every_domain_word_is_one_token_and_other_words_still_tokenize(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    write_tokenizer(tmp_path, context_length=24)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    for word in DOMAIN_WORDS:
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    assert len(tokenizer("sneaker", add_special_tokens=False).input_ids) > 1  # byte fallback, no unknown token
    vocab, _ = build_vocabulary()
    assert vocab[EOS_TOKEN] == max(vocab.values())  # open_clip's argmax pooling finds the end token
    ids = tokenizer("an orange knife right of a white star on a purple background").input_ids
    assert len(ids) == 14 and ids[-1] == vocab[EOS_TOKEN]


def test_perturb_changes_exactly_one_thing_and_stays_valid() -> None:
    rng = np.random.default_rng(3)
    for scene in scenes(60, seed=11):
        spec = scene.spec()
        for kind in perturbations(spec):
            changed = perturb(spec, rng, kind)
            text = caption(changed)
            assert text != caption(spec)
            assert parse_caption(text) == changed  # distinct colours, valid grammar
            if kind == "relation":
                assert changed.relation == OPPOSITE[spec.relation]
            if kind == "background":
                assert changed.objects == spec.objects and changed.background != spec.background


def test_perturb_rejects_kinds_that_do_not_apply() -> None:
    one = CaptionSpec((ObjectSpec("circle", "red"),), "blue")
    assert perturbations(one) == ("colour", "shape", "background")
    with pytest.raises(ValueError, match="'relation' does not apply to 'a red circle on a blue background'"):
        perturb(one, np.random.default_rng(0), "relation")
    assert set(PERTURBATIONS) >= set(perturbations(one))


def test_distractors_are_distinct_one_change_captions() -> None:
    rng = np.random.default_rng(5)
    for scene in scenes(30, seed=12, split="heldout"):
        spec = scene.spec()
        options = distractors(spec, rng)
        texts = [t for t, _ in options]
        assert len(set(texts)) == DISTRACTORS and caption(spec) not in texts
        assert {k for _, k in options} <= set(perturbations(spec))
        assert all(parse_caption(t).background in COLOURS for t in texts)


def test_spearman_matches_the_definition() -> None:
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1.0)
    # ties share their average rank: ranks (0.5, 0.5, 2, 3) against (0, 1, 2, 3)
    assert spearman(np.array([1, 1, 2, 3.0]), np.array([1, 2, 3, 4.0])) == pytest.approx(0.9486833)
    assert np.isnan(spearman(np.ones(4), np.arange(4.0)))


def test_recipe_variants_and_unknown_names() -> None:
    full, quick = load_recipe("full"), load_recipe("quick")
    assert quick.unet["steps"] < full.unet["steps"] and quick.unet["config"] == full.unet["config"]
    with pytest.raises(ValueError, match="unknown training recipe 'fast'; valid recipes: full, quick"):
        load_recipe("fast")


def test_targets_are_checked_as_written() -> None:
    from tasks.demo.cards import meets

    assert meets(">= 80%", 0.8) and not meets(">= 80%", 0.799) and not meets(">= 80%", None)
    assert meets("> 0", 0.01) and not meets("> 0", 0.0) and not meets("> 0", -0.135)


def test_learning_rate_schedules() -> None:
    assert lr_factor(0, 100, 10, "constant") == pytest.approx(0.1) and lr_factor(9, 100, 10, "cosine") == 1.0
    assert lr_factor(99, 100, 10, "constant") == 1.0
    assert lr_factor(10, 100, 10, "cosine") == 1.0 and lr_factor(100, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.55)


def test_unknown_learning_rate_schedule_is_refused_before_training(tmp_path: Path) -> None:
    recipe = yaml.safe_load(RECIPE_FILE.read_text(encoding="utf-8"))
    recipe["unet"]["lr_schedule"] = "linear"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear' in unet; valid schedules: cosine, constant"):
        load_recipe(path=path)


@pytest.fixture(scope="module")
def quick_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both demo models trained with the quick recipe (seconds), through the real Prefect flow."""
    from flows.train_demo import train_demo_models_flow

    out = tmp_path_factory.mktemp("trained")
    folders = train_demo_models_flow(out_dir=str(out), recipe="quick")
    assert folders == {"pipeline": str(out / "shapes-sd"), "clip": str(out / "shapes-clip")}
    return out


def test_training_flow_writes_standard_loadable_folders(quick_models: Path) -> None:
    import open_clip
    import torch
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(quick_models / "shapes-sd")
    assert isinstance(pipeline, StableDiffusionPipeline)
    image = pipeline("a red circle on a blue background", num_inference_steps=2, output_type="pil").images[0]
    assert image.size == (64, 64)
    name = f"local-dir:{quick_models / 'shapes-clip'}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokens = open_clip.get_tokenizer(name)(["a red circle on a blue background"])
    with torch.no_grad():
        assert model.encode_image(preprocess(image)[None]).shape == model.encode_text(tokens).shape
    record = json.loads((quick_models / "shapes-sd" / "training.json").read_text())
    assert record["recipe"] == "quick" and record["text_to_image"]["steps"] == load_recipe("quick").unet["steps"]


def test_training_is_reproducible_one_model_at_a_time(quick_models: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from flows.train_demo import train_demo_models_flow

    assert train_demo_models_flow(out_dir=str(tmp_path), recipe="quick", only="clip") == {
        "clip": str(tmp_path / "shapes-clip")
    }
    train_demo_models_flow(out_dir=str(tmp_path), recipe="quick", only="pipeline")
    for rel in ("shapes-sd/unet/diffusion_pytorch_model.safetensors", "shapes-clip/open_clip_model.safetensors"):
        first, second = load_file(quick_models / rel), load_file(tmp_path / rel)
        assert first.keys() == second.keys()
        assert all(bool((first[k] == second[k]).all()) for k in first), rel


def test_evaluation_and_cards_on_quick_models(quick_models: Path) -> None:
    from tasks.demo.cards import write_cards

    settings = EvalSettings(clip_images=10, generation_prompts=4, ranking_prompts=2, ranking_seeds=2, steps=2)
    report = evaluate(quick_models / "shapes-sd", quick_models / "shapes-clip", settings).as_dict()
    assert list(report["sets"]) == ["unseen_scenes", "unseen_pairs"]
    for part in report["sets"].values():
        for key in (
            "clip_pick_accuracy",
            "clip_pick_random_accuracy",
            "autoencoder_colour_shape",
            "generation_colour_shape",
            "ranking_top1_match",
        ):
            assert 0.0 <= part[key] <= 1.0
    write_cards(quick_models / "shapes-sd", quick_models / "shapes-clip", report)
    card = (quick_models / "shapes-sd" / "README.md").read_text()
    assert "recipe `quick`" in card and "## Licence" in card and "| >= 80% |" in card
    pairs = report["sets"]["unseen_pairs"]
    assert f"| {100 * report['sets']['unseen_scenes']['generation_colour_shape']:.1f}% | " in card
    clip_card = (quick_models / "shapes-clip" / "README.md").read_text()
    assert f"{100 * pairs['clip_pick_accuracy']:.1f}%" in clip_card
    assert (quick_models / "shapes-clip" / "evaluation.json").read_text() == json.dumps(report, indent=2) + "\n"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["models", "train", "--recipe", "fast"], "unknown training recipe 'fast'; valid recipes: full, quick"),
        (["models", "train", "--threads", "0"], "--threads must be at least 1, got 0"),
        (["models", "train", "--device", "gpu"], "unknown device 'gpu'"),
        (
            ["models", "train", "--device", "meta"],
            "device 'meta' is not supported for training; use cpu, cuda[:N] or mps",
        ),
        (["models", "eval", "--models", "{tmp}"], "has no model_index.json; it is not a trained shapes-sd folder"),
        (["models", "eval", "--quick", "--write-cards"], "--write-cards needs the full evaluation; drop --quick"),
    ],
)
def test_models_commands_name_the_problem(
    argv: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if args[1] == "train":
        args += ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_models_train_refuses_a_device_this_machine_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from cli.main import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["models", "train", "--device", "cuda:1", "--out", str(tmp_path / "out")]) == 2
    assert "device 'cuda:1' is not available: this torch build sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_models_train_refuses_a_non_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import main

    (tmp_path / "shapes-clip").mkdir()
    (tmp_path / "shapes-clip" / "keep.txt").write_text("mine")
    assert main(["models", "train", "--recipe", "quick", "--out", str(tmp_path)]) == 2
    assert "shapes-clip is not empty; give another --out (nothing was overwritten)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.txt", "shapes-clip"]
