"""The ``spreadTile`` watermark signal: a tiled spread-spectrum pattern, found again by its sync chips.

Embedding
---------
A tile of ``CHIPS`` x ``CHIPS`` chips is repeated over the whole image. A fixed quarter of the chips (the *sync*
chips) carry a public pseudo-random +-1 pattern; the other chips carry the coded payload bits, each coded bit on
several chips with pseudo-random signs. The chip grid is rendered smoothly (Gaussian, periodic) so that its energy
sits at frequencies that survive JPEG, WebP and halving the size. The same pattern goes into luma (all three
channels alike) and into blue-yellow chroma (the U direction that keeps Y and V), half of the energy each: luma
survives 4:2:0 subsampling and heavy JPEG, chroma carries far less picture to compete with when it survives. The
strength follows local texture (within ``MASK_FLOOR``..``MASK_CAP`` of the median) and is scaled to an RMS change
of ``TARGET_RMS`` levels per channel: PSNR ~40.5 dB whatever the image (clipping at black and white only lowers
the change). Embedding is *informed*: ``INFORMED_ROUNDS`` times it reads the marked image back as the decoder
would and moves strength from coded bits the picture helps to those it hurts. Below ``SMALL_AREA`` px, where a
halved and recompressed copy is close to losing the mark, each round also reads such a copy (half size, JPEG
``SIMULATED_QUALITY`` with 4:2:0 chroma) and balances the bits for both reads; such images also give the sync
chips more of the (same) energy and chroma less (``SMALL_SYNC_GAIN``, ``SMALL_CHROMA_SHARE``).

A chip is ``round(short side / 256)`` px, at least 4 and at most 8: a 512 px image carries 16 tiles of 128 px,
a 2048 px image 64 tiles of 256 px.

Decoding
--------
Cropping moves the tile grid, resizing changes the tile period, brightness and contrast scale the values. The
decoder (1) whitens luma and chroma (a band-pass that removes most of the picture, divided by the local contrast,
which also cancels gain and offset); (2) for every candidate period between ``MIN_PERIOD`` and ``MAX_PERIOD`` px,
folds the image onto one tile (each pixel added to its position modulo the period) and cross-correlates the folded
tile with the sync pattern over every cyclic shift at once (FFT): the true period and grid offset give a sharp
peak; (3) for the best ``HYPOTHESES`` periods, resamples the image so the tile has its canonical size, whitens it
again there (the band-pass then matches the chips whatever the copy's size), refines the period and reads every
coded bit's soft value, weighting luma and chroma by how strongly each shows the sync (a JPEG that wiped out the
chroma adds no noise).

What the soft bits mean, and whether they name a key, is ``tasks.provenance.mark_payload``'s business: this
module knows nothing about keys or secrets, and never decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

CHIPS = 32  # chips per tile side
SYNC_SHARE = 0.25
CANONICAL_CHIP = 4  # px per chip in the decoder's canonical tile
CANONICAL_PERIOD = CHIPS * CANONICAL_CHIP
COARSE_CHIP = 2
MIN_CHIP, MAX_CHIP = 4, 8
TARGET_RMS = 2.4
INFORMED_ROUNDS = 2  # read-back rounds that rebalance strength between coded bits
SMALL_AREA = 640 * 640  # images of fewer px are also informed by a halved, recompressed read-back ...
SMALL_INFORMED_ROUNDS = 3  # ... over this many rounds
SIMULATED_QUALITY = 75  # JPEG quality of that read-back's copy
SMALL_SYNC_GAIN = 1.5  # small images: sync chips' amplitude against payload chips' (a halved copy loses sync first)
SMALL_CHROMA_SHARE = 0.4  # small images: less in chroma, which a halved 4:2:0 copy keeps least of
CHROMA_SHARE = 0.5  # share of the change's energy in blue-yellow chroma; the rest in luma
_U_DIRECTION_BGR = (2.032, -0.395, 0.0)  # BGR change that raises U by one and keeps Y and V
MASK_FLOOR, MASK_CAP = 0.8, 1.5
MIN_PERIOD, MAX_PERIOD = 56.0, 330.0  # 0.44x of the smallest tile .. 1.3x of the largest
COARSE_REGION = 384  # found px: the central region the coarse period search looks at
FINE_REGION = 1024  # found px: the central region periods are refined and bits read in
REFINE_STEPS = 3  # periods tried on each side of a coarse one
HYPOTHESES = 6  # (period, shift) pairs whose bits are read, best sync first
_LAYOUT_SEED = 0x5EED7111


@dataclass(frozen=True)
class Hypothesis:
    """One place the tile may be: its period in px of the examined image, grid shift, sync score and coded bits."""

    period: float
    shift: tuple[int, int]
    sync_z: float
    soft_bits: np.ndarray


@dataclass(frozen=True)
class _Layout:
    sync_index: np.ndarray
    sync_sign: np.ndarray
    payload_index: np.ndarray
    payload_sign: np.ndarray
    payload_bit: np.ndarray
    coded_bits: int


@cache
def _layout(coded_bits: int) -> _Layout:
    import numpy as np

    rng = np.random.default_rng(_LAYOUT_SEED)
    order = rng.permutation(CHIPS * CHIPS)
    n_sync = int(CHIPS * CHIPS * SYNC_SHARE)
    payload_index = order[n_sync:]
    payload_bit = np.arange(len(payload_index)) % coded_bits
    rng.shuffle(payload_bit)
    return _Layout(
        sync_index=order[:n_sync],
        sync_sign=rng.choice([-1.0, 1.0], n_sync),
        payload_index=payload_index,
        payload_sign=rng.choice([-1.0, 1.0], len(payload_index)),
        payload_bit=payload_bit,
        coded_bits=coded_bits,
    )


def chip_size(width: int, height: int) -> int:
    """Chip size in px used when embedding into an image of this size."""
    return min(MAX_CHIP, max(MIN_CHIP, round(min(width, height) / 256)))


def _render(grid: np.ndarray, chip: int) -> np.ndarray:
    """A chip grid rendered periodically and smoothly at ``chip`` px per chip, unit RMS."""
    import cv2
    import numpy as np

    period = CHIPS * chip
    up = np.kron(grid, np.ones((chip, chip), dtype=np.float32))
    half = period // 2
    blurred = cv2.GaussianBlur(np.pad(up, half, mode="wrap"), (0, 0), chip * 0.35)
    tile = blurred[half : half + period, half : half + period]
    return (tile / tile.std()).astype(np.float32)


def _grid(
    coded: np.ndarray | None, layout: _Layout, gains: np.ndarray | None = None, sync_gain: float = 1.0
) -> np.ndarray:
    """The chip values: sync signs (times ``sync_gain``), and each payload chip's sign times its coded bit (times
    the bit's gain)."""
    import numpy as np

    grid = np.zeros(CHIPS * CHIPS, dtype=np.float32)
    grid[layout.sync_index] = layout.sync_sign * sync_gain
    if coded is not None:
        values = layout.payload_sign * (2.0 * coded[layout.payload_bit] - 1.0)
        if gains is not None:
            values = values * gains[layout.payload_bit]
        grid[layout.payload_index] = values
    return grid.reshape(CHIPS, CHIPS)


@cache
def _sync_spectrum(chip: int, coded_bits: int) -> np.ndarray:
    import numpy as np

    return np.conj(np.fft.rfft2(_render(_grid(None, _layout(coded_bits)), chip)))


def luma(bgr: np.ndarray) -> np.ndarray:
    """BT.601 luma of a BGR uint8 array, float32."""
    import numpy as np

    b, g, r = (bgr[..., i].astype(np.float32) for i in range(3))
    return np.float32(0.299) * r + np.float32(0.587) * g + np.float32(0.114) * b


def _texture(y: np.ndarray, chip: int) -> np.ndarray:
    import cv2
    import numpy as np

    detail = y - cv2.GaussianBlur(y, (0, 0), chip / 2 + 1)
    return np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), 4.0))


def _strength(bgr: np.ndarray, chip: int) -> np.ndarray:
    """Per-pixel strength: local texture over its median, within MASK_FLOOR..MASK_CAP."""
    import numpy as np

    texture = _texture(luma(bgr), chip)
    return np.clip(texture / (float(np.median(texture)) + 1e-6), MASK_FLOOR, MASK_CAP)


def _pattern(strength: np.ndarray, chip: int, coded: np.ndarray, gains: np.ndarray, sync_gain: float) -> np.ndarray:
    """The change (float32, unit RMS, one value per pixel) that carries ``coded`` (0/1 array) at these strengths."""
    import numpy as np

    height, width = strength.shape
    period = CHIPS * chip
    tile = _render(_grid(coded, _layout(len(coded)), gains, sync_gain), chip)
    delta = np.tile(tile, (height // period + 1, width // period + 1))[:height, :width] * strength
    rms = float(np.sqrt(np.mean(delta * delta)))
    return delta / np.float32(rms) if rms > 0 else delta


def _direction(chroma_share: float) -> np.ndarray:
    """The BGR change per unit of pattern: luma on all channels plus the blue-yellow chroma direction, RMS-scaled."""
    import numpy as np

    luma_part = np.sqrt(1.0 - chroma_share) * np.ones(3)
    chroma_part = np.sqrt(chroma_share) * np.array(_U_DIRECTION_BGR) / np.sqrt(np.mean(np.square(_U_DIRECTION_BGR)))
    direction = luma_part + chroma_part
    return (direction * TARGET_RMS / np.sqrt(np.mean(direction**2))).astype(np.float32)


def embed(bgr: np.ndarray, coded: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """``bgr`` (uint8) with ``coded`` embedded in luma and blue-yellow chroma, informed by what the picture adds.

    ``gain`` scales the whole change (1.0: PSNR ~40.5 dB; each doubling costs 6 dB).

    The picture itself adds to every coded bit the decoder reads (host interference), helping some bits and
    hurting others. Each round reads the marked image back as the decoder would and moves strength from bits
    with a wide margin to bits with a narrow or wrong one, at the same total change (PSNR).
    """
    import numpy as np

    coded = np.asarray(coded, dtype=np.float32)
    signs = 2.0 * coded - 1.0
    gains = np.ones(len(coded), dtype=np.float32)
    height, width = bgr.shape[:2]
    chip = chip_size(width, height)
    small = height * width < SMALL_AREA
    strength = _strength(bgr, chip)
    direction = _direction(SMALL_CHROMA_SHARE if small else CHROMA_SHARE) * np.float32(gain)
    sync_gain = SMALL_SYNC_GAIN if small else 1.0
    source = bgr.astype(np.float32)

    def marked_with(gains: np.ndarray) -> np.ndarray:
        delta = _pattern(strength, chip, coded, gains, sync_gain)
        return np.clip(np.rint(source + delta[:, :, None] * direction), 0, 255).astype(np.uint8)

    for _ in range(SMALL_INFORMED_ROUNDS if small else INFORMED_ROUNDS):
        marked = marked_with(gains)
        margins = at_period(marked, CHIPS * chip, len(coded)).soft_bits * signs
        if small:
            halved = at_period(_halved_and_recompressed(marked), CHIPS * chip / 2, len(coded)).soft_bits * signs
            margins = 0.5 * (margins + halved)
        gains *= np.clip(1.0 + 0.5 * (1.0 - margins), 0.6, 1.8).astype(np.float32)
        gains /= np.float32(np.sqrt(np.mean(gains * gains)))
    return marked_with(gains)


def _halved_and_recompressed(bgr: np.ndarray) -> np.ndarray:
    """What a platform makes of a small image: half the size, then JPEG ``SIMULATED_QUALITY`` with 4:2:0 chroma."""
    import cv2

    halved = cv2.resize(bgr, (max(1, bgr.shape[1] // 2), max(1, bgr.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    flags = [
        cv2.IMWRITE_JPEG_QUALITY,
        SIMULATED_QUALITY,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    ]
    ok, encoded = cv2.imencode(".jpg", halved, flags)
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def chroma(bgr: np.ndarray) -> np.ndarray:
    """Blue-yellow chroma (U of YUV without its offset), float32."""
    import numpy as np

    return np.float32(0.492) * (bgr[..., 0].astype(np.float32) - luma(bgr))


def _whitened(bgr: np.ndarray) -> list[np.ndarray]:
    return [whiten(luma(bgr)), whiten(chroma(bgr))]


def whiten(y: np.ndarray) -> np.ndarray:
    """Band-pass luma divided by local contrast: the picture mostly gone, gain and offset cancelled."""
    import cv2
    import numpy as np

    band = cv2.GaussianBlur(y, (0, 0), 0.8) - cv2.GaussianBlur(y, (0, 0), 3.0)
    local = np.sqrt(cv2.GaussianBlur(band * band, (0, 0), 6.0)) + 1.0
    return np.clip(band / local, -2.5, 2.5).astype(np.float32)


def _fold_matrix(length: int, period: float, canonical: int) -> Any:
    """Sparse (length x canonical) weights: sample i goes to canonical position (i * canonical / period) mod canonical.

    Each sample is shared linearly between its two nearest canonical positions; built directly in CSR form
    (two entries per row) because the search builds hundreds of these.
    """
    import numpy as np
    from scipy.sparse import csr_matrix

    position = np.arange(length, dtype=np.float64) * (canonical / period)
    low = np.floor(position)
    frac = (position - low).astype(np.float32)
    low = low.astype(np.int64) % canonical
    return csr_matrix(
        (
            np.stack([1.0 - frac, frac], axis=1).ravel(),
            np.stack([low, (low + 1) % canonical], axis=1).ravel(),
            np.arange(0, 2 * length + 1, 2),
        ),
        shape=(length, canonical),
    )


def fold(r: np.ndarray, period: float, canonical: int) -> np.ndarray:
    """The whitened image folded onto one canonical tile, assuming a tile period of ``period`` px."""
    import numpy as np

    rows = _fold_matrix(r.shape[0], period, canonical)
    columns = _fold_matrix(r.shape[1], period, canonical)
    return np.asarray((columns.T @ (rows.T @ r).T).T)


def sync_peak(folded: np.ndarray, chip: int, coded_bits: int) -> tuple[float, tuple[int, int]]:
    """Best cyclic shift of the sync pattern in a folded tile, and its score in standard deviations."""
    import numpy as np

    z = _sync_scores(folded, chip, coded_bits)
    row, column = divmod(int(np.argmax(z)), folded.shape[1])
    return float(z[row, column]), (row, column)


def _sync_scores(folded: np.ndarray, chip: int, coded_bits: int) -> np.ndarray:
    """The sync pattern's correlation with a folded tile at every cyclic shift, in standard deviations."""
    import numpy as np

    spectrum = np.fft.rfft2(folded - folded.mean()) * _sync_spectrum(chip, coded_bits)
    correlation = np.fft.irfft2(spectrum, s=folded.shape)
    return (correlation - correlation.mean()) / (correlation.std() + 1e-12)


def _central(array: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` region (or less) of an image or plane: large images are searched there."""
    height, width = array.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return array[top : top + side, left : left + side]


def _period_grid(low: float, high: float, span: int) -> list[float]:
    """Candidate periods, denser for short periods: between two of them the fold drifts by at most a coarse chip."""
    periods = []
    period = low
    while period <= high:
        periods.append(period)
        tiles = span / period
        period *= 1.0 + 2.0 / (CHIPS * COARSE_CHIP * max(tiles, 1.0))
    return periods


def search(bgr: np.ndarray, coded_bits: int, hypotheses: int = HYPOTHESES) -> list[Hypothesis]:
    """The best (period, shift) hypotheses for the tile in ``bgr``, each with its soft coded bits, best first."""
    import cv2

    channels = _whitened(_central(bgr, FINE_REGION))
    r = channels[0] + channels[1]
    height, width = r.shape
    high = min(MAX_PERIOD, min(height, width) / 1.25)
    if high < MIN_PERIOD:
        return []
    # Large images are searched at half resolution over twice the region; small ones (where halving would blur
    # chips of 2 px away) at full resolution.
    scale = 0.5 if min(height, width) >= 4 * COARSE_REGION / 2 else 1.0
    region = _central(r, round(COARSE_REGION / scale))
    coarse = region if scale == 1.0 else cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    coarse_period = CHIPS * COARSE_CHIP
    scored = []
    for period in _period_grid(MIN_PERIOD, high, max(region.shape)):
        z, _ = sync_peak(fold(coarse, period * scale, coarse_period), COARSE_CHIP, coded_bits)
        scored.append((z, period))
    found = [_refine(bgr, period, coded_bits) for _, period in _local_maxima(scored)[:hypotheses]]
    return sorted(found, key=lambda h: -h.sync_z)


def _local_maxima(scored: list[tuple[float, float]]) -> list[tuple[float, float]]:
    maxima = [
        scored[i]
        for i in range(len(scored))
        if (i == 0 or scored[i][0] >= scored[i - 1][0]) and (i == len(scored) - 1 or scored[i][0] >= scored[i + 1][0])
    ]
    return sorted(maxima, reverse=True)


def _canonical(bgr: np.ndarray, period: float) -> tuple[list[np.ndarray], float]:
    """The whitened channels of the image's middle, resampled so a tile of ``period`` px becomes the canonical one.

    Whitening at the canonical scale keeps the band-pass matched to the chips whatever the copy's size: a halved
    copy read this way shows the sync ~1.4x more strongly than one whitened as found.
    """
    import cv2

    factor = CANONICAL_PERIOD / period
    region = _central(bgr, round(FINE_REGION / max(factor, 1.0)))
    if abs(factor - 1.0) > 0.05:
        interpolation = cv2.INTER_CUBIC if factor > 1.0 else cv2.INTER_AREA
        region = cv2.resize(region, None, fx=factor, fy=factor, interpolation=interpolation)
    else:
        factor = 1.0
    return _whitened(region), factor


def _refine(bgr: np.ndarray, period: float, coded_bits: int) -> Hypothesis:
    """Best period near a coarse ``period``, at the canonical scale, and the bits read there."""
    channels, factor = _canonical(bgr, period)
    summed = channels[0] + channels[1]
    centre = period * factor
    step = 1.0 / (CHIPS * CANONICAL_CHIP * max(max(summed.shape) / centre, 1.0))
    best_z, best_period = float("-inf"), centre
    for k in range(-REFINE_STEPS, REFINE_STEPS + 1):
        candidate = centre * (1.0 + k * step)
        z, _ = sync_peak(fold(summed, candidate, CANONICAL_PERIOD), CANONICAL_CHIP, coded_bits)
        if z > best_z:
            best_z, best_period = z, candidate
    found = _combined(channels, best_period, coded_bits)
    return Hypothesis(best_period / factor, found.shift, found.sync_z, found.soft_bits)


def _combined(channels: list[np.ndarray], period: float, coded_bits: int) -> Hypothesis:
    """Fold every channel at ``period``, find the sync in their sum, and read the bits from their weighted sum.

    Each channel is weighted by how strongly its own fold shows the sync at that shift (maximal-ratio combining):
    chroma that a JPEG wiped out adds no noise.
    """
    import numpy as np

    folds = [fold(channel, period, CANONICAL_PERIOD) for channel in channels]
    z, shift = sync_peak(sum(folds), CANONICAL_CHIP, coded_bits)
    weights = [max(float(_sync_scores(folded, CANONICAL_CHIP, coded_bits)[shift]), 0.0) for folded in folds]
    if not any(weights):
        weights = [1.0] * len(folds)
    combined = sum(w * f for w, f in zip(weights, folds, strict=True))
    return Hypothesis(float(period), shift, z, _read(np.asarray(combined), shift, coded_bits))


def _read(folded: np.ndarray, shift: tuple[int, int], coded_bits: int) -> np.ndarray:
    import numpy as np

    layout = _layout(coded_bits)
    aligned = np.roll(folded, (-shift[0], -shift[1]), axis=(0, 1))
    chips = aligned.reshape(CHIPS, CANONICAL_CHIP, CHIPS, CANONICAL_CHIP).mean(axis=(1, 3)).ravel()
    soft = np.zeros(coded_bits, dtype=np.float64)
    np.add.at(soft, layout.payload_bit, chips[layout.payload_index] * layout.payload_sign)
    scale = float(np.mean(np.abs(soft)))
    return soft / scale if scale > 0 else soft


def at_period(bgr: np.ndarray, period: float, coded_bits: int) -> Hypothesis:
    """The tile read at a known period (the image as it was marked, or a lossy copy of it): shift search only."""
    channels, factor = _canonical(bgr, period)
    found = _combined(channels, period * factor, coded_bits)
    return Hypothesis(float(period), found.shift, found.sync_z, found.soft_bits)
