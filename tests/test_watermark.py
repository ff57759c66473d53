"""Invisible watermark: payload check bits, embedding round trips, refusals and audit decoding."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from pydantic import ValidationError

from policies.watermark import WatermarkPolicy
from tasks.core.errors import WatermarkError
from tasks.provenance import watermark as wm
from tasks.provenance.watermark import (
    MIN_SIDE,
    DecodeResult,
    WatermarkMethod,
    WatermarkVerificationError,
    key_from_bits,
    max_key,
    payload_bits,
    payload_hex,
)

DWT_METHODS = [WatermarkMethod.DWT_DCT, WatermarkMethod.DWT_DCT_SVD]

# This file tests the unkeyed invisible-watermark methods, dwtDctSvd by default (it was AssetMint's default before
# spreadTile, and assets marked with it must keep verifying); spreadTile has its own tests in test_spread_tile.py.
SVD = WatermarkMethod.DWT_DCT_SVD


def embed(image: Image.Image, key: int, method: WatermarkMethod = SVD) -> Image.Image:
    return wm.embed(image, key, method)


def embed_verified(image: Image.Image, key: int, method: WatermarkMethod = SVD) -> Image.Image:
    return wm.embed_verified(image, key, method)


def decode(image: Image.Image, method: WatermarkMethod = SVD) -> DecodeResult:
    return wm.decode(image, method)


def decode_for_audit(
    image: Image.Image, method: WatermarkMethod = SVD, candidate_sizes: list[tuple[int, int]] | None = None
) -> DecodeResult:
    return wm.decode_for_audit(image, method, candidate_sizes or [])


UNKEYED = [m for m in WatermarkMethod if m is not WatermarkMethod.SPREAD_TILE]


def natural_image(size: int = 512, seed: int = 0) -> Image.Image:
    """A photo-like test image: 1/f ("pink") light and colour fields, a sky-like tint gradient, soft shapes
    and fine sensor-like noise. 1/f spectra are what natural photographs have; flat synthetic shapes alone
    are not enough for rivaGan, whose model was trained on natural video."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0

    def pink_field() -> np.ndarray:
        spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius
        field = np.fft.irfft2(spectrum, s=(size, size))
        return (field - field.mean()) / field.std()

    light = pink_field()
    colour = np.stack([pink_field() for _ in range(3)], axis=2)
    tint = rng.uniform(-40, 40, 3)
    y = np.linspace(0, 1, size)[:, None, None]
    pixels = 120 + tint * (1 - 2 * y) + 35 * light[:, :, None] + 12 * colour
    base = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(base)
    for _ in range(6):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 12, size // 4, 2)
        fill = tuple(int(v) for v in rng.integers(40, 215, 3))
        draw.ellipse([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=fill)
    soft = np.asarray(base.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64)
    return Image.fromarray(np.clip(soft + rng.normal(0, 3, soft.shape), 0, 255).astype(np.uint8))


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((x - y) ** 2)))


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return natural_image(512, seed=0)


@pytest.fixture(scope="module")
def textured(photo: Image.Image) -> Image.Image:
    """The photo overlaid with fine, colourful texture (foliage, fabric): what dwtDct needs to hold."""
    rng = np.random.default_rng(1)
    texture = np.stack(
        [
            np.asarray(
                Image.fromarray(rng.normal(128, 40, photo.size[::-1]).clip(0, 255).astype(np.uint8)).filter(
                    ImageFilter.GaussianBlur(0.7)
                ),
                dtype=np.float64,
            )
            - 128
            for _ in range(3)
        ],
        axis=2,
    )
    return Image.fromarray(np.clip(np.asarray(photo, dtype=np.float64) + texture, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def marked_svd(photo: Image.Image) -> Image.Image:
    return embed(photo, 123_456, WatermarkMethod.DWT_DCT_SVD)


# ---------------------------------------------------------------------------------------------------
# Payload
# ---------------------------------------------------------------------------------------------------


def test_crc_implementations_match_the_catalogue_check_values() -> None:
    message = int.from_bytes(b"123456789")
    assert wm._crc(message, 72, 24, 0x864CFB, 0xB704CE) == 0x21CF02  # CRC-24/OPENPGP
    assert wm._crc(message, 72, 16, 0x3D65, 0x0000, 0xFFFF) == 0xC2B7  # CRC-16/EN-13757


@pytest.mark.parametrize("method", UNKEYED)
def test_payload_round_trips_including_max_key(method: WatermarkMethod) -> None:
    length = 32 if method is WatermarkMethod.RIVAGAN else 64
    assert max_key(method) == (2**16 - 1 if method is WatermarkMethod.RIVAGAN else 2**32 - 1)
    for key in (1, 2, 255, 65_535, 12_345, max_key(method)):
        if key > max_key(method):
            continue
        bits = payload_bits(key, method)
        assert len(bits) == length and set(bits) <= {0, 1}
        assert key_from_bits(bits, method) == key
        assert key_from_bits(tuple(bool(b) for b in bits), method) == key
        hexed = payload_hex(key, method)
        assert len(hexed) == length // 4
        assert int(hexed, 16) == int("".join(map(str, bits)), 2)


@pytest.mark.parametrize("method", UNKEYED)
def test_bad_keys_are_refused_naming_the_range(method: WatermarkMethod) -> None:
    top = max_key(method)
    for key in (0, -1, top + 1):
        with pytest.raises(WatermarkError, match=rf"keys run from 1 to {top}"):
            payload_bits(key, method)
    for key in (True, 1.0, "7"):
        with pytest.raises(WatermarkError, match="must be an integer"):
            payload_bits(key, method)  # type: ignore[arg-type]
    with pytest.raises(WatermarkError, match="unknown watermark method 'lsb'.*dwtDctSvd"):
        payload_bits(1, "lsb")


@pytest.mark.parametrize("method", UNKEYED)
def test_constant_and_malformed_bit_patterns_resolve_to_nothing(method: WatermarkMethod) -> None:
    n = len(payload_bits(1, method))
    assert key_from_bits([0] * n, method) is None
    assert key_from_bits([1] * n, method) is None
    assert key_from_bits([0, 1] * (n // 2), method) is None
    assert key_from_bits([1, 0] * (n // 2), method) is None
    with pytest.raises(WatermarkError, match=f"have {n} bits, got {n - 1}"):
        key_from_bits([0] * (n - 1), method)
    with pytest.raises(WatermarkError, match="0 or 1"):
        key_from_bits([2] + [0] * (n - 1), method)


@pytest.mark.parametrize("method", UNKEYED)
def test_random_bit_patterns_are_rejected_as_designed(method: WatermarkMethod) -> None:
    n = len(payload_bits(1, method))
    patterns = np.random.default_rng(7).integers(0, 2, size=(100_000, n)).tolist()
    accepted = sum(key_from_bits(p, method) is not None for p in patterns)
    # Designed false acceptance: 2**-32 for the dwt layout (expect 0), 2**-16 for rivaGan (expect ~1.5).
    assert accepted <= (8 if method is WatermarkMethod.RIVAGAN else 0)


def test_rivagan_check_accepts_exactly_one_crc_per_key() -> None:
    """The 16 check bits are a function of the key: of the 2**16 tails for one key, exactly one passes."""
    head = payload_bits(4_242, WatermarkMethod.RIVAGAN)[:16]
    tails = itertools.product((0, 1), repeat=16)
    valid = [t for t in tails if key_from_bits(head + list(t), WatermarkMethod.RIVAGAN) is not None]
    assert len(valid) == 1


@pytest.mark.parametrize("method", UNKEYED)
def test_a_few_flipped_bits_never_resolve_to_any_key(method: WatermarkMethod) -> None:
    """Both CRCs have Hamming distance 6 at these lengths; exhaustive up to 3 flips (5 for 32 bits)."""
    bits = payload_bits(987, method)
    for flips in (1, 2, 3, 4, 5) if len(bits) == 32 else (1, 2, 3):
        for positions in itertools.combinations(range(len(bits)), flips):
            damaged = list(bits)
            for p in positions:
                damaged[p] ^= 1
            assert key_from_bits(damaged, method) is None, positions


# ---------------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------------


def test_dwtdctsvd_round_trip_is_invisible(photo: Image.Image) -> None:
    method = WatermarkMethod.DWT_DCT_SVD
    marked = embed_verified(photo, 77_777, method)
    assert marked.mode == "RGB" and marked.size == photo.size
    assert psnr(marked, photo) > 38
    result = decode(marked, method)
    assert result == DecodeResult(
        77_777, tuple(payload_bits(77_777, method)), method, "as-is", payload=payload_hex(77_777, method)
    )


def test_dwtdct_round_trips_where_chroma_is_textured(textured: Image.Image) -> None:
    method = WatermarkMethod.DWT_DCT
    marked = embed_verified(textured, 77_777, method)
    assert psnr(marked, textured) > 38
    assert decode(marked, method).key == 77_777


def test_dwtdct_is_refused_where_it_does_not_hold(photo: Image.Image) -> None:
    """dwtDct quantises the largest of 16 chroma samples; in smooth chroma the maximum moves and bits flip."""
    with pytest.raises(WatermarkVerificationError, match="embedded key 77777 .*decoded no valid key"):
        embed_verified(photo, 77_777, WatermarkMethod.DWT_DCT)


def test_rivagan_round_trip(photo: Image.Image) -> None:
    marked = embed(photo, 65_535, WatermarkMethod.RIVAGAN)
    assert psnr(marked, photo) > 38
    result = decode(marked, WatermarkMethod.RIVAGAN)
    assert result.key == 65_535 and len(result.bits) == 32


def test_embedding_keeps_the_library_bits_with_smaller_changes(photo: Image.Image) -> None:
    bgr = np.ascontiguousarray(np.asarray(photo)[:, :, ::-1])
    for method in DWT_METHODS:
        bits = payload_bits(5, method)
        raw = wm.library_embed_bgr(bgr, bits, method)
        ours = wm._embed_bgr(bgr, bits, method)
        assert wm._decode_bgr(ours, method) == wm._decode_bgr(raw, method)
        assert np.abs(ours.astype(int) - bgr).max() < np.abs(raw.astype(int) - bgr).max()
        # Where the Y- and V-keeping change stays in the RGB cube it is what is written: red is never touched.
        ideal = bgr + wm._u_delta(bgr, bits, method)[:, :, None] * np.array(wm._U_DIRECTION_BGR)
        in_gamut = ((ideal >= 0) & (ideal <= 255)).all(axis=2)
        assert in_gamut.mean() > 0.5 and np.array_equal(ours[:, :, 2][in_gamut], bgr[:, :, 2][in_gamut])
        assert (ours[:, :, 2][~in_gamut] != bgr[:, :, 2][~in_gamut]).any()  # elsewhere the nearest in-gamut colour


def test_a_library_without_the_block_quantiser_is_a_clear_error(
    photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imwatermark.dwtDctSvd import EmbedDwtDctSvd

    monkeypatch.delattr(EmbedDwtDctSvd, "encode_frame")
    with pytest.raises(
        WatermarkError, match="no EmbedDwtDctSvd.encode_frame and _scales, the block quantiser .* 0.2.x"
    ):
        embed(photo, 1)


@pytest.mark.parametrize("background", [(255, 255, 255), (250, 250, 250), (0, 0, 0), (255, 0, 0), (0, 255, 0)])
def test_flat_backgrounds_at_the_ends_of_the_channels_carry_the_mark(background: tuple[int, int, int]) -> None:
    """White product backgrounds: the Y- and V-keeping change would clip there, the nearest in-gamut one does not."""
    image = Image.new("RGB", (256, 256), background)
    ImageDraw.Draw(image).ellipse((60, 60, 190, 190), fill=(30, 60, 200))
    marked = embed_verified(image, 4_242)
    assert psnr(marked, image) > 38
    bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    raw = wm.library_embed_bgr(bgr, payload_bits(4_242, WatermarkMethod.DWT_DCT_SVD), WatermarkMethod.DWT_DCT_SVD)
    ours = np.asarray(marked, dtype=int)[:, :, ::-1]
    assert np.abs(ours - bgr).max() < np.abs(raw.astype(int) - bgr).max()


@pytest.mark.parametrize("size", [(255, 512), (512, 200), (128, 1024)])
def test_images_below_256_px_are_refused(size: tuple[int, int]) -> None:
    small = Image.new("RGB", size, (90, 120, 150))
    message = rf"{size[0]}x{size[1]} px image: the watermark needs at least 256 px"
    with pytest.raises(WatermarkError, match=message):
        embed(small, 1)
    with pytest.raises(WatermarkError, match=message):
        embed_verified(small, 1)
    with pytest.raises(WatermarkError, match=message):
        decode(small)
    with pytest.raises(WatermarkError, match="no candidate size"):
        decode_for_audit(small, candidate_sizes=[(100, 100)])


def test_unmarked_images_resolve_to_no_key(photo: Image.Image) -> None:
    flat = Image.new("RGB", (512, 512), (128, 128, 128))
    noise = Image.fromarray(np.random.default_rng(3).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    for image in (photo, flat, noise, natural_image(384, seed=5)):
        for method in DWT_METHODS:
            assert decode(image, method).key is None
    assert decode(photo, WatermarkMethod.RIVAGAN).key is None


def test_dwtdctsvd_survives_jpeg_q85(marked_svd: Image.Image) -> None:
    buffer = io.BytesIO()
    marked_svd.save(buffer, "JPEG", quality=85)
    jpeg = Image.open(io.BytesIO(buffer.getvalue()))
    assert decode(jpeg, WatermarkMethod.DWT_DCT_SVD).key == 123_456


def test_audit_recovers_a_half_size_copy_when_given_the_original_size(marked_svd: Image.Image) -> None:
    half = marked_svd.resize((256, 256), Image.Resampling.LANCZOS)
    assert decode(half).key is None
    assert decode_for_audit(half).attempt == "as-is"
    result = decode_for_audit(half, candidate_sizes=[(256, 256), (100, 80), (768, 768), (512, 512)])
    assert result.key == 123_456
    assert result.attempt == "rescaled to 512x512"
    assert decode_for_audit(marked_svd, candidate_sizes=[(1024, 1024)]).attempt == "as-is"


def test_audit_of_a_small_image_tries_the_candidate_sizes_only(marked_svd: Image.Image) -> None:
    tiny = marked_svd.resize((200, 200), Image.Resampling.LANCZOS)
    result = decode_for_audit(tiny, candidate_sizes=[(512, 512)])
    assert result.attempt == "rescaled to 512x512"


def test_embed_verified_raises_on_a_mismatch(photo: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(image: Image.Image, method: WatermarkMethod = SVD, secrets: tuple[bytes, ...] = ()) -> DecodeResult:
        return DecodeResult(43, tuple(payload_bits(43, method)), WatermarkMethod(method), "as-is")

    monkeypatch.setattr(wm, "decode", wrong)
    with pytest.raises(WatermarkVerificationError, match=r"embedded key 42 .*decoded key 43") as info:
        embed_verified(photo, 42)
    assert isinstance(info.value, WatermarkError)


@pytest.mark.parametrize("colour", [(0, 0, 255), (255, 255, 0)])
def test_embed_verified_refuses_a_mark_that_does_not_hold(colour: tuple[int, int, int]) -> None:
    """Saturated blue and yellow are the ends of the U range the dwt methods write into: that must fail loudly."""
    flat = Image.new("RGB", (512, 512), colour)
    with pytest.raises(WatermarkVerificationError, match=r"embedded key 9 .*decoded no valid key"):
        embed_verified(flat, 9, WatermarkMethod.DWT_DCT_SVD)


def test_modes_rgba_keeps_alpha_and_grayscale_becomes_rgb(photo: Image.Image) -> None:
    rgba = photo.copy()
    alpha = Image.linear_gradient("L").resize(photo.size)
    rgba.putalpha(alpha)
    marked = embed_verified(rgba, 31, WatermarkMethod.DWT_DCT_SVD)
    assert marked.mode == "RGBA"
    assert np.array_equal(np.asarray(marked.getchannel("A")), np.asarray(alpha))
    assert decode(marked).key == 31

    gray = embed_verified(photo.convert("L"), 32, WatermarkMethod.DWT_DCT_SVD)
    assert gray.mode == "RGB"
    palette = embed_verified(photo.convert("P"), 33, WatermarkMethod.DWT_DCT_SVD)
    assert palette.mode == "RGB"


def test_icc_profile_is_carried_over(photo: Image.Image) -> None:
    tagged = photo.copy()
    tagged.info["icc_profile"] = b"fake-profile"
    assert embed(tagged, 1).info["icc_profile"] == b"fake-profile"


def test_rivagan_sessions_are_created_with_explicit_providers_when_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnxruntime
    from imwatermark import WatermarkEncoder, rivaGan

    def refuse() -> None:
        raise ValueError("This ORT build has [...] enabled; set the providers parameter")

    wm._load_rivagan.clear()
    monkeypatch.setattr(WatermarkEncoder, "loadModel", staticmethod(refuse))
    monkeypatch.setattr(rivaGan.RivaWatermark, "encoder", None)
    monkeypatch.setattr(rivaGan.RivaWatermark, "decoder", None)
    try:
        wm._load_rivagan()
        assert isinstance(rivaGan.RivaWatermark.encoder, onnxruntime.InferenceSession)
        assert isinstance(rivaGan.RivaWatermark.decoder, onnxruntime.InferenceSession)
    finally:
        wm._load_rivagan.clear()  # the sessions are put back after this test: later tests load them again


def test_importing_the_module_loads_no_heavy_packages() -> None:
    code = (
        "import sys, tasks.provenance.watermark, policies.watermark; "
        "print(sorted(m for m in ('numpy', 'cv2', 'imwatermark', 'torch', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------------------------------


def test_policy_defaults_and_validation() -> None:
    policy = WatermarkPolicy()
    assert policy.enabled and policy.method is WatermarkMethod.SPREAD_TILE
    assert not policy.upscale_small and policy.audit_rescale_sizes == []
    parsed = WatermarkPolicy.model_validate({"method": "rivaGan", "audit_rescale_sizes": [[1024, 768]]})
    assert parsed.method is WatermarkMethod.RIVAGAN and parsed.audit_rescale_sizes == [(1024, 768)]
    with pytest.raises(ValidationError, match="extra"):
        WatermarkPolicy.model_validate({"strength": 3})
    with pytest.raises(ValidationError, match="dwtDct"):
        WatermarkPolicy.model_validate({"method": "lsb"})
    with pytest.raises(ValidationError, match=str(MIN_SIDE)):
        WatermarkPolicy.model_validate({"audit_rescale_sizes": [[128, 1024]]})
    for name, field in WatermarkPolicy.model_fields.items():
        assert field.description, name
