"""Photographs for the watermark benchmark, from packages that install offline: never downloaded by code.

Two named splits:

``tuning``
    The 7 colour photographs shipped inside the scikit-image wheel that the watermark benchmark has always
    used (astronaut, coffee, chelsea, rocket, hubble_deep_field, immunohistochemistry, retina). A method may
    be tuned on these. Needs ``pip install scikit-image`` (the ``bench`` extra); all 7 or an error.

``heldout``
    31 other photographs, for figures a method was not tuned on:

    * scikit-image: motorcycle_left (the stereo pair's left view; the right view is near-identical)
    * scikit-learn: china, flower (``load_sample_images``)
    * matplotlib: grace_hopper (``mpl-data/sample_data``)
    * Debian ``mate-backgrounds``: the 12 photographs in ``/usr/share/backgrounds/mate/nature``
    * Debian ``lomiri-wallpapers-16.04``: the 14 photographs among Ubuntu 16.04's wallpapers
    * Debian ``lomiri-wallpapers-20.04``: Kleiber (the only photograph among Ubuntu 20.04's wallpapers)

    The held-out split works with whatever subset is installed and says what it found and what is missing,
    with the command that installs it.

Only real photographs: vector art, renders, gradients and blurred bokeh wallpapers of those packages are left
out (MATE's abstract/desktop sets, Ubuntu-MATE's blurred wallpapers, Fossa, Infinite-Sea, Painting-Colors,
umang). Debian 12's ``gnome-backgrounds`` (43.1) and ``ukui-wallpapers`` hold no photographs, and
scikit-image's other photographs are greyscale (camera, moon, coins, grass, gravel, brick), so none are used.

Images come back as RGB at their native size (EXIF orientation applied). Install everything with::

    pip install -e '.[bench]'
    apt-get update && apt-get install -y mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04

or ``bash benchmarks/install_photos.sh``. ``python benchmarks/photos.py`` lists what is found and missing.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

SPLITS = ("tuning", "heldout")

PIP_BENCH = "pip install -e '.[bench]'"
APT_PACKAGES = ("mate-backgrounds", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04")
APT_ALL = "apt-get update && apt-get install -y " + " ".join(APT_PACKAGES)


class PhotosMissing(RuntimeError):
    """A split has none (heldout) or not all (tuning) of its photographs installed."""


@dataclass(frozen=True)
class Photo:
    name: str
    split: str
    source: str  # the package that ships it
    install: str  # the exact command that installs that package
    locate: Callable[[], Path | None]  # the file, or None when the package is not installed

    def path(self) -> Path | None:
        return self.locate()


def _package_file(package: str, *parts: str) -> Callable[[], Path | None]:
    """A file inside an installed Python package, found without importing the package."""

    def locate() -> Path | None:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            path = Path(folder).joinpath(*parts)
            if path.is_file():
                return path
        return None

    return locate


def _system_file(path: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        return Path(path) if Path(path).is_file() else None

    return locate


def _skimage(name: str, filename: str, split: str) -> Photo:
    return Photo(name, split, "scikit-image", "pip install scikit-image", _package_file("skimage", "data", filename))


_MATE = "/usr/share/backgrounds/mate/nature/"
_LOMIRI = "/usr/share/backgrounds/"
_MATE_PHOTOS = {
    "aqua": "Aqua.jpg",
    "blinds": "Blinds.jpg",
    "dune": "Dune.jpg",
    "fresh_flower": "FreshFlower.jpg",
    "garden": "Garden.jpg",
    "green_meadow": "GreenMeadow.jpg",
    "ladybird": "LadyBird.jpg",
    "rain_drops": "RainDrops.jpg",
    "storm": "Storm.jpg",
    "two_wings": "TwoWings.jpg",
    "wood": "Wood.jpg",
    "yellow_flower": "YellowFlower.jpg",
}
_LOMIRI_1604_PHOTOS = {
    "bridge": "Bridge_by_Sander_Klootwijk.jpg",
    "dragonfly": "Dragonfly_by_Bolly.jpg",
    "fig_bowl": "Picture_0B_by_freespace.jpg",
    "brushes": "Picture_1A_by_freespace.jpg",
    "wine": "Wine_by_Jakkub_Mede.jpg",
    "aitzgorri": "aitzgorri_by_Aitzol_Berasategi.jpg",
    "textured_wall": "analogpattern_by_Peter_Nerlich.jpg",
    "toy_bird": "free_by_Peter_Nerlich.jpg",
    "dogs_at_door": "friends_by_Aitzol_Berasategi.jpg",
    "wall_clock": "greentock_by_Peter_Nerlich.jpg",
    "creek": "life_by_Aitzol_Berasategi.jpg",
    "picos_de_europa": "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "dandelions": "seeding_by_Clements_Engelhardt.jpg",
    "sunset": "sunset_by_Aitzol_Berasategi.jpg",
}
_LOMIRI_2004_PHOTOS = {"nuthatch": "Kleiber_by_Lukas_Baubkus.jpg"}


def _apt(package: str) -> str:
    return f"apt-get update && apt-get install -y {package}"


CATALOGUE: tuple[Photo, ...] = (
    _skimage("astronaut", "astronaut.png", "tuning"),
    _skimage("coffee", "coffee.png", "tuning"),
    _skimage("chelsea", "chelsea.png", "tuning"),
    _skimage("rocket", "rocket.jpg", "tuning"),
    _skimage("hubble_deep_field", "hubble_deep_field.jpg", "tuning"),
    _skimage("immunohistochemistry", "ihc.png", "tuning"),
    _skimage("retina", "retina.jpg", "tuning"),
    _skimage("motorcycle", "motorcycle_left.png", "heldout"),
    Photo(
        "china",
        "heldout",
        "scikit-learn",
        "pip install scikit-learn",
        _package_file("sklearn", "datasets", "images", "china.jpg"),
    ),
    Photo(
        "flower",
        "heldout",
        "scikit-learn",
        "pip install scikit-learn",
        _package_file("sklearn", "datasets", "images", "flower.jpg"),
    ),
    Photo(
        "grace_hopper",
        "heldout",
        "matplotlib",
        "pip install matplotlib",
        _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
    ),
    *(
        Photo(name, "heldout", "mate-backgrounds", _apt("mate-backgrounds"), _system_file(_MATE + file))
        for name, file in _MATE_PHOTOS.items()
    ),
    *(
        Photo(name, "heldout", "lomiri-wallpapers-16.04", _apt("lomiri-wallpapers-16.04"), _system_file(_LOMIRI + file))
        for name, file in _LOMIRI_1604_PHOTOS.items()
    ),
    *(
        Photo(name, "heldout", "lomiri-wallpapers-20.04", _apt("lomiri-wallpapers-20.04"), _system_file(_LOMIRI + file))
        for name, file in _LOMIRI_2004_PHOTOS.items()
    ),
)
_BY_NAME = {photo.name: photo for photo in CATALOGUE}


def catalogue(split: str) -> list[Photo]:
    """Every photograph of ``split``, installed or not, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    return [photo for photo in CATALOGUE if photo.split == split]


def missing_message(missing: list[Photo]) -> str:
    """What is missing, grouped by the package (and the command) that brings it."""
    by_source: dict[str, list[Photo]] = {}
    for photo in missing:
        by_source.setdefault(photo.source, []).append(photo)
    lines = []
    for source, photos in by_source.items():
        names = ", ".join(p.name for p in photos)
        lines.append(f"  {source} ({len(photos)}: {names}): {photos[0].install}")
    return "\n".join(lines)


def find(split: str) -> tuple[list[Photo], list[Photo]]:
    """The split's photographs that are installed, and those that are not."""
    found, missing = [], []
    for photo in catalogue(split):
        (found if photo.path() is not None else missing).append(photo)
    return found, missing


def summary(split: str) -> str:
    """One line: how many of the split's photographs were found, per package."""
    found, missing = find(split)
    counts: dict[str, int] = {}
    for photo in found:
        counts[photo.source] = counts.get(photo.source, 0) + 1
    parts = ", ".join(f"{source} {n}" for source, n in counts.items())
    return f"{split}: {len(found)} of {len(found) + len(missing)} photographs" + (f" ({parts})" if parts else "")


def available(split: str) -> list[str]:
    """Names of the split's installed photographs; raises PhotosMissing as described in the module docstring."""
    found, missing = find(split)
    if split == "tuning" and missing:
        raise PhotosMissing(
            f"the tuning split needs all {len(found) + len(missing)} scikit-image sample photographs; missing:\n"
            f"{missing_message(missing)}\n(or {PIP_BENCH})"
        )
    if not found:
        raise PhotosMissing(
            f"no {split} photographs are installed; install them with:\n{missing_message(missing)}\n"
            f"(all at once: {PIP_BENCH}; {APT_ALL})"
        )
    return [photo.name for photo in found]


def load(name: str, max_side: int | None = None) -> Image.Image:
    """One photograph as an RGB image: native size, or shrunk (Lanczos) so its long side is at most ``max_side``."""
    photo = _BY_NAME.get(name)
    if photo is None:
        raise KeyError(f"unknown photograph {name!r}")
    path = photo.path()
    if path is None:
        raise PhotosMissing(f"photograph {name!r} is not installed: {photo.install}")
    with Image.open(path) as opened:
        if max_side is not None and opened.format == "JPEG" and max(opened.size) > max_side:
            # Decode at a reduced scale where libjpeg can, never below the target size.
            shrink = max_side / max(opened.size)
            opened.draft("RGB", (round(opened.width * shrink), round(opened.height * shrink)))
        image = ImageOps.exif_transpose(opened).convert("RGB")
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def load_split(split: str, max_side: int | None = None) -> dict[str, Image.Image]:
    """Name -> RGB image for the split's installed photographs (see ``available`` for what is required)."""
    return {name: load(name, max_side) for name in available(split)}


def main() -> int:
    status = 0
    for split in SPLITS:
        found, missing = find(split)
        print(summary(split))
        for photo in found:
            with Image.open(photo.path()) as image:
                print(f"  {photo.name:22} {image.width}x{image.height}  {photo.source}  {photo.path()}")
        if missing:
            print(f"  missing {len(missing)}:\n{missing_message(missing)}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
