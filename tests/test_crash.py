"""kill -9 at any moment of a run, then the same command again: the result is the uninterrupted run's.

Each run is killed (SIGKILL to its process group) at a moment observed from outside (ledger states, files), then
rerun to completion and compared with one uninterrupted run: decoded pixels, watermark keys and the generation
assertion of every published asset, CLIPScores to the last bit, every asset published exactly once, and the same
files in the work directory (candidate store, run folder, published folder): nothing orphaned, no temporary file.
Signed bytes legitimately differ between runs (C2PA instance ids and ECDSA signatures are random).
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import SpawnedRun, ledger_counts, ledger_query, process_gone, run_statuses, write
from tasks.core.files import TEMP_NAME

# 16 candidates in generation chunks of 4, scored in batches of 3 (a resumed scoring batches differently), 12 assets
# finalized and published to the work directory's folder target.
MANIFEST = """\
campaign: {id: crash, name: Crash}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 8, keep_top_k: 6}
prompts:
  - id: shot
    prompt: "a {thing} on a table"
    vars: {thing: [red cube, blue ball]}
"""
POLICY = """\
generation: {chunk_size: 4}
scoring: {batch_size: 3}
publish: {auto_publish: true}
watermark: {method: dwtDctSvd}  # the tiny model's noise: see conftest.AUTO_PUBLISH_POLICY
"""
ASSETS = 12
SCORES = "SELECT candidate_id, clip_score, clip_cosine FROM candidates"
LEDGER_FILES = ("ledger.sqlite", "ledger.sqlite-journal", "ledger.sqlite-wal", "ledger.sqlite-shm")


def _published_files(root: Path) -> list[Path]:
    folder = root / "work" / "published"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


# When to kill, as seen from outside: the stage has recorded (or, for publish, written) its first result.
MOMENTS: dict[str, Callable[[Path], bool]] = {
    "generation": lambda root: ledger_counts(root).get("generated", 0) > 0,
    "scoring": lambda root: ledger_counts(root).get("scored", 0) > 0,
    "finalize": lambda root: ledger_counts(root).get("finalized", 0) > 0,
    "publish": lambda root: bool(_published_files(root)),
}


@dataclass(frozen=True)
class Outcome:
    """What a finished run left, in terms that must not depend on how often it was interrupted."""

    statuses: list[str]
    counts: dict[str, int]
    scores: dict[str, tuple[float, float]]
    files: list[str]
    pixels: dict[str, str]
    watermark_keys: dict[str, int | None]
    ledger_keys: dict[str, str]
    assertions: dict[str, Any]


def _without_times(value: Any) -> Any:
    """The value with every timestamp field dropped (`at`, `*_at`): those record when, not what."""
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "at" and not k.endswith("_at")}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def outcome(root: Path) -> Outcome:
    """Read the ledger (read-only) and the published folder of the run under `root`."""
    from PIL import Image

    from tasks.provenance.credentials import read_and_validate
    from tasks.provenance.watermark import decode

    work = root / "work"
    scores = {cid: (score, cosine) for cid, score, cosine in ledger_query(root, SCORES)}
    ledger_keys = dict(ledger_query(root, "SELECT candidate_id, payload_hex FROM assets"))
    pixels, keys, assertions = {}, {}, {}
    for path in _published_files(root):
        if path.suffix != ".png":
            continue
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
        pixels[path.stem] = hashlib.sha256(rgb.tobytes()).hexdigest()
        keys[path.stem] = decode(rgb, "dwtDctSvd").key
        assertions[path.stem] = _without_times(read_and_validate(data, "image/png", []).generation_assertion)
    files = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file() and p.name not in LEDGER_FILES)
    return Outcome(
        statuses=run_statuses(root),
        counts=ledger_counts(root),
        scores=scores,
        files=files,
        pixels=pixels,
        watermark_keys=keys,
        ledger_keys=ledger_keys,
        assertions=assertions,
    )


def _argv(root: Path) -> list[str]:
    return ["run", str(write(root / "m.yaml", MANIFEST)), "--policy", str(write(root / "p.yaml", POLICY))]


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """One Prefect server for the module's runs (each would otherwise start its own), as PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, prefect_api: str) -> Outcome:
    """The outcome of one uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    run = SpawnedRun(_argv(root), root, model_cache, PREFECT_API_URL=prefect_api)
    code, stderr = run.wait()
    assert code == 0, stderr
    result = outcome(root)
    assert result.statuses == ["completed"] and result.counts == {"published": ASSETS, "not_selected": 4}
    assert len(result.pixels) == ASSETS and all(key is not None for key in result.watermark_keys.values())
    return result


@pytest.mark.parametrize("stage", list(MOMENTS))
def test_kill_9_then_rerun_ends_as_the_uninterrupted_run(
    stage: str, tmp_path: Path, model_cache: Path, prefect_api: str, reference: Outcome
) -> None:
    # The first stage's run starts Prefect's own temporary server, to show that it goes when the command is killed.
    server = {} if stage == "generation" else {"PREFECT_API_URL": prefect_api}
    run = SpawnedRun(_argv(tmp_path), tmp_path, model_cache, "killed", **server)
    run.wait_until(lambda: MOMENTS[stage](tmp_path), f"at {stage}")
    servers = run.prefect_servers()
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout_s=60)
    assert run.group_gone()
    if not server:
        assert servers and all(process_gone(pid) for pid in servers), "Prefect's server outlived the killed command"

    rerun = SpawnedRun(_argv(tmp_path), tmp_path, model_cache, "rerun", PREFECT_API_URL=prefect_api)
    code, stderr = rerun.wait()
    assert code == 0, stderr
    result = outcome(tmp_path)
    assert not [name for name in result.files if TEMP_NAME.fullmatch(Path(name).name)]
    assert result.files == reference.files  # nothing orphaned, every asset published exactly once
    assert result.scores == reference.scores  # to the last bit
    assert result.pixels == reference.pixels
    assert result.watermark_keys == reference.watermark_keys and result.ledger_keys == reference.ledger_keys
    assert result.assertions == reference.assertions
    assert (result.statuses, result.counts) == (reference.statuses, reference.counts)
