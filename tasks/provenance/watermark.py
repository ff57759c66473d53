"""Invisible watermark carrying a self-checking ledger key: spreadTile (default), and invisible-watermark's methods.

The watermark links pixels to exactly one ledger record: it carries the record's *asset key* (a serial
number assigned by the ledger, starting at 1) together with check bits, so that decoding an unmarked or
foreign image essentially never resolves to a key.

``spreadTile`` (the default) is AssetMint's own: a tiled spread-spectrum mark in luma and blue-yellow chroma
(``tasks.provenance.spread_tile``) carrying a 64-bit word of key and keyed MAC under a rate-1/3 convolutional code
(``tasks.provenance.mark_payload``). Its check bits are an HMAC under the deployment's watermark secret
(``tasks.provenance.mark_secrets``), so nobody without the secret can write a mark that resolves; the audit finds
it again after crops, resizing, brightness and contrast changes, 4:2:0 JPEG and lossy WebP by searching tile sizes
and offsets (``decode_for_audit``). ``embed`` takes the current secret; ``decode`` and ``decode_for_audit`` take
every secret the deployment knows (current first, then retired) and report which one matched. Designed
false-match rate: ``false_match_rate`` (7 tag checks of 32 bits per audited image and secret, ~1.6e-9).

The invisible-watermark methods below stay for assets marked before spreadTile became the default (they must
keep verifying) and for deployments that chose them; they are unkeyed.

Payload layouts of the invisible-watermark methods (bits MSB first; ``payload_hex`` is the same word in hex)
------------------------------------------------------------------------------------------------------------
``dwtDct`` and ``dwtDctSvd`` carry 64 bits::

    | version: 8 (= 1) | key: 32 | CRC-24/OPENPGP over version+key: 24 |   XOR a fixed 64-bit mask

    key capacity 1 .. 4,294,967,295 (2**32 - 1)
    false match per decode of a random bit pattern: (2**32 - 1) / 2**64 ~= 2**-32 ~= 2.3e-10
    the CRC (poly 0x864CFB, init 0xB704CE) has Hamming distance 6 at this length: every error of
    1 to 5 bits in a valid payload is rejected, so a damaged mark never turns into a *different* key
    unless 6 or more bits flipped.

``rivaGan`` carries 32 bits (the only length its model supports)::

    | key: 16 | CRC-16/EN-13757 over (implicit version byte 1 + key): 16 |   XOR a fixed 32-bit mask

    key capacity 1 .. 65,535 (2**16 - 1)
    false match per decode of a random bit pattern: (2**16 - 1) / 2**32 ~= 2**-16 ~= 1.5e-5
    the CRC (poly 0x3D65, the best catalogued 16-bit CRC at this length) has Hamming distance 6
    here, so every error of 1 to 5 bits is rejected as well.

Both figures are per random decode; a false match that also names a key the ledger has actually issued
is rarer again by (issued keys / capacity). rivaGan's 2**-16 is the reason it is not the default.

The XOR mask (the first 8 resp. 4 bytes of SHA-256 of ``b"assetmint/watermark/v1/dwt"`` resp.
``b"assetmint/watermark/v1/rivaGan"``) whitens the payload: small keys do not produce mostly-zero
payloads, and the patterns that unmarked images decode to most often (all zeros, all ones, long runs)
sit far from every valid payload. All-zero and all-one patterns are invalid for both layouts (tested).
Key 0 is reserved (never issued, never resolved); keys beyond the capacity are refused with an error.

Image handling
--------------
* Both sides must be at least ``MIN_SIDE`` (256) px; smaller images raise ``WatermarkError`` naming the
  size (invisible-watermark itself only checks the *area*, so 128x1024 would slip through there).
* Modes: RGB is marked as is. RGBA (and LA, La, PA, RGBa, and P, L or RGB with a transparency key) is
  marked on its colour channels and returned as RGBA with the alpha channel unchanged. Every other mode
  (L, 1, P, I, I;16, F, CMYK, YCbCr, LAB, HSV, RGBX) is converted to RGB and returned as RGB: the dwt
  methods write into the chroma (U) channel, so a grayscale image cannot stay grayscale and keep its
  mark. An ICC profile in ``image.info`` is carried over to the result.
* dwt methods: the marks are written with invisible-watermark's own block quantiser, run on the U (chroma)
  approximation band only (``_u_delta``); the change is mapped back to RGB here (``_apply_u_delta``). The
  library's ``encode`` would reconstruct U with its horizontal and vertical Haar details swapped (colour
  fringes of up to ~170 levels at sharp edges), truncate U into uint8 (wrapping past 0 and 255) and clip
  the colours, which erased the mark on white and other colours at a channel's limit. Here each pixel's U
  changes with Y and V kept where that stays in gamut, and otherwise by the nearest in-gamut colour with the
  same U change: white backgrounds carry the mark with changes of ~9 levels (library: 141, and the mark lost).
  Saturated blue and yellow are the ends of the U range: no colour change raises resp. lowers U there, so
  such flat areas cannot carry every bit and ``embed_verified`` refuses them. The library's decoder is used
  unchanged.
* The dwt marks live in 4x4 blocks of the half-resolution U channel, tiled in raster order: they
  survive mild re-encoding but not cropping (the tiling shifts), nor a brightness change (the
  quantisation is on absolute magnitudes), and a resize only when the image is scaled back to its
  original size before decoding (``decode_for_audit`` with candidate sizes does that).

Methods (numbers from benchmarks/watermark_robustness.py, 7 photos + 9 procedural images)
-----------------------------------------------------------------------------------------
* ``dwtDctSvd`` (default): quantises the largest singular value of each block's DCT. Clean round trip
  on every image; JPEG q90 and resize-then-scale-back 100%, JPEG q75 89-100%, JPEG q50 0-100% and
  WebP q80 33-67% (better at 1024²), crop and brightness +-20% mostly lost. ~58 ms embed / ~36 ms decode
  at 512², ~0.25 s / 0.15 s at 1024².
* ``dwtDct``: despite its name it applies no DCT; it quantises the largest of the 16 samples of each
  block, so in smooth chroma the maximum moves and bits flip: clean round trips fail on most images
  with a 64-bit payload (``embed_verified`` refuses them). Only for strongly textured images.
* ``rivaGan``: a neural encoder/decoder (ONNX). The most robust on photographs (crop, brightness,
  0.75x resize as-is), but its clean round trip fails on flat, synthetic-looking images, its payload
  is 32 bits (weaker check, keys up to 65,535), and it costs ~0.6 s per embed or decode at 512² and
  3-3.5 s at 1024² on CPU.

Heavy imports (numpy, cv2, pywt, imwatermark, which imports torch, and onnxruntime) happen inside the
functions that need them, so importing this module is cheap. The rivaGan ONNX models load once per
process and are reused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from policies.watermark import MIN_SIDE, WatermarkMethod
from tasks.core.cache import load_once
from tasks.core.errors import WatermarkError
from tasks.provenance import mark_payload, spread_tile

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

MIN_DECODE_SIDE = 96  # spreadTile: the smallest image that still holds most of a tile at the smallest tile size
# spreadTile's strength for a picture whose first mark did not read back: ~3.5 dB lower PSNR (~37 dB).
REINFORCED_GAIN = 1.5

logger = logging.getLogger(__name__)

__all__ = [
    "MIN_SIDE",
    "DecodeResult",
    "WatermarkMethod",
    "WatermarkVerificationError",
    "decode",
    "decode_for_audit",
    "embed",
    "embed_verified",
    "embedded_bits",
    "false_match_rate",
    "key_from_bits",
    "max_key",
    "method_of_alg",
    "watermark_alg",
    "payload_bits",
    "payload_hex",
    "payload_length",
]


class WatermarkVerificationError(WatermarkError):
    """The watermark read back from a freshly marked image is not the one that was embedded."""


@dataclass(frozen=True)
class DecodeResult:
    """What one decode found: the key (None when the check bits fail), the raw bits, and how it was read."""

    key: int | None
    bits: tuple[int, ...]
    method: WatermarkMethod
    attempt: str  # "as-is", "rescaled to WxH", or "search: tile period P px, sync z"
    payload: str | None = None  # the payload word as hex when a key was found (what the soft binding carries)
    secret_index: int | None = None  # spreadTile: which of the secrets given matched


# --------------------------------------------------------------------------------------------------
# Payload: key <-> bits
# --------------------------------------------------------------------------------------------------

_VERSION = 1


@dataclass(frozen=True)
class _Layout:
    total_bits: int
    version_bits: int  # transmitted version field; 0 = version only enters the CRC
    key_bits: int
    crc_bits: int
    crc_poly: int
    crc_init: int
    crc_xorout: int
    mask: int


_DWT_LAYOUT = _Layout(
    total_bits=64,
    version_bits=8,
    key_bits=32,
    crc_bits=24,
    crc_poly=0x864CFB,  # CRC-24/OPENPGP
    crc_init=0xB704CE,
    crc_xorout=0,
    mask=0xB32F86F77D8D2226,  # sha256(b"assetmint/watermark/v1/dwt")[:8]
)
_RIVAGAN_LAYOUT = _Layout(
    total_bits=32,
    version_bits=0,
    key_bits=16,
    crc_bits=16,
    crc_poly=0x3D65,  # CRC-16/EN-13757 (the DNP polynomial, MSB first)
    crc_init=0x0000,
    crc_xorout=0xFFFF,
    mask=0xE51D55E8,  # sha256(b"assetmint/watermark/v1/rivaGan")[:4]
)


def _method(method: WatermarkMethod | str) -> WatermarkMethod:
    try:
        return WatermarkMethod(method)
    except ValueError:
        allowed = ", ".join(m.value for m in WatermarkMethod)
        raise WatermarkError(f"unknown watermark method {method!r}; allowed: {allowed}") from None


def _layout(method: WatermarkMethod | str) -> _Layout:
    return _RIVAGAN_LAYOUT if _method(method) is WatermarkMethod.RIVAGAN else _DWT_LAYOUT


def _crc(message: int, nbits: int, width: int, poly: int, init: int, xorout: int = 0) -> int:
    """MSB-first (unreflected) CRC of the low ``nbits`` bits of ``message``."""
    crc = init
    top = width - 1
    mask = (1 << width) - 1
    for i in range(nbits - 1, -1, -1):
        feedback = ((crc >> top) & 1) ^ ((message >> i) & 1)
        crc = (crc << 1) & mask
        if feedback:
            crc ^= poly
    return crc ^ xorout


def _check(layout: _Layout, key: int) -> int:
    message = (_VERSION << layout.key_bits) | key
    return _crc(message, 8 + layout.key_bits, layout.crc_bits, layout.crc_poly, layout.crc_init, layout.crc_xorout)


IMWATERMARK_ALG_PREFIX = "com.assetmint.imwatermark."  # + method: the invisible-watermark methods' soft binding
SPREAD_TILE_ALG = "com.assetmint.spreadTile.1"


def watermark_alg(method: WatermarkMethod | str) -> str:
    """The C2PA soft-binding algorithm name of a watermark method."""
    method = _method(method)
    return SPREAD_TILE_ALG if method is WatermarkMethod.SPREAD_TILE else IMWATERMARK_ALG_PREFIX + method.value


def method_of_alg(alg: object) -> str | None:
    """The watermark method a soft-binding algorithm name stands for, or None when it is not one of ours."""
    if alg == SPREAD_TILE_ALG:
        return WatermarkMethod.SPREAD_TILE.value
    if isinstance(alg, str) and alg.startswith(IMWATERMARK_ALG_PREFIX):
        named = alg[len(IMWATERMARK_ALG_PREFIX) :]
        if named in {m.value for m in WatermarkMethod} and named != WatermarkMethod.SPREAD_TILE.value:
            return named
    return None


def _is_spread_tile(method: WatermarkMethod | str) -> bool:
    return _method(method) is WatermarkMethod.SPREAD_TILE


def _secret(secret: bytes | None) -> bytes:
    if not secret:
        raise WatermarkError(
            "the spreadTile watermark needs the watermark secret (signing.watermark_secret, or the development "
            "secret `assetmint keys init` creates)"
        )
    return secret


def max_key(method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE) -> int:
    """Largest asset key the method's payload can carry (keys run from 1 to this)."""
    if _is_spread_tile(method):
        return mark_payload.MAX_KEY
    return (1 << _layout(method).key_bits) - 1


def payload_length(method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE) -> int:
    """Bits of the payload word the soft binding carries (64 for spreadTile and the dwt methods, 32 for rivaGan)."""
    if _is_spread_tile(method):
        return mark_payload.INFO_BITS
    return _layout(method).total_bits


def false_match_rate(method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE, secrets: int = 1) -> float:
    """Designed chance that decoding an unmarked image yields some key, per image (the audit's full search)."""
    if _is_spread_tile(method):
        return mark_payload.false_match_rate(spread_tile.HYPOTHESES + 1, secrets)
    layout = _layout(method)
    return ((1 << layout.key_bits) - 1) / 2.0**layout.total_bits


def _payload_word(key: int, method: WatermarkMethod | str, secret: bytes | None = None) -> int:
    if _is_spread_tile(method):
        return mark_payload.info_word(key, _secret(secret))
    layout = _layout(method)
    if isinstance(key, bool) or not isinstance(key, int):
        raise WatermarkError(f"watermark key must be an integer, got {key!r}")
    top = (1 << layout.key_bits) - 1
    if not 1 <= key <= top:
        raise WatermarkError(
            f"watermark key {key} is out of range for {_method(method).value}: keys run from 1 to {top}"
            + (" (key 0 is reserved)" if key == 0 else "")
        )
    word = key << layout.crc_bits | _check(layout, key)
    if layout.version_bits:
        word |= _VERSION << (layout.key_bits + layout.crc_bits)
    return word ^ layout.mask


def payload_bits(
    key: int, method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE, secret: bytes | None = None
) -> list[int]:
    """The payload word for ``key`` as bits, MSB first: key plus check bits (spreadTile: its keyed MAC, masked)."""
    n = payload_length(method)
    word = _payload_word(key, method, secret)
    return [(word >> (n - 1 - i)) & 1 for i in range(n)]


def embedded_bits(
    key: int, method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE, secret: bytes | None = None
) -> list[int]:
    """The bits written into the pixels: the payload, and for spreadTile its 210 error-correcting coded bits."""
    if _is_spread_tile(method):
        return [int(b) for b in mark_payload.encode(key, _secret(secret))]
    return payload_bits(key, method)


def payload_hex(
    key: int, method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE, secret: bytes | None = None
) -> str:
    """The payload word as lowercase hex (16 digits for spreadTile and the dwt methods, 8 for rivaGan), for C2PA."""
    return f"{_payload_word(key, method, secret):0{payload_length(method) // 4}x}"


def key_from_bits(bits: Sequence[int], method: WatermarkMethod | str = WatermarkMethod.DWT_DCT_SVD) -> int | None:
    """The asset key carried by decoded ``bits`` of an unkeyed method, or None when the check bits do not match."""
    if _is_spread_tile(method):
        raise WatermarkError("spreadTile keys are read from soft bits with the watermark secret: use decode()")
    layout = _layout(method)
    if len(bits) != layout.total_bits:
        raise WatermarkError(f"{_method(method).value} payloads have {layout.total_bits} bits, got {len(bits)}")
    word = 0
    for bit in bits:
        value = int(bit)
        if value not in (0, 1):
            raise WatermarkError(f"watermark bits must be 0 or 1, got {bit!r}")
        word = (word << 1) | value
    word ^= layout.mask
    crc = word & ((1 << layout.crc_bits) - 1)
    key = (word >> layout.crc_bits) & ((1 << layout.key_bits) - 1)
    version = word >> (layout.key_bits + layout.crc_bits)
    if layout.version_bits and version != _VERSION:
        return None
    if key == 0 or crc != _check(layout, key):
        return None
    return key


# --------------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------------

# OpenCV's BGR <-> YUV (cv2.COLOR_BGR2YUV): U = 0.492 (B - Y) + 128, Y = 0.299 R + 0.587 G + 0.114 B.
_U_GRADIENT_BGR = (0.492 * (1 - 0.114), 0.492 * -0.587, 0.492 * -0.299)  # dU per unit change of B, G, R
# The U change that keeps Y and V: dB = 2.032 dU, dG = -0.395 dU, dR = 0 (OpenCV's YUV -> BGR gains).
_U_DIRECTION_BGR = (2.032, -0.395, 0.0)


@load_once
def _load_rivagan() -> None:
    """Load the rivaGan ONNX encoder and decoder once per process."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise WatermarkError("the rivaGan watermark needs onnxruntime; install it or choose dwtDctSvd") from exc
    from imwatermark import WatermarkEncoder

    try:
        WatermarkEncoder.loadModel()
    except ValueError:
        # GPU builds of some onnxruntime releases refuse an InferenceSession created without
        # explicit providers, which is how invisible-watermark 0.2.0 creates its sessions.
        import os

        from imwatermark import rivaGan

        providers = [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in onnxruntime.get_available_providers()
        ]
        folder = os.path.dirname(os.path.abspath(rivaGan.__file__))
        rivaGan.RivaWatermark.encoder = onnxruntime.InferenceSession(
            os.path.join(folder, "rivagan_encoder.onnx"), providers=providers
        )
        rivaGan.RivaWatermark.decoder = onnxruntime.InferenceSession(
            os.path.join(folder, "rivagan_decoder.onnx"), providers=providers
        )


def _check_size(image: Image.Image, action: str) -> None:
    width, height = image.size
    if width < MIN_SIDE or height < MIN_SIDE:
        raise WatermarkError(
            f"cannot {action} a {width}x{height} px image: the watermark needs at least "
            f"{MIN_SIDE} px on each side (policy watermark.upscale_small allows upscaling first)"
        )


def _to_bgr(image: Image.Image) -> tuple[np.ndarray, Image.Image | None]:
    """BGR uint8 array of the colour channels, plus the alpha band when the image has transparency."""
    import numpy as np

    mode = image.mode
    try:
        if mode == "RGB" and "transparency" not in image.info:
            rgb, alpha = image, None
        elif mode in ("RGBA", "LA", "La", "PA", "RGBa") or "transparency" in image.info:
            source = image.convert("LA") if mode == "La" else image  # Pillow has no La -> RGBA
            rgba = source if mode == "RGBA" else source.convert("RGBA")
            rgb, alpha = rgba.convert("RGB"), rgba.getchannel("A")
        else:
            rgb, alpha = image.convert("RGB"), None
    except (ValueError, OSError) as exc:
        raise WatermarkError(f"cannot convert a {mode} image to RGB for watermarking: {exc}") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(array[:, :, ::-1]), alpha


def _from_bgr(bgr: np.ndarray, alpha: Image.Image | None, source: Image.Image) -> Image.Image:
    from PIL import Image

    out = Image.fromarray(bgr[:, :, ::-1].copy())
    if alpha is not None:
        out.putalpha(alpha)
    icc = source.info.get("icc_profile")
    if icc:
        out.info["icc_profile"] = icc
    return out


def _u_delta(bgr: np.ndarray, bits: Sequence[int], method: WatermarkMethod) -> np.ndarray:
    """The per-pixel U change that writes ``bits``: invisible-watermark's block quantiser on the U approximation band.

    The library's own ``encode`` reconstructs U with its detail bands swapped, truncates it into uint8 (wrapping
    past 0 and 255) and clips the colours; running only its quantiser and mapping the change back here avoids all
    three. The decoder reads nothing but this approximation band.
    """
    import cv2
    import numpy as np
    import pywt
    from imwatermark.dwtDctSvd import EmbedDwtDctSvd
    from imwatermark.maxDct import EmbedMaxDct

    quantiser_class = EmbedDwtDctSvd if method is WatermarkMethod.DWT_DCT_SVD else EmbedMaxDct
    quantiser = quantiser_class(watermarks=list(bits), wmLen=len(bits), block=4)
    scales = getattr(quantiser, "_scales", None)
    if not callable(getattr(quantiser, "encode_frame", None)) or not isinstance(scales, list) or len(scales) < 2:
        raise WatermarkError(
            f"this invisible-watermark release has no {quantiser_class.__name__}.encode_frame and _scales, the block "
            f"quantiser AssetMint writes {method.value} marks with; install invisible-watermark 0.2.x"
        )
    rows, cols = bgr.shape[0] // 4 * 4, bgr.shape[1] // 4 * 4
    u = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)[:rows, :cols, 1].astype(np.float64)
    approx, _ = pywt.dwt2(u, "haar")
    marked = approx.copy()
    # The library's own U-channel step, the one its decoder assumes (36 in 0.2.x for both dwt methods).
    quantiser.encode_frame(marked, scales[1])
    zeros = np.zeros_like(approx)
    delta = np.zeros(bgr.shape[:2], dtype=np.float64)
    delta[:rows, :cols] = pywt.idwt2((marked - approx, (zeros, zeros, zeros)), "haar")
    return delta


def _apply_u_delta(bgr: np.ndarray, delta_u: np.ndarray) -> np.ndarray:
    """Change each pixel's U by ``delta_u``: with Y and V kept where that stays in gamut, else by the least change.

    Near white (and other colours at a channel's limit) the Y- and V-preserving change would be clipped and the
    mark lost; there the pixel moves to the closest in-gamut colour with the same U change. At the ends of the U
    range (saturated blue and yellow) no such colour exists for every bit, and ``embed_verified`` refuses the image.
    """
    import numpy as np

    source = bgr.astype(np.float64)
    out = source + delta_u[:, :, None] * np.array(_U_DIRECTION_BGR)
    outside = ((out < 0) | (out > 255)).any(axis=2)
    if outside.any():
        out[outside] = _nearest_in_gamut(source[outside], out[outside], delta_u[outside])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _nearest_in_gamut(source: np.ndarray, ideal: np.ndarray, delta_u: np.ndarray) -> np.ndarray:
    """Per row: the point of {x in [0, 255]^3 : U(x) = U(source) + delta_u} nearest ``ideal``, else ``ideal`` clipped.

    By active sets: the optimum has some channels at 0 or 255 and is, on the others, the projection of ``ideal``
    onto the U plane; the nearest such candidate inside the cube is it. Only bounds that some source or ideal
    colour reaches are tried (7 candidates for white instead of 26).
    """
    import itertools

    import numpy as np

    gradient = np.array(_U_GRADIENT_BGR)
    target = source @ gradient + delta_u
    options = [
        [None]
        + [0.0] * bool((np.minimum(source[:, c], ideal[:, c]) < 0.5).any())
        + [255.0] * bool((np.maximum(source[:, c], ideal[:, c]) > 254.5).any())
        for c in range(3)
    ]
    best = np.clip(ideal, 0, 255)
    best_distance = np.full(len(ideal), np.inf)
    for bounds in itertools.product(*options):
        free = [c for c, bound in enumerate(bounds) if bound is None]
        if not free:
            continue
        # Fixed channels sit on their bound; free ones move from the ideal along their part of the U gradient.
        anchor = [ideal[:, c] if bound is None else bound for c, bound in enumerate(bounds)]
        norm = sum(gradient[c] ** 2 for c in free)
        step = (target - sum(gradient[c] * anchor[c] for c in range(3))) / norm
        candidate = [anchor[c] + step * gradient[c] if c in free else anchor[c] for c in range(3)]
        distance = sum((candidate[c] - ideal[:, c]) ** 2 for c in range(3))
        better = distance < best_distance
        for c in free:
            better &= (candidate[c] >= -1e-6) & (candidate[c] <= 255 + 1e-6)
        best_distance = np.where(better, distance, best_distance)
        for c in range(3):
            best[:, c] = np.where(better, candidate[c], best[:, c])
    return best


def _embed_bgr(bgr: np.ndarray, bits: Sequence[int], method: WatermarkMethod) -> np.ndarray:
    """Embed ``bits`` into a BGR uint8 array and return the marked array."""
    if method is WatermarkMethod.RIVAGAN:
        _load_rivagan()
        return library_embed_bgr(bgr, bits, method)
    return _apply_u_delta(bgr, _u_delta(bgr, bits, method))


def library_embed_bgr(bgr: np.ndarray, bits: Sequence[int], method: WatermarkMethod) -> np.ndarray:
    """invisible-watermark's own ``encode``, unmodified: the baseline the benchmark and tests compare against."""
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(bits))
    return encoder.encode(bgr, method.value)


def _decode_bgr(bgr: np.ndarray, method: WatermarkMethod) -> tuple[int, ...]:
    """Raw bits invisible-watermark reads from a BGR uint8 array."""
    if method is WatermarkMethod.RIVAGAN:
        _load_rivagan()
    from imwatermark import WatermarkDecoder

    decoder = WatermarkDecoder("bits", _layout(method).total_bits)
    return tuple(int(b) for b in decoder.decode(bgr, method.value))


def embed(
    image: Image.Image,
    key: int,
    method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE,
    secret: bytes | None = None,
    gain: float = 1.0,
) -> Image.Image:
    """A copy of ``image`` carrying ``key`` (RGB, or RGBA with alpha kept); spreadTile needs the watermark secret.

    ``gain`` scales spreadTile's strength (1.0 keeps PSNR ~40.5 dB); the other methods have a fixed strength.
    """
    method = _method(method)
    bits = embedded_bits(key, method, secret)
    _check_size(image, "watermark")
    bgr, alpha = _to_bgr(image)
    if method is WatermarkMethod.SPREAD_TILE:
        import numpy as np

        return _from_bgr(spread_tile.embed(bgr, np.array(bits, dtype=np.uint8), gain), alpha, image)
    return _from_bgr(_embed_bgr(bgr, bits, method), alpha, image)


def _tile_result(hypotheses: Sequence[spread_tile.Hypothesis], secrets: Sequence[bytes], attempt: str) -> DecodeResult:
    """The first hypothesis whose payload names a key under one of ``secrets``; else the best one, keyless."""
    for hypothesis in hypotheses:
        found = mark_payload.recover(hypothesis.soft_bits, secrets)
        if found is not None:
            return DecodeResult(
                key=found.key,
                bits=tuple(int(b) for b in hypothesis.soft_bits > 0),
                method=WatermarkMethod.SPREAD_TILE,
                attempt=f"{attempt}: tile period {hypothesis.period:.1f} px, sync {hypothesis.sync_z:.1f} sigma",
                payload=payload_hex(found.key, WatermarkMethod.SPREAD_TILE, secrets[found.secret_index]),
                secret_index=found.secret_index,
            )
    bits = tuple(int(b) for b in hypotheses[0].soft_bits > 0) if hypotheses else ()
    return DecodeResult(key=None, bits=bits, method=WatermarkMethod.SPREAD_TILE, attempt=attempt)


def _check_decodable(image: Image.Image, method: WatermarkMethod) -> None:
    if method is not WatermarkMethod.SPREAD_TILE:
        _check_size(image, "decode the watermark of")
    elif min(image.size) < MIN_DECODE_SIDE:
        raise WatermarkError(
            f"cannot decode the watermark of a {image.size[0]}x{image.size[1]} px image: spreadTile needs at least "
            f"{MIN_DECODE_SIDE} px on each side"
        )


def decode(
    image: Image.Image, method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE, secrets: Sequence[bytes] = ()
) -> DecodeResult:
    """Read the watermark of ``image`` as it is (spreadTile: at the tile size it was embedded with, any crop offset)."""
    method = _method(method)
    _check_decodable(image, method)
    bgr, _ = _to_bgr(image)
    if method is WatermarkMethod.SPREAD_TILE:
        width, height = image.size
        period = spread_tile.CHIPS * spread_tile.chip_size(width, height)
        return _tile_result([spread_tile.at_period(bgr, period, mark_payload.CODED_BITS)], secrets, "as-is")
    bits = _decode_bgr(bgr, method)
    key = key_from_bits(bits, method)
    return DecodeResult(
        key=key, bits=bits, method=method, attempt="as-is", payload=payload_hex(key, method) if key else None
    )


def embed_verified(
    image: Image.Image,
    key: int,
    method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE,
    secret: bytes | None = None,
) -> Image.Image:
    """Embed ``key``, decode it back, and raise WatermarkVerificationError unless the same key comes out.

    A spreadTile mark that does not read back (a small or flat picture leaves the sync too weak at PSNR 40) is
    embedded once more at ``REINFORCED_GAIN`` before the asset is given up on.
    """
    method = _method(method)
    secrets = (secret,) if secret else ()
    marked = embed(image, key, method, secret)
    result = decode(marked, method, secrets)
    if result.key != key and method is WatermarkMethod.SPREAD_TILE:
        logger.warning(
            "spreadTile mark did not read back on a %dx%d image; embedding it at %.1fx strength (lower PSNR)",
            *image.size,
            REINFORCED_GAIN,
        )
        marked = embed(image, key, method, secret, REINFORCED_GAIN)
        result = decode(marked, method, secrets)
    if result.key != key:
        expected = embedded_bits(key, method, secret)
        agree = sum(a == b for a, b in zip(expected, result.bits, strict=False))
        decoded = "no valid key" if result.key is None else f"key {result.key}"
        raise WatermarkVerificationError(
            f"{method.value} watermark did not verify on a {image.size[0]}x{image.size[1]} image: "
            f"embedded key {key} (payload {payload_hex(key, method, secret)}), decoded {decoded} "
            f"({agree}/{len(expected)} bits agree)"
        )
    return marked


def decode_for_audit(
    image: Image.Image,
    method: WatermarkMethod | str = WatermarkMethod.SPREAD_TILE,
    candidate_sizes: Sequence[tuple[int, int]] = (),
    secrets: Sequence[bytes] = (),
) -> DecodeResult:
    """Decode as-is, then search: spreadTile over tile sizes and offsets, the others rescaled to each candidate size.

    When nothing resolves, the as-is result is returned (or the first rescaled one when the image is
    too small to decode as it is). Raises WatermarkError when no attempt was possible at all.
    """
    from PIL import Image

    method = _method(method)
    if method is WatermarkMethod.SPREAD_TILE:
        first = decode(image, method, secrets)
        if first.key is not None:
            return first
        bgr, _ = _to_bgr(image)
        found = _tile_result(spread_tile.search(bgr, mark_payload.CODED_BITS), secrets, "search")
        return found if found.key is not None else first
    first: DecodeResult | None = None
    width, height = image.size
    if width >= MIN_SIDE and height >= MIN_SIDE:
        first = decode(image, method)
        if first.key is not None:
            return first
    tried = {(width, height)}
    for size in candidate_sizes:
        target = (int(size[0]), int(size[1]))
        if target in tried or min(target) < MIN_SIDE:
            continue
        tried.add(target)
        resample = Image.Resampling.LANCZOS
        scaled = image.resize(target, resample)
        result = decode(scaled, method)
        result = replace(result, attempt=f"rescaled to {target[0]}x{target[1]}")
        if result.key is not None:
            return result
        first = first or result
    if first is None:
        raise WatermarkError(
            f"cannot decode the watermark of a {width}x{height} px image: it needs at least {MIN_SIDE} px "
            f"on each side and no candidate size of at least {MIN_SIDE}x{MIN_SIDE} was given"
        )
    return first
