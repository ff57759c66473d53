"""Seeded synthetic scenes of coloured shapes with captions, for training and checking small demo models.

A scene holds one or two objects (shape, colour, box) on a plain background; with two objects the caption names the
relation of the first to the second ("a red circle above a blue square on a yellow background"). Object colours are
distinct from each other and from the background. ``knife`` is the shape class a demo safety policy treats as unsafe.
Boxes are fractions of the image side, so one scene renders at any size; drawing is done at 4x and box-downsampled.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "knife")
UNSAFE_SHAPES: frozenset[str] = frozenset({"knife"})
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 50, 170),
    "orange": (245, 140, 20),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
SUPERSAMPLE = 4
Split = Literal["train", "heldout", "all"]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ObjectSpec:
    """A captioned object: shape and colour names."""

    shape: str
    colour: str


@dataclass(frozen=True)
class SceneObject(ObjectSpec):
    """A placed object: shape, colour and box ``(x0, y0, x1, y1)`` as fractions of the image side."""

    box: Box = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption says: objects (first is the subject of ``relation``), background colour, relation or None."""

    objects: tuple[ObjectSpec, ...]
    background: str
    relation: str | None = None


@dataclass(frozen=True)
class Scene:
    """A renderable scene: placed objects, background colour and the relation of object 0 to object 1."""

    objects: tuple[SceneObject, ...]
    background: str
    relation: str | None = None

    def spec(self) -> CaptionSpec:
        """The caption-level description of this scene (boxes dropped)."""
        objs = tuple(ObjectSpec(o.shape, o.colour) for o in self.objects)
        return CaptionSpec(objs, self.background, self.relation)


class SceneLike(Protocol):
    """Anything with objects (shape, colour), a background and a relation: a Scene or a CaptionSpec."""

    @property
    def objects(self) -> Sequence[ObjectSpec]: ...
    @property
    def background(self) -> str: ...
    @property
    def relation(self) -> str | None: ...


def _box(cx: float, cy: float, s: float) -> Box:
    return (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw one random scene: one or two objects with distinct colours, a background unlike both, jittered layout."""
    two = bool(rng.random() < 0.5)
    n = 2 if two else 1
    colours = [COLOURS[i] for i in rng.choice(len(COLOURS), size=n + 1, replace=False)]
    shapes = [SHAPES[int(rng.integers(len(SHAPES)))] for _ in range(n)]
    background = colours[-1]
    if not two:
        s = float(rng.uniform(0.38, 0.52))
        cx, cy = (float(v) for v in 0.5 + rng.uniform(-0.1, 0.1, size=2))
        return Scene((SceneObject(shapes[0], colours[0], _box(cx, cy, s)),), background, None)
    relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    sizes = rng.uniform(0.28, 0.36, size=2)
    near = rng.uniform(0.2, 0.28, size=2)  # along the relation axis: object on the low side / high side
    far = 1.0 - near
    cross = 0.5 + rng.uniform(-0.06, 0.06, size=2)
    low_is_first = relation in ("left of", "above")
    along = (near[0], far[1]) if low_is_first else (far[0], near[1])
    horizontal = relation in ("left of", "right of")
    boxes = []
    for i in range(2):
        cx, cy = (along[i], cross[i]) if horizontal else (cross[i], along[i])
        boxes.append(_box(float(cx), float(cy), float(sizes[i])))
    objs = tuple(SceneObject(shapes[i], colours[i], boxes[i]) for i in range(2))
    return Scene(objs, background, relation)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(obj: ObjectSpec) -> str:
    return f"{_article(obj.colour)} {obj.colour} {obj.shape}"


def caption(scene: SceneLike) -> str:
    """The caption of a scene or spec, e.g. ``a red circle above a blue square on a yellow background``."""
    objs = list(scene.objects)
    text = _phrase(objs[0])
    if len(objs) == 2:
        text += f" {scene.relation} {_phrase(objs[1])}"
    return f"{text} on {_article(scene.background)} {scene.background} background"


def _parse_object(words: list[str], where: str) -> ObjectSpec:
    if len(words) != 3 or words[0] not in ("a", "an"):
        raise ValueError(f"expected 'a <colour> <shape>' for the {where}, got {' '.join(words)!r}")
    if words[1] not in PALETTE:
        raise ValueError(f"unknown colour {words[1]!r} for the {where}; known: {', '.join(COLOURS)}")
    if words[2] not in SHAPES:
        raise ValueError(f"unknown shape {words[2]!r} for the {where}; known: {', '.join(SHAPES)}")
    return ObjectSpec(words[2], words[1])


def parse_caption(text: str) -> CaptionSpec:
    """Parse a caption in the generator's grammar; raise ValueError naming the problem."""
    words = text.strip().lower().rstrip(".").split()
    if len(words) < 4 or words[-1] != "background" or "on" not in words:
        raise ValueError(f"caption must end with 'on a <colour> background': {text!r}")
    on = len(words) - 1 - words[::-1].index("on")
    bg = words[on + 1 : -1]
    if len(bg) != 2 or bg[0] not in ("a", "an"):
        raise ValueError(f"expected 'on a <colour> background', got {' '.join(words[on:])!r}")
    if bg[1] not in PALETTE:
        raise ValueError(f"unknown background colour {bg[1]!r}; known: {', '.join(COLOURS)}")
    body = words[:on]
    relation = None
    for rel in RELATIONS:
        parts = rel.split()
        for i in range(len(body) - len(parts) + 1):
            if body[i : i + len(parts)] == parts:
                relation, first, second = rel, body[:i], body[i + len(parts) :]
                break
        if relation:
            break
    if relation is None:
        objects: tuple[ObjectSpec, ...] = (_parse_object(body, "object"),)
    else:
        objects = (_parse_object(first, "first object"), _parse_object(second, "second object"))
    for o in objects:
        if o.colour == bg[1]:
            raise ValueError(f"object colour {o.colour!r} equals the background colour")
    if len(objects) == 2 and objects[0].colour == objects[1].colour:
        raise ValueError(f"both objects are {objects[0].colour!r}; object colours must differ")
    return CaptionSpec(objects, bg[1], relation)


def _star(cx: float, cy: float, r: float, inner: float = 0.42) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * inner
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _knife(x0: float, y0: float, x1: float, y1: float) -> list[list[tuple[float, float]]]:
    """A kitchen-knife silhouette lying on the box diagonal, handle bottom-left, tip top-right."""
    diagonal = math.hypot(x1 - x0, y1 - y0)
    length = diagonal * 0.95
    ux, uy = (x1 - x0) / diagonal, -(y1 - y0) / diagonal  # along the blade: bottom-left to top-right
    vx, vy = -uy, ux
    sx, sy = (x0 + x1) / 2 - ux * length / 2, (y0 + y1) / 2 - uy * length / 2

    def poly(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(sx + ux * a * length + vx * b * length, sy + uy * a * length + vy * b * length) for a, b in points]

    handle = poly([(0.0, -0.075), (0.36, -0.075), (0.36, 0.075), (0.0, 0.075)])
    blade = poly([(0.34, -0.11), (0.34, 0.11), (0.78, 0.09), (1.0, -0.11)])
    return [handle, blade]


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Render a scene as an RGB image of ``size`` pixels, anti-aliased by drawing at 4x and box-downsampling."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), PALETTE[scene.background])
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        fill = PALETTE[obj.colour]
        x0, y0, x1, y1 = (v * big for v in obj.box)
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
        elif obj.shape == "star":
            r = (x1 - x0) / 2
            draw.polygon(_star((x0 + x1) / 2, y0 + r * 1.05, r), fill=fill)
        elif obj.shape == "knife":
            for part in _knife(x0, y0, x1, y1):
                draw.polygon(part, fill=fill)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}")
    return img.resize((size, size), Image.Resampling.BOX)


def _pair_hash(colour: str, shape: str) -> int:
    return int.from_bytes(hashlib.sha256(f"assetmint-demo|{colour}|{shape}".encode()).digest()[:4], "big")


HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    (c, s) for c in COLOURS for s in SHAPES if _pair_hash(c, s) % 8 == 0
)
"""(colour, shape) pairs that never appear in the train split; every colour and shape still appears there."""


def split_of(scene: SceneLike) -> Literal["train", "heldout"]:
    """``heldout`` when any object is a held-out (colour, shape) pair, else ``train``."""
    held = any((o.colour, o.shape) in HELDOUT_PAIRS for o in scene.objects)
    return "heldout" if held else "train"


def dataset(n: int, seed: int, size: int = 64, split: Split = "all") -> Iterator[tuple[Image.Image, str]]:
    """Yield ``n`` (image, caption) pairs, deterministic in ``seed``, restricted to ``split`` (train/heldout/all)."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    rng = np.random.default_rng(seed)
    made = 0
    while made < n:
        scene = sample_scene(rng)
        if split != "all" and split_of(scene) != split:
            continue
        made += 1
        yield render(scene, size), caption(scene)


def scenes(n: int, seed: int, split: Split = "all") -> Iterator[Scene]:
    """Yield ``n`` scenes (not rendered), deterministic in ``seed``, restricted to ``split``."""
    rng = np.random.default_rng(seed)
    made = 0
    while made < n:
        scene = sample_scene(rng)
        if split == "all" or split_of(scene) == split:
            made += 1
            yield scene


PERTURBATIONS: tuple[str, ...] = ("colour", "shape", "background", "relation", "binding")


def perturbations(spec: CaptionSpec) -> tuple[str, ...]:
    """The kinds of single changes that apply to ``spec`` (relation and binding need two objects)."""
    return PERTURBATIONS if len(spec.objects) == 2 else PERTURBATIONS[:3]


def perturb(spec: CaptionSpec, rng: np.random.Generator, kind: str | None = None) -> CaptionSpec:
    """``spec`` with one thing changed: an object's colour or shape, the background, the relation, or colour binding.

    The result is always a valid caption that the original image does not satisfy: colours stay distinct, the
    relation flips to its opposite, and binding swaps the two objects' colours (only when their shapes differ).
    """
    kinds = perturbations(spec)
    if kind is None:
        kind = kinds[int(rng.integers(len(kinds)))]
    if kind not in kinds:
        raise ValueError(f"perturbation {kind!r} does not apply to {caption(spec)!r}; choose from {', '.join(kinds)}")
    objs = list(spec.objects)
    used = {o.colour for o in objs} | {spec.background}
    free = [c for c in COLOURS if c not in used]
    i = int(rng.integers(len(objs)))
    if kind == "colour":
        objs[i] = ObjectSpec(objs[i].shape, free[int(rng.integers(len(free)))])
    elif kind == "shape":
        others = [s for s in SHAPES if s != objs[i].shape]
        objs[i] = ObjectSpec(others[int(rng.integers(len(others)))], objs[i].colour)
    elif kind == "background":
        return CaptionSpec(spec.objects, free[int(rng.integers(len(free)))], spec.relation)
    elif kind == "relation":
        assert spec.relation is not None
        return CaptionSpec(spec.objects, spec.background, OPPOSITE[spec.relation])
    else:  # binding
        a, b = objs
        if a.shape == b.shape:  # swapping colours of two equal shapes would describe the same picture
            return perturb(spec, rng, "relation")
        objs = [ObjectSpec(a.shape, b.colour), ObjectSpec(b.shape, a.colour)]
    return CaptionSpec(tuple(objs), spec.background, spec.relation)
