"""Embedded default models: built offline, reproducible, and loaded through the same calls a real model uses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tasks.core.errors import ModelError  # noqa: E402
from tasks.stages import embedded  # noqa: E402

PROMPTS = [
    "a photo of a red sneaker on a white background",
    "Hello, World! It's 2026 -- café crème, 50% off",
    "  multiple   spaces\tand\nnewlines  ",
    "don't we'll they're, #hashtag @mention",
]


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ASSETMINT_CACHE_DIR whose models/ holds one build of everything."""
    cache = tmp_path_factory.mktemp("cache")
    embedded.build_all(cache / "models")
    return cache


@pytest.fixture(scope="module")
def root(cache: Path) -> Path:
    return cache / "models"


@pytest.fixture(scope="module")
def pipeline(root: Path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(embedded.ensure_embedded_pipeline(root))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, seed: int, prompt: str = "a red sneaker", size: int = 256, steps: int = 2):
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(seed)
    result = pipe(prompt, num_inference_steps=steps, height=size, width=size, generator=generator)
    return np.asarray(result.images[0])


def test_module_imports_without_torch() -> None:
    code = "import sys, tasks.stages.embedded; sys.exit('torch' in sys.modules or 'diffusers' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_is_embedded() -> None:
    assert embedded.is_embedded(embedded.EMBEDDED_PIPELINE)
    assert embedded.is_embedded(embedded.EMBEDDED_CLIP)
    assert not embedded.is_embedded("runwayml/stable-diffusion-v1-5")


def test_unknown_embedded_name_lists_valid_ones() -> None:
    with pytest.raises(ModelError) as info:
        embedded.resolve_embedded("embedded:tiny-sdxl")
    message = str(info.value)
    assert "embedded:tiny-sdxl" in message
    assert embedded.EMBEDDED_PIPELINE in message and embedded.EMBEDDED_CLIP in message
    with pytest.raises(ModelError, match="not an embedded model reference"):
        embedded.resolve_embedded("runwayml/stable-diffusion-v1-5")


def test_resolve_uses_assetmint_cache_dir(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSETMINT_CACHE_DIR", str(cache))
    assert embedded.resolve_embedded(embedded.EMBEDDED_PIPELINE) == cache / "models" / "tiny-sd"
    clip = embedded.resolve_embedded(embedded.EMBEDDED_CLIP)
    assert isinstance(clip, embedded.EmbeddedClip)
    assert clip.checkpoint.parent == cache / "models" / "tiny-clip"


def test_tokenizer_files_match_open_clip(root: Path, pipeline, tmp_path: Path) -> None:
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    # Only the derived classic files, without the tokenizer.json that transformers wrote beside them.
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(root / "tiny-sd" / "tokenizer" / name, tmp_path / name)
    from_files = CLIPTokenizer.from_pretrained(tmp_path, model_max_length=77)
    reference = SimpleTokenizer()
    assert len(from_files) == 49408 == reference.vocab_size
    for tokenizer in (from_files, pipeline.tokenizer):
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (49406, 49407)
        for prompt in PROMPTS:
            expected = [int(i) for i in reference(prompt)[0] if i != 0]
            assert tokenizer(prompt).input_ids == expected, prompt


def test_pipeline_loads_like_a_real_model(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline, StableDiffusionPipeline

    folder = embedded.ensure_embedded_pipeline(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = DiffusionPipeline.from_pretrained(folder)
        auto = AutoPipelineForText2Image.from_pretrained(folder)
        auto.set_progress_bar_config(disable=True)
        image = auto("a red sneaker", num_inference_steps=2, generator=None).images[0]
    assert [str(w.message) for w in caught] == []
    assert "warn" not in capfd.readouterr().err.lower()
    assert isinstance(pipe, StableDiffusionPipeline) and isinstance(auto, StableDiffusionPipeline)
    assert pipe.vae_scale_factor == 8
    assert image.size == (512, 512)  # SD 1.x's default size from unet.sample_size * 8


def test_same_seed_same_pixels_other_seed_other_pixels(pipeline) -> None:
    first = _generate(pipeline, seed=7)
    assert first.shape == (256, 256, 3)
    assert (first == _generate(pipeline, seed=7)).all()
    assert (first != _generate(pipeline, seed=8)).mean() > 0.5
    assert (first != _generate(pipeline, seed=7, prompt="a blue car")).mean() > 0.5


def test_images_are_mid_range_not_clipped(pipeline) -> None:
    pixels = _generate(pipeline, seed=3, size=320)
    assert pixels.shape == (320, 320, 3)
    assert 64 < pixels.mean() < 192 and pixels.std() > 10
    assert ((pixels == 0) | (pixels == 255)).mean() < 0.05  # a watermark needs headroom around each pixel


def test_build_is_reproducible_across_roots(root: Path, tmp_path: Path) -> None:
    other = embedded.build_all(tmp_path / "models")
    for ref, folder in other.items():
        assert _file_hashes(folder) == _file_hashes(root / folder.name), ref
    marker = embedded.read_marker(other[embedded.EMBEDDED_PIPELINE])
    assert marker is not None and marker["format"] == embedded.FORMAT_VERSION
    assert set(marker["files"]) == {
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    }


def test_current_build_is_kept_stale_or_forced_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "models"
    folder = embedded.ensure_embedded_pipeline(root)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    inode = weights.stat().st_ino
    assert embedded.ensure_embedded_pipeline(root) == folder
    assert weights.stat().st_ino == inode

    embedded.build_all(root, force=True)
    assert weights.stat().st_ino != inode
    inode = weights.stat().st_ino

    marker = json.loads((folder / embedded.MARKER_NAME).read_text())
    marker["format"] = embedded.FORMAT_VERSION - 1
    (folder / embedded.MARKER_NAME).write_text(json.dumps(marker))
    embedded.ensure_embedded_pipeline(root)
    assert weights.stat().st_ino != inode
    assert embedded.read_marker(folder)["format"] == embedded.FORMAT_VERSION
    assert sorted(p.name for p in root.iterdir() if ".tmp-" in p.name) == []


def test_failed_build_leaves_nothing_that_looks_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(folder: Path) -> None:
        (folder / "half-written.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(embedded, "_build_clip", broken)
    with pytest.raises(ModelError, match="embedded:tiny-clip.*disk full"):
        embedded.ensure_embedded_clip(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_builders_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def slow(folder: Path) -> None:
        calls.append(folder)
        time.sleep(0.2)
        (folder / f"{embedded.CLIP_MODEL_NAME}.json").write_text(json.dumps(embedded.CLIP_CONFIG))

    monkeypatch.setattr(embedded, "_build_clip", slow)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(embedded.ensure_embedded_clip(tmp_path))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 3 and len(set(results)) == 1


def test_open_clip_model_loads_from_checkpoint(root: Path) -> None:
    import open_clip
    import torch
    from PIL import Image

    clip = embedded.ensure_embedded_clip(root)
    assert clip.model_name == "assetmint-tiny-clip" and clip.model_name in open_clip.list_models()
    assert (clip.config_dir / f"{clip.model_name}.json").is_file()
    model, _, preprocess = open_clip.create_model_and_transforms(clip.model_name, pretrained=str(clip.checkpoint))
    tokenizer = open_clip.get_tokenizer(clip.model_name)
    model.eval()
    image = preprocess(Image.new("RGB", (300, 200), (200, 40, 40))).unsqueeze(0)
    assert image.shape == (1, 3, 64, 64)
    with torch.no_grad():
        image_features = model.encode_image(image)
        text_features = model.encode_text(tokenizer(["a red sneaker", "a blue car"]))
    embed_dim = embedded.CLIP_CONFIG["embed_dim"]
    assert image_features.shape == (1, embed_dim) and text_features.shape == (2, embed_dim)
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()
    # open_clip's own folder schema finds the same config and weights.
    local, _ = open_clip.create_model_from_pretrained(f"local-dir:{clip.config_dir}")
    assert torch.equal(local.token_embedding.weight, model.token_embedding.weight)
