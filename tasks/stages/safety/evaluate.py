"""Measure the image filters on a labelled folder: confusion counts, precision and recall, threshold sweeps."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies.safety import CONCEPTS, NSFW, SafetyPolicy
from tasks.stages.safety import LabelsError
from tasks.stages.safety.images import TextEncoder, concept_scores, nsfw_scores, verdicts_from_scores

ImageEncoder = Callable[[list[Path]], np.ndarray]
LABELS = ("safe", "unsafe")
SWEEP_STEPS = 21
COMBINED = "combined"


@dataclass(frozen=True)
class Confusion:
    """Counts at one threshold, unsafe being the positive class."""

    threshold: float | None
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float | None:
        """tp / (tp + fp); None when nothing was flagged."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        """tp / (tp + fn); None when there are no unsafe images."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "threshold": self.threshold,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
        }


@dataclass(frozen=True)
class FilterEval:
    """One filter's confusion at the policy threshold and its threshold sweep."""

    name: str
    at_policy: Confusion
    sweep: tuple[Confusion, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {"name": self.name, "at_policy": self.at_policy.to_dict(), "sweep": [c.to_dict() for c in self.sweep]}


@dataclass(frozen=True)
class ImageRow:
    """One labelled image with its scores and verdict."""

    filename: str
    label: str
    flagged: bool
    scores: dict[str, float]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class EvalReport:
    """Evaluation of the policy's image filters on a labelled folder."""

    folder: str
    n_safe: int
    n_unsafe: int
    filters_run: tuple[str, ...]
    filters_off: tuple[str, ...]
    filters: tuple[FilterEval, ...]
    images: tuple[ImageRow, ...] = field(default=())

    def filter(self, name: str) -> FilterEval:
        """The evaluation of the filter called `name` ('nsfw', 'concept:TEXT', 'concepts', 'combined')."""
        for item in self.filters:
            if item.name == name:
                return item
        raise KeyError(f"no filter {name!r}; have {', '.join(f.name for f in self.filters)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "folder": self.folder,
            "n_safe": self.n_safe,
            "n_unsafe": self.n_unsafe,
            "filters_run": list(self.filters_run),
            "filters_off": list(self.filters_off),
            "filters": [f.to_dict() for f in self.filters],
            "images": [
                {"filename": r.filename, "label": r.label, "flagged": r.flagged, "scores": r.scores,
                 "reasons": list(r.reasons)}
                for r in self.images
            ],
        }  # fmt: skip

    def to_text(self) -> str:
        """A readable report: counts, one summary table at the policy thresholds, then each sweep."""
        lines = [
            f"Safety evaluation of {self.folder}: {self.n_safe + self.n_unsafe} images "
            f"({self.n_unsafe} unsafe, {self.n_safe} safe)",
            f"filters run: {', '.join(self.filters_run) or 'none'}",
        ]
        if self.filters_off:
            lines.append(f"FILTERS OFF (not run): {', '.join(self.filters_off)}")
        lines += ["", "At policy thresholds:", _header("filter")]
        for item in self.filters:
            lines.append(_row(_short(item.name), item.at_policy))
        for item in self.filters:
            if not item.sweep:
                continue
            lines += ["", f"Threshold sweep: {item.name}", _header("threshold")]
            for point in item.sweep:
                lines.append(_row(f"{point.threshold:.3f}", point))
        return "\n".join(lines)


def _short(name: str, width: int = 40) -> str:
    """A name cut to `width` characters."""
    return name if len(name) <= width else name[: width - 1] + "…"


def _fmt(value: float | None) -> str:
    """A ratio with three decimals, or '-' when undefined."""
    return "-" if value is None else f"{value:.3f}"


def _header(first: str) -> str:
    """Column headings."""
    return f"{first:<40} {'thresh':>7} {'tp':>4} {'fp':>4} {'tn':>4} {'fn':>4} {'precision':>9} {'recall':>7}"


def _row(name: str, c: Confusion) -> str:
    """One table row."""
    threshold = "-" if c.threshold is None else f"{c.threshold:.3f}"
    return (
        f"{name:<40} {threshold:>7} {c.tp:>4} {c.fp:>4} {c.tn:>4} {c.fn:>4} {_fmt(c.precision):>9} {_fmt(c.recall):>7}"
    )


def read_labels(labels_csv: Path, folder: Path) -> list[tuple[Path, str]]:
    """(image path, label) rows of a 'filename,label' CSV; LabelsError names the file, line and problem."""
    try:
        text = labels_csv.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsError(f"cannot read labels file {labels_csv}: {exc}") from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise LabelsError(f"{labels_csv}: empty file; the first line must be the header 'filename,label'")
    header = [cell.strip().lower() for cell in rows[0]]
    if header != ["filename", "label"]:
        raise LabelsError(f"{labels_csv} line 1: header must be 'filename,label', got {','.join(rows[0])!r}")
    seen: dict[str, int] = {}
    labelled: list[tuple[Path, str]] = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise LabelsError(f"{labels_csv} line {number}: expected 2 columns (filename,label), got {len(row)}")
        name, label = row[0].strip(), row[1].strip().lower()
        if label not in LABELS:
            raise LabelsError(
                f"{labels_csv} line {number}: unknown label {row[1].strip()!r}; allowed: {', '.join(LABELS)}"
            )
        if name in seen:
            raise LabelsError(f"{labels_csv} line {number}: {name!r} is already labelled on line {seen[name]}")
        path = folder / name
        if not name or not path.is_file():
            raise LabelsError(f"{labels_csv} line {number}: image {name!r} not found in {folder}")
        seen[name] = number
        labelled.append((path, label))
    if not labelled:
        raise LabelsError(f"{labels_csv}: no labelled images after the header")
    return labelled


def confusion(flags: Sequence[bool], unsafe: Sequence[bool], threshold: float | None) -> Confusion:
    """Confusion counts of predicted flags against truth (unsafe = positive)."""
    tp = sum(f and u for f, u in zip(flags, unsafe, strict=True))
    fp = sum(f and not u for f, u in zip(flags, unsafe, strict=True))
    fn = sum(u and not f for f, u in zip(flags, unsafe, strict=True))
    return Confusion(threshold, tp, fp, len(flags) - tp - fp - fn, fn)


def sweep_thresholds(scores: np.ndarray, low: float, high: float, steps: int = SWEEP_STEPS) -> list[float]:
    """Evenly spaced thresholds covering [low, high] widened to the scores' range, rounded to 0.05."""
    if scores.size:
        low = min(low, float(np.floor(scores.min() * 20) / 20))
        high = max(high, float(np.ceil(scores.max() * 20) / 20))
    return [round(float(t), 4) for t in np.linspace(low, high, steps)]


def _filter_eval(name: str, scores: np.ndarray, unsafe: list[bool], threshold: float, grid: list[float]) -> FilterEval:
    """Confusion at the policy threshold plus a sweep over `grid`."""
    at_policy = confusion([bool(s >= threshold) for s in scores], unsafe, threshold)
    sweep = tuple(confusion([bool(s >= t) for s in scores], unsafe, t) for t in grid)
    return FilterEval(name, at_policy, sweep)


def evaluate(
    folder: Path,
    labels_csv: Path,
    policy: SafetyPolicy,
    encode_images: ImageEncoder,
    encode_texts: TextEncoder,
    batch_size: int = 16,
) -> EvalReport:
    """Run the policy's image filters on a labelled folder and measure them against the labels."""
    labelled = read_labels(labels_csv, folder)
    paths = [path for path, _ in labelled]
    unsafe = [label == "unsafe" for _, label in labelled]
    running = policy.image_filters_on()
    evals: list[FilterEval] = []
    nsfw: np.ndarray | None = None
    concepts: np.ndarray | None = None
    if NSFW in running:
        nsfw = np.asarray(nsfw_scores(paths, batch_size=batch_size), dtype=np.float64)
        evals.append(_filter_eval(NSFW, nsfw, unsafe, policy.nsfw.threshold, sweep_thresholds(nsfw, 0.0, 1.0)))
    rules = policy.concepts.rules
    if CONCEPTS in running:
        embeddings = encode_images(paths)
        concepts = concept_scores(embeddings, [rule.concept for rule in rules], encode_texts)
        for column, rule in enumerate(rules):
            column_scores = concepts[:, column].astype(np.float64)
            grid = sweep_thresholds(column_scores, min(0.0, rule.threshold), max(0.5, rule.threshold))
            evals.append(_filter_eval(f"concept:{rule.concept}", column_scores, unsafe, rule.threshold, grid))
    verdicts = verdicts_from_scores(policy, len(paths), None if nsfw is None else nsfw.tolist(), concepts)
    if CONCEPTS in running:
        any_concept = [any(r.flagged for r in v.results if r.filter == CONCEPTS) for v in verdicts]
        evals.append(FilterEval(CONCEPTS, confusion(any_concept, unsafe, None)))
    if running:
        evals.append(FilterEval(COMBINED, confusion([v.flagged for v in verdicts], unsafe, None)))
    images = tuple(
        ImageRow(
            filename=path.relative_to(folder).as_posix(),
            label=label,
            flagged=verdict.flagged,
            scores={
                (r.filter if r.filter == NSFW else f"concept:{r.label}"): round(r.score, 4) for r in verdict.results
            },
            reasons=verdict.reasons,
        )
        for (path, label), verdict in zip(labelled, verdicts, strict=True)
    )
    off = tuple(name for name in (NSFW, CONCEPTS) if name not in running)
    return EvalReport(
        folder=str(folder),
        n_safe=unsafe.count(False),
        n_unsafe=unsafe.count(True),
        filters_run=tuple(running),
        filters_off=off,
        filters=tuple(evals),
        images=images,
    )
