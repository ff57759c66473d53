"""The synthetic demo domain: deterministic captioned scenes, caption parsing, held-out split and the pixel checker."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tasks.demo.checker import check, detect
from tasks.demo.shapes import (
    COLOURS,
    HELDOUT_PAIRS,
    OPPOSITE,
    PALETTE,
    SHAPES,
    CaptionSpec,
    ObjectSpec,
    Scene,
    SceneObject,
    caption,
    dataset,
    parse_caption,
    render,
    sample_scene,
    scenes,
    split_of,
)

N = 300


@pytest.fixture(scope="module")
def rendered() -> list[tuple[Image.Image, CaptionSpec]]:
    return [(render(s, 64), s.spec()) for s in scenes(N, seed=2024)]


def test_sampling_is_deterministic_and_captions_round_trip() -> None:
    a = [sample_scene(np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    for s in scenes(200, seed=3):
        text = caption(s)
        assert parse_caption(text) == s.spec()
        assert s.background not in {o.colour for o in s.objects}
        assert len({o.colour for o in s.objects}) == len(s.objects)
        assert (len(s.objects) == 2) == (s.relation is not None)
    first = [(np.asarray(im).tobytes(), t) for im, t in dataset(5, seed=11)]
    again = [(np.asarray(im).tobytes(), t) for im, t in dataset(5, seed=11)]
    assert first == again
    assert first != [(np.asarray(im).tobytes(), t) for im, t in dataset(5, seed=12)]


def test_caption_format_and_rendering() -> None:
    spec = parse_caption("a red circle above a blue square on a yellow background")
    assert spec == CaptionSpec((ObjectSpec("circle", "red"), ObjectSpec("square", "blue")), "yellow", "above")
    assert caption(spec) == "a red circle above a blue square on a yellow background"
    assert caption(parse_caption("an orange star on a white background")) == "an orange star on a white background"
    im, text = next(dataset(1, seed=0, size=48))
    assert im.size == (48, 48) and im.mode == "RGB"
    arr = np.asarray(im).reshape(-1, 3)
    palette = {tuple(c) for c in PALETTE.values()}
    assert len({tuple(p) for p in arr} - palette) > 0  # anti-aliased edges exist


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a red circle", "background"),
        ("a pink circle on a white background", "unknown colour 'pink'"),
        ("a red hexagon on a white background", "unknown shape 'hexagon'"),
        ("a red circle on a red background", "equals the background"),
        ("a red circle near a blue square on a white background", "expected 'a <colour> <shape>'"),
        ("a red circle on a teal background", "unknown background colour 'teal'"),
        ("a red circle left of a red star on a white background", "must differ"),
    ],
)
def test_parse_caption_names_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_caption(text)


def test_heldout_split_keeps_pairs_out_of_training() -> None:
    assert HELDOUT_PAIRS
    train_pairs = {(o.colour, o.shape) for s in scenes(400, seed=5, split="train") for o in s.objects}
    assert not train_pairs & HELDOUT_PAIRS
    assert {c for c, _ in train_pairs} == set(COLOURS) and {s for _, s in train_pairs} == set(SHAPES)
    held = list(scenes(50, seed=5, split="heldout"))
    assert all(split_of(s) == "heldout" for s in held)
    assert all(split_of(parse_caption(t)) == "heldout" for _, t in dataset(10, seed=1, size=32, split="heldout"))
    with pytest.raises(ValueError):
        next(dataset(1, seed=0, split="test"))  # type: ignore[arg-type]


def test_checker_accepts_rendered_ground_truth(rendered: list[tuple[Image.Image, CaptionSpec]]) -> None:
    results = [check(im, spec) for im, spec in rendered]
    accuracy = sum(r.matches for r in results) / len(results)
    assert accuracy >= 0.98, [r.details for r in results if not r.matches][:5]


def test_checker_shapes_one_by_one() -> None:
    for shape in SHAPES:
        for colour, bg in (("red", "white"), ("white", "black"), ("yellow", "orange")):
            spec = CaptionSpec((ObjectSpec(shape, colour),), bg)
            scene = sample_scene(np.random.default_rng(0))
            placed = dataclasses.replace(scene.objects[0], shape=shape, colour=colour, box=(0.28, 0.3, 0.72, 0.74))
            im = render(dataclasses.replace(scene, objects=(placed,), background=bg, relation=None))
            assert detect(im)[1][0].shape == shape
            assert check(im, spec).matches


def _mismatches(spec: CaptionSpec, rng: np.random.Generator) -> dict[str, CaptionSpec]:
    objs = list(spec.objects)
    i = int(rng.integers(len(objs)))
    used = {o.colour for o in objs} | {spec.background}
    colour = str(rng.choice([c for c in COLOURS if c not in used]))
    shape = str(rng.choice([s for s in SHAPES if s != objs[i].shape]))
    out = {
        "colour": dataclasses.replace(spec, objects=tuple(_swap(objs, i, colour=colour))),
        "shape": dataclasses.replace(spec, objects=tuple(_swap(objs, i, shape=shape))),
    }
    if spec.relation is not None:
        out["relation"] = dataclasses.replace(spec, relation=OPPOSITE[spec.relation])
    return out


def _swap(objs: list[ObjectSpec], i: int, **change: str) -> list[ObjectSpec]:
    return [dataclasses.replace(o, **change) if j == i else o for j, o in enumerate(objs)]


def test_checker_rejects_mismatched_captions(rendered: list[tuple[Image.Image, CaptionSpec]]) -> None:
    rng = np.random.default_rng(99)
    rejected: dict[str, list[bool]] = {"colour": [], "shape": [], "relation": []}
    for im, spec in rendered:
        for kind, wrong in _mismatches(spec, rng).items():
            result = check(im, wrong)
            rejected[kind].append(not result.matches)
            if kind == "relation" and not result.matches:
                assert not result.relation_ok
    for kind, flags in rejected.items():
        assert len(flags) >= 100
        assert sum(flags) / len(flags) >= 0.95, kind


def test_checker_robust_to_blur_and_noise(rendered: list[tuple[Image.Image, CaptionSpec]]) -> None:
    rng = np.random.default_rng(4)
    ok = 0
    for im, spec in rendered:
        arr = np.asarray(im.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32) + rng.normal(0, 8, (64, 64, 3))
        ok += check(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), spec).matches
    assert ok / len(rendered) >= 0.90


def test_checker_details_explain_a_mismatch() -> None:
    spec = parse_caption("a red circle left of a blue square on a white background")
    scene = Scene(
        (SceneObject("circle", "red", (0.08, 0.35, 0.4, 0.67)), SceneObject("square", "blue", (0.6, 0.35, 0.92, 0.67))),
        "white",
        "left of",
    )
    im = render(scene)
    assert check(im, spec).matches
    swapped = check(im, "a red circle right of a blue square on a white background")
    assert not swapped.matches and swapped.colour_ok and swapped.shape_ok and not swapped.relation_ok
    assert "right of" in swapped.details
    wrong = check(im, "a red star left of a blue square on a white background")
    assert not wrong.shape_ok and "shapes" in wrong.details
    bg = check(im, "a red circle left of a blue square on a black background")
    assert not bg.colour_ok and "background is white" in bg.details
