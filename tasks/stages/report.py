"""Run reports as plain data: a contact sheet of the selection and a text chart of the CLIP scores."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Prefect stores an artifact's markdown in its database and sends it to every browser that opens the run: the
# contact sheet is embedded (the UI cannot read the worker's files) but kept small.
MAX_CONTACT_SHEET_BYTES = 150_000


def contact_sheet(
    images: Sequence[Path], labels: Sequence[str], max_bytes: int = MAX_CONTACT_SHEET_BYTES, columns: int = 6
) -> bytes | None:
    """A JPEG grid of the images, each labelled, at most `max_bytes`; None when there is nothing to show."""
    from PIL import Image, ImageDraw, ImageOps

    tiles = [(path, label) for path, label in zip(images, labels, strict=True) if Path(path).is_file()]
    if not tiles:
        return None
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    sizes = ((192, 80), (160, 70), (128, 60), (96, 50), (64, 40))
    thumbs = []
    for path, _ in tiles:  # read each image once; smaller attempts shrink these
        with Image.open(path) as image:
            thumbs.append(ImageOps.fit(image.convert("RGB"), (sizes[0][0], sizes[0][0])))
    for size, quality in sizes:
        label_h = 14
        sheet = Image.new("RGB", (columns * size, rows * (size + label_h)), "white")
        draw = ImageDraw.Draw(sheet)
        for index, (thumb, (_, label)) in enumerate(zip(thumbs, tiles, strict=True)):
            x, y = (index % columns) * size, (index // columns) * (size + label_h)
            sheet.paste(thumb.resize((size, size)), (x, y))
            draw.text((x + 2, y + size + 1), label[: size // 6], fill="black")
        out = io.BytesIO()
        sheet.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= max_bytes:
            return out.getvalue()
    return None


def data_uri(jpeg: bytes) -> str:
    """The JPEG as a data: URI for a markdown image."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


@dataclass(frozen=True)
class ScoreBins:
    """CLIP scores counted in equal bins from `low`, each `step` wide."""

    low: float
    step: float
    counts: list[int]


def bin_scores(scores: Sequence[float], bins: int) -> ScoreBins:
    """Count scores in `bins` equal bins between their minimum and maximum (a single value gets a narrow range)."""
    low, high = min(scores), max(scores)
    if high - low < 1e-9:
        low, high = low - 0.005, high + 0.005
    step = (high - low) / bins
    counts = [0] * bins
    for score in scores:
        counts[min(int((score - low) / step), bins - 1)] += 1
    return ScoreBins(low=low, step=step, counts=counts)


def score_histogram(scores: Sequence[float], bins: int = 10, width: int = 40) -> str:
    """A text histogram of CLIP scores, one line per bin: range, bar, count."""
    if not scores:
        return "(no scores)"
    binned = bin_scores(scores, bins)
    peak = max(binned.counts)
    lines = []
    for index, count in enumerate(binned.counts):
        start = binned.low + binned.step * index
        bar = "#" * round(count / peak * width) if count else ""
        lines.append(f"{start:7.3f} - {start + binned.step:7.3f} | {bar:<{width}} {count}")
    return "\n".join(lines)
