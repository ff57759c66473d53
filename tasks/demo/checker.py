"""Objective pixel-level checker: does an image show what a demo caption says (colours, shapes, relation)?

Pixels are labelled by their nearest palette colour (far-off, mixed edge pixels stay unlabelled); the most common
label is the background. For each other colour, connected components that keep a pixel under a 3x3 erosion (so thin
anti-alias or blur fringes of mixed colour are dropped; skipped below 48 px) are objects. Each object is classified
by geometry: elongation (knife), solidity against its convex hull (star), fill of its bounding box (triangle < circle
< square). Colours, shapes and the centroid relation are then compared with the parsed caption.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import permutations

import numpy as np
from PIL import Image

from tasks.demo.shapes import PALETTE, CaptionSpec, parse_caption

_NAMES = tuple(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)
MAX_DISTANCE = 75.0
MIN_AREA_FRACTION = 25 / 64**2
OPENING_MIN_SIDE = 48


@dataclass(frozen=True)
class Blob:
    """One detected object: colour, classified shape, pixel area, centroid (x, y) in pixels and the features used."""

    colour: str
    shape: str
    area: int
    centroid: tuple[float, float]
    features: dict[str, float]


@dataclass(frozen=True)
class CheckResult:
    """The verdict: overall match, per-aspect flags and a human-readable explanation."""

    matches: bool
    colour_ok: bool
    shape_ok: bool
    relation_ok: bool
    details: str


def label_pixels(image: Image.Image) -> np.ndarray:
    """Palette index of each pixel's nearest colour, or -1 when farther than MAX_DISTANCE from every entry."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    d = np.linalg.norm(rgb[:, :, None, :] - _RGB[None, None, :, :], axis=-1)
    idx = d.argmin(axis=-1)
    idx[d.min(axis=-1) > MAX_DISTANCE] = -1
    return idx


def _erode(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1, constant_values=False)
    h, w = mask.shape
    out = np.ones_like(mask)
    for dy in range(3):
        for dx in range(3):
            out &= p[dy : dy + h, dx : dx + w]
    return out


def components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean mask, each as an (N, 2) array of (row, col)."""
    seen = np.zeros_like(mask)
    h, w = mask.shape
    out = []
    for r0, c0 in np.argwhere(mask):
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        queue = deque([(int(r0), int(c0))])
        pix = []
        while queue:
            r, c = queue.popleft()
            pix.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        queue.append((rr, cc))
        out.append(np.array(pix))
    return out


def _hull_area(points: np.ndarray) -> float:
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1], dtype=np.float64)
    x, y = hull[:, 0], hull[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def shape_features(pixels: np.ndarray) -> dict[str, float]:
    """Geometry of one component: fill of bounding box, solidity against the convex hull, elongation."""
    area = len(pixels)
    rows, cols = pixels[:, 0], pixels[:, 1]
    bbox = float((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1))
    corners = np.concatenate([pixels + np.array(off) for off in ((0, 0), (0, 1), (1, 0), (1, 1))])
    hull = _hull_area(corners)
    cov = np.cov(pixels.T.astype(np.float64)) if area > 2 else np.eye(2)
    ev = np.linalg.eigvalsh(cov + np.eye(2) / 12)
    return {
        "fill": area / bbox,
        "solidity": area / hull if hull else 1.0,
        "elongation": float(np.sqrt(ev[-1] / ev[0])),
    }


def classify_shape(features: dict[str, float]) -> str:
    """Shape name from geometric features."""
    if features["elongation"] > 2.2:
        return "knife"
    if features["solidity"] < 0.75:
        return "star"
    if features["fill"] < 0.65:
        return "triangle"
    if features["fill"] < 0.89:
        return "circle"
    return "square"


def detect(image: Image.Image) -> tuple[str, list[Blob]]:
    """Background colour name and the objects found in an image."""
    labels = label_pixels(image)
    h, w = labels.shape
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(_NAMES))
    bg = int(counts.argmax())
    min_area = max(4, round(MIN_AREA_FRACTION * h * w))
    blobs = []
    for k in range(len(_NAMES)):
        if k == bg or counts[k] < min_area:
            continue
        mask = labels == k
        core = _erode(mask) if min(h, w) >= OPENING_MIN_SIDE else mask  # small images: objects are too thin to open
        if not core.any():
            continue
        for pix in components(mask):
            if len(pix) < min_area or not core[pix[:, 0], pix[:, 1]].any():
                continue
            feats = shape_features(pix)
            cy, cx = pix.mean(axis=0)
            blobs.append(Blob(_NAMES[k], classify_shape(feats), len(pix), (float(cx), float(cy)), feats))
    blobs.sort(key=lambda b: -b.area)
    return _NAMES[bg], blobs


def _relation_holds(relation: str, a: Blob, b: Blob) -> bool:
    dx, dy = b.centroid[0] - a.centroid[0], b.centroid[1] - a.centroid[1]
    if relation in ("left of", "right of"):
        return abs(dx) >= abs(dy) and (dx > 0) == (relation == "left of")
    return abs(dy) >= abs(dx) and (dy > 0) == (relation == "above")


def check(image: Image.Image, caption: str | CaptionSpec) -> CheckResult:
    """Check an image against a caption (text or parsed spec): colours, shapes and, for two objects, the relation."""
    spec = parse_caption(caption) if isinstance(caption, str) else caption
    background, blobs = detect(image)
    found = ", ".join(f"{b.colour} {b.shape}" for b in blobs) or "nothing"
    notes = [f"background {background}; found {found}"]
    want = list(spec.objects)
    colour_ok = background == spec.background and sorted(b.colour for b in blobs) == sorted(o.colour for o in want)
    if background != spec.background:
        notes.append(f"background is {background}, caption says {spec.background}")
    if len(blobs) != len(want):
        notes.append(f"{len(blobs)} object(s) found, caption has {len(want)}")
    elif not colour_ok and background == spec.background:
        notes.append("object colours differ from the caption")
    assignment = None
    if len(blobs) == len(want):
        for perm in permutations(blobs):
            if all(b.colour == o.colour and b.shape == o.shape for b, o in zip(perm, want, strict=True)):
                assignment = perm
                break
    shape_ok = assignment is not None
    if not shape_ok:
        if sorted(b.shape for b in blobs) == sorted(o.shape for o in want) and len(blobs) == len(want):
            notes.append("shapes present but bound to the wrong colours")
        else:
            notes.append("shapes differ from the caption")
    relation_ok = True
    if spec.relation is not None:
        if assignment is None and len(blobs) == 2:
            by_colour = {b.colour: b for b in blobs}
            if all(o.colour in by_colour for o in want):
                assignment = tuple(by_colour[o.colour] for o in want)
        if assignment is None or len(assignment) != 2:
            relation_ok = False
            notes.append(f"cannot locate both objects to check {spec.relation!r}")
        else:
            relation_ok = _relation_holds(spec.relation, assignment[0], assignment[1])
            if not relation_ok:
                notes.append(f"first object is not {spec.relation} the second")
    matches = colour_ok and shape_ok and relation_ok
    return CheckResult(matches, colour_ok, shape_ok, relation_ok, "; ".join(notes))
