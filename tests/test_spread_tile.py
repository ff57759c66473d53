"""spreadTile, the default watermark: payload coding (keyed MAC, error correction) and the tiled signal's search."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from tasks.core.errors import WatermarkError
from tasks.provenance import mark_payload, spread_tile
from tasks.provenance import watermark as wm
from tasks.provenance.watermark import WatermarkMethod
from tests.test_watermark import natural_image, psnr

TILE = WatermarkMethod.SPREAD_TILE
SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))


# --- payload ------------------------------------------------------------------------------------------------------


def _soft(coded: np.ndarray) -> np.ndarray:
    return 2.0 * coded.astype(np.float64) - 1.0


@pytest.mark.parametrize("key", [1, 2, 77_777, mark_payload.MAX_KEY])
def test_payload_round_trips_under_its_secret_only(key: int) -> None:
    soft = _soft(mark_payload.encode(key, SECRET))
    assert len(soft) == mark_payload.CODED_BITS == 210
    assert mark_payload.recover(soft, [SECRET]) == mark_payload.Recovered(key, 0)
    assert mark_payload.recover(soft, [OTHER_SECRET]) is None
    assert mark_payload.recover(soft, [OTHER_SECRET, SECRET]) == mark_payload.Recovered(key, 1)  # a retired secret


def test_the_key_cannot_be_read_without_the_secret() -> None:
    """The payload word is masked by the secret: the same key under two secrets shares no structure."""
    one, two = mark_payload.info_word(5, SECRET), mark_payload.info_word(5, OTHER_SECRET)
    assert one >> 32 != 5 and two >> 32 != 5
    assert 16 <= bin(one ^ two).count("1") <= 48


@pytest.mark.parametrize("key", [0, -1, mark_payload.MAX_KEY + 1, True, 1.5])
def test_keys_out_of_range_are_refused_naming_the_range(key: object) -> None:
    with pytest.raises(WatermarkError, match="watermark key"):
        mark_payload.encode(key, SECRET)  # type: ignore[arg-type]


def test_one_coded_bit_in_ten_wrong_is_corrected() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        key = int(rng.integers(1, mark_payload.MAX_KEY))
        soft = _soft(mark_payload.encode(key, SECRET))
        soft[rng.choice(mark_payload.CODED_BITS, mark_payload.CODED_BITS // 10, replace=False)] *= -1
        assert mark_payload.recover(soft, [SECRET]) == mark_payload.Recovered(key, 0)


def test_noise_never_yields_a_key() -> None:
    rng = np.random.default_rng(4)
    assert all(mark_payload.recover(rng.normal(size=mark_payload.CODED_BITS), [SECRET]) is None for _ in range(500))
    assert wm.false_match_rate(TILE) == pytest.approx((spread_tile.HYPOTHESES + 1) / 2**32)


def test_soft_bits_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(WatermarkError, match="210 coded bits, got 64"):
        mark_payload.recover(np.zeros(64), [SECRET])


# --- signal -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return natural_image(640, seed=11).resize((640, 512))


@pytest.fixture(scope="module")
def marked(photo: Image.Image) -> Image.Image:
    return wm.embed_verified(photo, 4_242_424, TILE, SECRET)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, subsampling=2)  # 4:2:0, what platforms use
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_marking_is_invisible_by_psnr_and_reads_back_as_is(photo: Image.Image, marked: Image.Image) -> None:
    assert 40.0 <= psnr(photo, marked) <= 42.0
    result = wm.decode(marked, TILE, [SECRET])
    assert result.key == 4_242_424 and result.secret_index == 0
    assert result.payload == wm.payload_hex(4_242_424, TILE, SECRET) and len(result.payload) == 16
    assert result.attempt.startswith("as-is: tile period 128.0 px")


def test_a_mark_too_weak_to_read_back_is_embedded_once_more_stronger() -> None:
    noise = Image.fromarray((np.random.default_rng(1).random((256, 256, 3)) * 255).astype(np.uint8))
    plain = wm.embed(noise, 77, TILE, SECRET)
    assert wm.decode(plain, TILE, [SECRET]).key is None  # full-range noise at 256 px drowns the sync at PSNR 40
    marked = wm.embed_verified(noise, 77, TILE, SECRET)
    assert wm.decode(marked, TILE, [SECRET]).key == 77
    assert 35.5 <= psnr(noise, marked) < psnr(noise, plain) - 2.5  # REINFORCED_GAIN costs ~3.5 dB, only here


def test_small_images_are_marked_to_survive_a_halved_recompressed_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    bgr = np.asarray(natural_image(512, seed=3))[:, :, ::-1].copy()
    coded = np.array(wm.embedded_bits(4242, TILE, SECRET), dtype=np.uint8)

    def bits_wrong_after_halving_and_jpeg() -> int:
        copy = spread_tile._halved_and_recompressed(spread_tile.embed(bgr, coded))
        soft = spread_tile.at_period(
            copy, spread_tile.CHIPS * spread_tile.chip_size(512, 512) / 2, len(coded)
        ).soft_bits
        return int(np.sum((soft > 0) != (coded == 1)))

    informed = bits_wrong_after_halving_and_jpeg()
    monkeypatch.setattr(spread_tile, "SMALL_AREA", 0)  # marked as a large image is
    assert informed < 0.6 * bits_wrong_after_halving_and_jpeg()


def test_a_lossy_delivery_keeps_the_mark(marked: Image.Image) -> None:
    assert wm.decode(_jpeg(marked, 75), TILE, [SECRET]).key == 4_242_424
    buffer = io.BytesIO()
    marked.save(buffer, "WEBP", quality=80)
    assert wm.decode(Image.open(io.BytesIO(buffer.getvalue())), TILE, [SECRET]).key == 4_242_424


@pytest.mark.parametrize(
    "attack",
    [
        "crop 80% off-centre",
        "resize 0.6x",
        "crop 90% + 0.5x + JPEG q75",
        "9:16 from the middle",
        "brightness +20%",
        "contrast -20%",
    ],
)
def test_the_audit_search_finds_the_mark_after_what_platforms_do(marked: Image.Image, attack: str) -> None:
    w, h = marked.size
    attacked = {
        "crop 80% off-centre": lambda: marked.crop((7, 61, 7 + round(w * 0.894), 61 + round(h * 0.894))),
        "resize 0.6x": lambda: marked.resize((round(w * 0.6), round(h * 0.6)), Image.Resampling.LANCZOS),
        "crop 90% + 0.5x + JPEG q75": lambda: _jpeg(
            marked.crop((31, 5, 31 + round(w * 0.95), 5 + round(h * 0.95))).resize(
                (round(w * 0.475), round(h * 0.475)), Image.Resampling.LANCZOS
            ),
            75,
        ),
        "9:16 from the middle": lambda: marked.crop((180, 0, 180 + 288, 512)),
        "brightness +20%": lambda: ImageEnhance.Brightness(marked).enhance(1.2),
        "contrast -20%": lambda: ImageEnhance.Contrast(marked).enhance(0.8),
    }[attack]()
    result = wm.decode_for_audit(attacked, TILE, secrets=[OTHER_SECRET, SECRET])
    assert result.key == 4_242_424, result.attempt
    assert result.secret_index == 1


def test_unmarked_and_foreign_marks_resolve_to_nothing(photo: Image.Image, marked: Image.Image) -> None:
    assert wm.decode_for_audit(photo, TILE, secrets=[SECRET]).key is None
    assert wm.decode_for_audit(marked, TILE, secrets=[OTHER_SECRET]).key is None  # someone else's secret
    assert wm.decode_for_audit(marked, TILE, secrets=[]).key is None


def test_a_secret_is_required_to_embed(photo: Image.Image) -> None:
    with pytest.raises(WatermarkError, match="needs the watermark secret"):
        wm.embed(photo, 1, TILE)


def test_images_too_small_to_hold_a_tile_are_refused_with_their_size() -> None:
    with pytest.raises(WatermarkError, match=r"80x300 px image: spreadTile needs at least 96 px"):
        wm.decode(Image.new("RGB", (80, 300)), TILE, [SECRET])


def test_rgba_keeps_its_alpha(photo: Image.Image) -> None:
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    marked = wm.embed_verified(rgba, 9, TILE, SECRET)
    assert marked.mode == "RGBA"
    assert np.array_equal(np.asarray(marked.getchannel("A")), np.asarray(rgba.getchannel("A")))


def test_large_images_use_larger_chips() -> None:
    assert spread_tile.chip_size(512, 512) == 4
    assert spread_tile.chip_size(2048, 1536) == 6
    assert spread_tile.chip_size(8000, 8000) == spread_tile.MAX_CHIP
