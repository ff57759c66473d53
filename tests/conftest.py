"""Shared fixtures: isolated user directories, a quiet Prefect, and the tiny embedded models built once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.storage.ledger import Ledger

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
PACKAGED_DEFAULT_POLICY = REPO / "policies" / "default.yaml"
# Tests of the machinery run the tiny random models under the policy made for them; demo-model tests and tests of
# the packaged default name PACKAGED_DEFAULT_POLICY.
TINY_MODELS_POLICY = REPO / "tests" / "data" / "tiny-models-policy.yaml"
# Two jobs x three seeds on the tiny random model: the end-to-end runs' manifest.
TINY_MANIFEST = """\
campaign: {id: e2e, name: End to end}
defaults:
  model: embedded:tiny-sd
  width: 256
  height: 256
  steps: 2
  guidance: 4.0
  candidates: 3
  base_seed: 5
  keep_top_k: 2
prompts:
  - id: shot
    prompt: "a {thing} on a table"
    vars: {thing: [red cube, blue ball]}
"""

# One prompt that passes and one the blocklist stops, two candidates each: the safety runs' manifest.
SAFETY_MANIFEST = """\
campaign: {id: safe, name: Safety}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 2, keep_top_k: 1}
prompts:
  - {id: ok, prompt: a ceramic mug on a wooden desk}
  - {id: bad, prompt: a n.u.d.e model on a beach}
"""
# A policy section whose concept rule flags every image.
FLAG_EVERYTHING = """\
safety:
  concepts:
    rules:
      - {concept: anything at all, threshold: -1.0}
"""


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory shared by the whole session, so the embedded models are built once."""
    return tmp_path_factory.mktemp("assetmint-cache")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real cache, config or work directories."""
    monkeypatch.setenv("ASSETMINT_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("ASSETMINT_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("ASSETMINT_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("ASSETMINT_POLICY", str(TINY_MODELS_POLICY))


def work_ledger(root: Path) -> Ledger:
    """The ledger a run under `root` writes (the default policy puts it in the work directory)."""
    return Ledger.open_file(root / "work" / "ledger.sqlite")


def backdate(path: Path, seconds: float = 120.0) -> Path:
    """Move `path`'s modification time `seconds` into the past (older than tasks.core.files.TEMP_GRACE_S)."""
    then = path.stat().st_mtime - seconds
    os.utime(path, (then, then))
    return path


def write(path: Path, text: str) -> Path:
    """Write `text` to `path` (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run_isolated(root: Path, model_cache: Path, argv: list[str]) -> dict[str, str]:
    """Run `assetmint ARGV` with config and work directories under `root` (for module-scoped fixtures)."""
    from cli.main import main

    env = {
        "ASSETMINT_CACHE_DIR": str(model_cache),
        "ASSETMINT_CONFIG_DIR": str(root / "config"),
        "ASSETMINT_WORK_DIR": str(root / "work"),
        "ASSETMINT_POLICY": str(TINY_MODELS_POLICY),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(argv) == 0
    return env


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    """A Prefect test harness per test module (its start-up costs ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def sign_decoy_credential(png: bytes, keys_dir: Path) -> tuple[bytes, Path]:
    """`png` signed by someone else's (development) keys, with a soft binding naming a decoder that cannot read
    AssetMint's mark; returns the signed bytes and that signer's trust anchor."""
    from policies.signing import SigningPolicy
    from tasks.provenance import credentials
    from tasks.provenance.keys import init_dev_keys
    from tasks.stages.finalize import WATERMARK_ALG_PREFIX

    other = init_dev_keys(keys_dir)
    foreign = SigningPolicy(certificate_chain=str(other.chain), private_key=str(other.key))
    decoy = credentials.WatermarkFacts(WATERMARK_ALG_PREFIX + "dwtDct", "dwtDct", "00" * 8, "1")
    facts = credentials.AssetFacts(asset_id="someone-else", model_name="other", prompt="x", generation={})
    with credentials.load_signer(foreign) as signer:
        definition = credentials.build_manifest_definition(facts, foreign, decoy)
        return credentials.sign_asset(png, "image/png", definition, signer), Path(other.trust_anchor)
