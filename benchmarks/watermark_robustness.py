"""Robustness, false-match rate and speed of AssetMint's invisible watermark, per method.

Usage:
    python benchmarks/watermark_robustness.py            # full run (~10 min on 2 CPU cores)
    python benchmarks/watermark_robustness.py --quick    # small run (~1-2 min)
    python benchmarks/watermark_robustness.py --markdown # README-ready tables

Images: (a) colour photographs shipped with scikit-image (``pip install scikit-image``, the ``bench``
extra), centre-cropped to squares and resized; (b) seeded procedural "generated-looking" images in three
styles (studio product shot, landscape, flat illustration).

For each method, size and attack it reports the mean bit accuracy against the embedded payload and the
rate at which the payload resolved to exactly the embedded key (a different key counts as a wrong key
and is reported separately). The false-match section decodes unmarked 256x256 images (photo crops and
variants plus procedural images) and counts how many resolve to any key.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.provenance import watermark as wm  # noqa: E402
from tasks.provenance.watermark import WatermarkMethod  # noqa: E402

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
LANCZOS = Image.Resampling.LANCZOS

# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def load_photos(names: tuple[str, ...]) -> dict[str, Image.Image]:
    """The named scikit-image sample photographs as RGB images at their native size."""
    try:
        from skimage import data
    except ImportError:
        sys.exit("this benchmark needs scikit-image for its sample photographs: pip install scikit-image")
    return {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in names}


def square(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to size x size."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), LANCZOS)


def _pink(rng: np.random.Generator, size: int) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius
    f = np.fft.irfft2(spectrum, s=(size, size))
    return (f - f.mean()) / f.std()


def generated_image(size: int, seed: int) -> Image.Image:
    """A seeded procedural image in one of three generative-image styles (seed % 3 picks the style)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    style = seed % 3
    if style == 0:  # studio product shot: smooth backdrop, shaded sphere and bottle, soft shadow
        c0, c1 = rng.uniform(60, 230, 3), rng.uniform(20, 200, 3)
        cx, cy = rng.uniform(0.3, 0.7, 2)
        t = np.clip(np.hypot(x - cx, y - cy) / 0.9, 0, 1)[:, :, None]
        img = c0 * (1 - t) + c1 * t
        shadow = np.exp(-(((x - cx) / 0.22) ** 2 + ((y - 0.82) / 0.04) ** 2))[:, :, None]
        img *= 1 - 0.45 * shadow
        r = rng.uniform(0.12, 0.2)
        sx, sy = cx - 0.1, 0.82 - r
        d2 = ((x - sx) ** 2 + (y - sy) ** 2) / r**2
        inside = d2 < 1
        nz = np.sqrt(np.clip(1 - d2, 0, 1))
        light = np.array([-0.5, -0.6, 0.62])
        shade = np.clip(((x - sx) / r * light[0] + (y - sy) / r * light[1] + nz * light[2]), 0, 1)
        colour = rng.uniform(40, 240, 3)
        spec = np.clip(shade, 0, 1) ** 30 * 255
        sphere = colour * (0.25 + 0.75 * shade[:, :, None]) + spec[:, :, None]
        img = np.where(inside[:, :, None], sphere, img)
        bx0, bw = cx + 0.05, rng.uniform(0.08, 0.14)
        bottle = (x > bx0) & (x < bx0 + bw) & (y > 0.35) & (y < 0.82)
        u = (x - bx0) / bw
        bottle_shade = 0.35 + 0.65 * np.sin(np.pi * np.clip(u, 0, 1)) ** 0.6
        bcolour = rng.uniform(30, 230, 3)
        img = np.where(bottle[:, :, None], bcolour * bottle_shade[:, :, None], img)
        img = np.asarray(
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(size / 600)),
            dtype=np.float64,
        )
        noise = 1.5
    elif style == 1:  # landscape: sky gradient, 1/f clouds, 1/f terrain under a ridge line
        sky0, sky1 = rng.uniform([120, 150, 190], [200, 210, 255]), rng.uniform([40, 70, 120], [120, 140, 220])
        img = sky0 * (1 - y[:, :, None]) + sky1 * y[:, :, None]
        img += 25 * np.clip(_pink(rng, size), 0, None)[:, :, None]
        ridge = 0.55 + 0.08 * _pink(rng, size)[0][None, :] * 0.5
        ground = y > ridge
        terrain = rng.uniform([40, 70, 20], [110, 140, 70]) * (1 + 0.25 * _pink(rng, size))[:, :, None]
        img = np.where(ground[:, :, None], terrain * (0.7 + 0.5 * (1 - y))[:, :, None], img)
        img = np.asarray(
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(size / 700)),
            dtype=np.float64,
        )
        noise = 2.0
    else:  # flat illustration: flat colours, hard (anti-aliased) shapes, mild vignette
        big = Image.new("RGB", (size * 2, size * 2), tuple(int(v) for v in rng.integers(40, 230, 3)))
        draw = ImageDraw.Draw(big)
        for _ in range(10):
            x0, y0 = rng.integers(0, size * 2, 2)
            w, h = rng.integers(size // 5, size, 2)
            fill = tuple(int(v) for v in rng.integers(20, 240, 3))
            if rng.random() < 0.5:
                draw.ellipse([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=fill)
            else:
                pts = [(int(x0 + rng.integers(0, w)), int(y0 + rng.integers(0, h))) for _ in range(3)]
                draw.polygon(pts, fill=fill)
        img = np.asarray(big.resize((size, size), LANCZOS), dtype=np.float64)
        img *= (1 - 0.25 * (np.hypot(x - 0.5, y - 0.5) ** 2))[:, :, None]
        noise = 0.8
    img = img + rng.normal(0, noise, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _resize(image: Image.Image, scale: float, back: bool) -> Image.Image:
    w, h = image.size
    small = image.resize((round(w * scale), round(h * scale)), LANCZOS)
    return small.resize((w, h), LANCZOS) if back else small


def _crop(image: Image.Image, keep: float, back: bool) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
    cropped = image.crop((dx, dy, w - dx, h - dy))
    return cropped.resize((w, h), LANCZOS) if back else cropped


ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda im: im,
    "JPEG q90": lambda im: _encode(im, "JPEG", 90),
    "JPEG q75": lambda im: _encode(im, "JPEG", 75),
    "JPEG q50": lambda im: _encode(im, "JPEG", 50),
    "WebP q80": lambda im: _encode(im, "WEBP", 80),
    "resize 0.5x, as-is": lambda im: _resize(im, 0.5, back=False),
    "resize 0.5x, scaled back": lambda im: _resize(im, 0.5, back=True),
    "resize 0.75x, as-is": lambda im: _resize(im, 0.75, back=False),
    "resize 0.75x, scaled back": lambda im: _resize(im, 0.75, back=True),
    "crop 90% (centre), as-is": lambda im: _crop(im, 0.9, back=False),
    "crop 90% (centre), scaled back": lambda im: _crop(im, 0.9, back=True),
    "brightness +20%": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "brightness -20%": lambda im: ImageEnhance.Brightness(im).enhance(0.8),
}

# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    accuracy: list[float] = field(default_factory=list)
    recovered: int = 0
    wrong_key: int = 0
    skipped: int = 0

    def text(self) -> str:
        if not self.accuracy:
            return "n/a"
        n = len(self.accuracy)
        out = f"{statistics.fmean(self.accuracy):.2f} / {100 * self.recovered / n:.0f}%"
        return out + (f" ({self.wrong_key} wrong key!)" if self.wrong_key else "")


def robustness(
    images: list[Image.Image], method: WatermarkMethod, rng: np.random.Generator, log: Callable[[str], None]
) -> dict[str, Cell]:
    """Embed a random key into each image, attack it every way, decode, and tally per attack."""
    cells = {name: Cell() for name in ATTACKS}
    for i, image in enumerate(images):
        key = int(rng.integers(1, wm.max_key(method) + 1))
        expected = np.array(wm.payload_bits(key, method))
        marked = wm.embed(image, key, method)
        for name, attack in ATTACKS.items():
            attacked = attack(marked)
            cell = cells[name]
            if min(attacked.size) < wm.MIN_SIDE:
                cell.skipped += 1
                continue
            result = wm.decode(attacked, method)
            cell.accuracy.append(float(np.mean(np.array(result.bits) == expected)))
            if result.key == key:
                cell.recovered += 1
            elif result.key is not None:
                cell.wrong_key += 1
        log(f"    {method.value} {image.size[0]}px image {i + 1}/{len(images)} done")
    return cells


def unmarked_variants(photos: dict[str, Image.Image], count: int, seed: int) -> Iterator[Image.Image]:
    """``count`` unmarked 256x256 images: random crops/flips/brightness of the photos, and procedural ones."""
    rng = np.random.default_rng(seed)
    sources = list(photos.values())
    for i in range(count):
        if i % 2 == 0 and sources:
            photo = sources[int(rng.integers(len(sources)))]
            w, h = photo.size
            side = int(rng.integers(128, min(w, h) + 1))
            left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            image = photo.crop((left, top, left + side, top + side)).resize((256, 256), LANCZOS)
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if rng.random() < 0.3:
                image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.7, 1.3)))
            if rng.random() < 0.3:
                image = _encode(image, "JPEG", int(rng.integers(50, 95)))
            yield image
        else:
            yield generated_image(256, seed * 100_000 + i)


@dataclass
class FalseMatch:
    decoded: int = 0
    resolved: int = 0
    patterns: Counter[tuple[int, ...]] = field(default_factory=Counter)
    ones: list[float] = field(default_factory=list)


def false_matches(images: list[Image.Image], method: WatermarkMethod) -> FalseMatch:
    """Decode unmarked images and count how many resolve to any key."""
    stats = FalseMatch()
    for image in images:
        result = wm.decode(image, method)
        stats.decoded += 1
        stats.resolved += result.key is not None
        stats.patterns[result.bits] += 1
        stats.ones.append(sum(result.bits) / len(result.bits))
    return stats


def timings(method: WatermarkMethod, sizes: list[int], reps: int) -> dict[int, tuple[float, float, float, float]]:
    """Median embed and decode seconds per size, plus PSNR of our embed and of the raw library embed."""
    out = {}
    for size in sizes:
        image = generated_image(size, 1)
        key = 4_242
        embed_s, decode_s = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            marked = wm.embed(image, key, method)
            t1 = time.perf_counter()
            wm.decode(marked, method)
            t2 = time.perf_counter()
            embed_s.append(t1 - t0)
            decode_s.append(t2 - t1)
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
        raw = wm.library_embed_bgr(bgr, wm.payload_bits(key, method), method)
        ours = np.ascontiguousarray(np.asarray(marked)[:, :, ::-1])
        out[size] = (statistics.median(embed_s), statistics.median(decode_s), psnr(ours, bgr), psnr(raw, bgr))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run: fewer images, 512 px only")
    parser.add_argument("--markdown", action="store_true", help="print README-ready markdown tables")
    parser.add_argument("--seed", type=int, default=2026, help="seed for keys, crops and procedural images")
    parser.add_argument("--procedural", type=int, help="procedural images per size (default 9, quick 3)")
    parser.add_argument("--rivagan-images", type=int, help="rivaGan images per group (default 4, quick 1)")
    parser.add_argument("--fmr-images", type=int, help="unmarked images for dwt methods (default 1000)")
    parser.add_argument("--rivagan-fmr-images", type=int, help="unmarked images for rivaGan (default 1000)")
    parser.add_argument(
        "--methods", nargs="+", default=[m.value for m in WatermarkMethod], choices=[m.value for m in WatermarkMethod]
    )
    args = parser.parse_args(argv)

    quick = args.quick
    sizes = [512] if quick else [512, 1024]
    n_procedural = args.procedural if args.procedural is not None else (3 if quick else 9)
    n_riva = args.rivagan_images if args.rivagan_images is not None else (1 if quick else 4)
    n_fmr = args.fmr_images if args.fmr_images is not None else (200 if quick else 1000)
    n_fmr_riva = args.rivagan_fmr_images if args.rivagan_fmr_images is not None else (30 if quick else 1000)
    methods = [WatermarkMethod(m) for m in args.methods]
    names = PHOTO_NAMES[:3] if quick else PHOTO_NAMES
    md = args.markdown
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    photos = load_photos(names)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    import imwatermark  # noqa: F401  (imports torch; timed here, not in the embed/decode timings)

    import_s = time.perf_counter() - t0
    load_s = 0.0
    if WatermarkMethod.RIVAGAN in methods:
        t0 = time.perf_counter()
        wm._load_rivagan()
        load_s = time.perf_counter() - t0

    from importlib.metadata import version

    import cv2
    import onnxruntime

    print(("## " if md else "") + "Invisible watermark benchmark")
    print()
    print(
        f"invisible-watermark {version('invisible-watermark')}, opencv {cv2.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, CPU only. Payload: 64 bits (dwt methods), 32 bits (rivaGan)."
    )
    print()

    # ---- robustness --------------------------------------------------------------------------------
    groups = {
        "photos": lambda size: [square(p, size) for p in photos.values()],
        "procedural": lambda size: [generated_image(size, args.seed + i) for i in range(n_procedural)],
    }
    columns: list[tuple[WatermarkMethod, int]] = [
        (m, s) for m in methods for s in (sizes if m is not WatermarkMethod.RIVAGAN else [512])
    ]
    wrong_total = 0
    decodes_total = 0
    for group, make in groups.items():
        results: dict[tuple[WatermarkMethod, int], dict[str, Cell]] = {}
        counts: dict[tuple[WatermarkMethod, int], int] = {}
        for method, size in columns:
            images = make(size)
            if method is WatermarkMethod.RIVAGAN:
                images = images[:n_riva]
            counts[(method, size)] = len(images)
            log(f"robustness: {group}, {method.value} at {size}px, {len(images)} images")
            results[(method, size)] = robustness(images, method, rng, log)
        headers = ["attack"] + [f"{m.value} {s}² (n={counts[(m, s)]})" for m, s in columns]
        rows = [[name] + [results[c][name].text() for c in columns] for name in ATTACKS]
        for cells in results.values():
            for cell in cells.values():
                wrong_total += cell.wrong_key
                decodes_total += len(cell.accuracy)
        title = f"Robustness on {group}" + (
            f" ({', '.join(names)}; centre-cropped squares)"
            if group == "photos"
            else " (seeded: studio product shot, landscape, flat illustration)"
        )
        print(("### " if md else "") + title)
        print()
        print("Each cell: mean bit accuracy / share of images whose payload resolved to the embedded key.")
        if WatermarkMethod.RIVAGAN in methods:
            print(
                f"rivaGan takes about 1 s per 512² embed or decode on CPU, so it gets only {n_riva} image(s) "
                "per group here."
            )
        print()
        print(table(headers, rows, md))
        print()
    print(f"Decodes of attacked images that resolved to a *different* key: {wrong_total} of {decodes_total}.")
    print()

    # ---- false matches ---------------------------------------------------------------------------
    fmr_rows = []
    unmarked = list(unmarked_variants(photos, max(n_fmr, n_fmr_riva), args.seed))
    for method in methods:
        n = n_fmr_riva if method is WatermarkMethod.RIVAGAN else n_fmr
        log(f"false matches: {method.value} on {n} unmarked 256x256 images")
        stats = false_matches(unmarked[:n], method)
        pattern, top = stats.patterns.most_common(1)[0]
        pattern_hex = f"{int(''.join(map(str, pattern)), 2):0{len(pattern) // 4}x}"
        design = 2.0 ** -(16 if method is WatermarkMethod.RIVAGAN else 32)
        fmr_rows.append(
            [
                method.value,
                str(stats.decoded),
                str(stats.resolved),
                f"{design:.1e}",
                str(len(stats.patterns)),
                f"{pattern_hex} ×{top} ({100 * top / stats.decoded:.0f}%)",
                f"{statistics.fmean(stats.ones):.2f}",
            ]
        )
    print(("### " if md else "") + "False matches on unmarked images")
    print()
    print("Unmarked 256x256 images: half random crops/flips/brightness/JPEG variants of the photos, half procedural.")
    print()
    print(
        table(
            [
                "method",
                "decoded",
                "resolved to a key",
                "designed rate per random decode",
                "distinct bit patterns",
                "most common pattern",
                "mean share of 1 bits",
            ],
            fmr_rows,
            md,
        )
    )
    print()

    # ---- timings -----------------------------------------------------------------------------------
    time_rows = []
    for method in methods:
        reps = 1 if (quick or method is WatermarkMethod.RIVAGAN) else 5
        log(f"timings: {method.value}")
        for size, (e, d, p, p_raw) in timings(method, [512, 1024], reps).items():
            raw = "same" if method is WatermarkMethod.RIVAGAN else f"{p_raw:.1f}"
            time_rows.append([method.value, f"{size}²", f"{e * 1000:.0f}", f"{d * 1000:.0f}", f"{p:.1f}", raw])
    print(("### " if md else "") + "Speed and image quality")
    print()
    print(
        f"Median of {1 if quick else 5} run(s) (1 for rivaGan), procedural studio image, one process on "
        f"{os.cpu_count()} CPU cores. PSNR of the marked image vs the original; 'raw library' is "
        "invisible-watermark's own encode, which AssetMint replaces by its quantiser alone plus an in-gamut "
        "colour change (dwt methods only)."
    )
    print(
        f"Once per process: importing imwatermark (it imports torch) {import_s * 1000:.0f} ms"
        + (f", loading the rivaGan ONNX models {load_s * 1000:.0f} ms." if load_s else ".")
    )
    print()
    print(table(["method", "size", "embed ms", "decode ms", "PSNR dB", "PSNR dB, raw library"], time_rows, md))
    print()
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
