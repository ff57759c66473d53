"""Generation on a real local Ray cluster (a head and two CPU worker nodes): the same run as locally, byte for byte."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from conftest import TINY_MODELS_POLICY, SpawnedRun, write
from tasks.core.manifest import load_plan
from tasks.storage.ledger import Ledger

# 2 prompts x 9 seeds in chunks of 3: six chunks to share between two generators.
MANIFEST = """\
campaign: {id: cluster, name: On the cluster}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 9, base_seed: 11, keep_top_k: 2}
prompts:
  - {id: mug, prompt: a ceramic mug on a wooden desk}
  - {id: lamp, prompt: a brass lamp by a window}
"""


def _policy(folder: Path, execution: str = "", chunk_size: int = 3) -> Path:
    text = TINY_MODELS_POLICY.read_text().replace("chunk_size: 8", f"chunk_size: {chunk_size}")
    assert f"chunk_size: {chunk_size}" in text
    return write(folder / "policy.yaml", text + execution)


def _ray_section(address: str, **extra: Any) -> str:
    fields = {"engine": "ray", "address": address, "gpus_per_worker": 0, **extra}
    return "execution:\n" + "".join(f"  {key}: {value}\n" for key, value in fields.items())


def _outcome(ledger_file: Path, run_id: str) -> tuple[str, dict[str, tuple[Any, ...]], list[tuple[Any, ...]]]:
    ledger = Ledger.open_file(ledger_file)
    candidates = {
        c.candidate_id: (c.state, c.image_sha256, c.pixel_sha256, c.rank, c.clip_score)
        for c in ledger.candidates(run_id)
    }
    assets = sorted((a.candidate_id, a.asset_key, a.final_width) for a in ledger.assets(run_id))
    return ledger.run(run_id).status, candidates, assets


def _run(tmp_path: Path, name: str, execution: str) -> Path:
    work = tmp_path / name
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASSETMINT_WORK_DIR", str(work))
        assert main(["run", str(tmp_path / "m.yaml"), "--policy", str(_policy(tmp_path / name, execution))]) == 0
    return work


def test_a_run_on_the_ray_cluster_is_the_local_run(ray_cluster: str, tmp_path: Path) -> None:
    run_id = load_plan(write(tmp_path / "m.yaml", MANIFEST)).run_id
    local = _run(tmp_path, "local", "")
    cluster = _run(tmp_path, "cluster", _ray_section(ray_cluster))
    assert _outcome(cluster / "ledger.sqlite", run_id) == _outcome(local / "ledger.sqlite", run_id)
    status, candidates, assets = _outcome(cluster / "ledger.sqlite", run_id)
    assert status == "completed" and len(candidates) == 18 and len(assets) == 4
    for candidate_id, (_, sha, *_) in candidates.items():  # the driver stored the workers' files as they made them
        import hashlib

        stored = cluster / "candidates" / candidate_id[:2] / f"{candidate_id}.png"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha

    # Two generators, each in its own process, each loading the model once for all the chunks it rendered.
    generators = Ledger.open_file(cluster / "ledger.sqlite").run(run_id).summary["generators"]
    assert len(generators) == 2 and len({g["worker"] for g in generators}) == 2
    assert sum(g["chunks"] for g in generators) == 6
    for report in generators:
        assert report["model_loads"] == ({"embedded:tiny-sd": 1} if report["chunks"] else {}), report


def test_cluster_problems_are_refused_before_any_work(
    ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write(tmp_path / "m.yaml", MANIFEST)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    cases = {
        "no-head": (_ray_section(f"127.0.0.1:{closed}", connect_timeout_s=3), "cannot reach the Ray cluster's head"),
        "gpu": (_ray_section(ray_cluster, gpus_per_worker=1), "has 0 GPUs"),
        "too-many": (_ray_section(ray_cluster, workers=5), "execution.workers is 5"),
    }
    for name, (section, expected) in cases.items():
        work = tmp_path / name / "work"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ASSETMINT_WORK_DIR", str(work))
            assert main(["run", str(manifest), "--policy", str(_policy(tmp_path / name, section))]) == 2, name
        err = capsys.readouterr().err
        assert expected in err and "Nothing was run" in err and "Traceback" not in err, (name, err)
        assert not work.exists(), name


def test_a_bad_ray_address_is_a_policy_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write(tmp_path / "m.yaml", MANIFEST)
    policy = _policy(tmp_path, "execution:\n  engine: ray\n  address: http://head/\n")
    assert main(["run", str(manifest), "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "'http://head/' is not a Ray address" in err and "execution.address" in err


def _generator_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "ray::GeneratorWorker"], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def _generators_stop(whose: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while _generator_pids():
        assert time.monotonic() < deadline, f"{whose} left its generators running"
        time.sleep(0.5)


def test_ctrl_c_kill_9_and_a_killed_generator_leave_every_candidate_generated_once(
    ray_cluster: str, tmp_path: Path, model_cache: Path
) -> None:
    manifest = write(tmp_path / "m.yaml", MANIFEST.replace("candidates: 9", "candidates: 20"))
    run_id = load_plan(manifest).run_id
    policy = _policy(tmp_path, _ray_section(ray_cluster), chunk_size=2)
    argv = ["run", str(manifest), "--policy", str(policy)]

    def made(run: SpawnedRun, at_least: int) -> Callable[[], bool]:
        return lambda: sum(n for state, n in run.counts().items() if state != "planned") >= at_least

    # Ctrl-C while chunks are in flight on the cluster: the driver stops at once, recorded as interrupted.
    first = SpawnedRun(argv, tmp_path, model_cache, "interrupted")
    first.wait_until(made(first, 6), "6 candidates generated on the cluster", timeout_s=600)
    os.killpg(first.pid, signal.SIGINT)
    code, err = first.wait(timeout_s=120)
    assert code == 130 and "interrupted" in err, err[-3000:]
    assert Ledger.open_file(tmp_path / "work" / "ledger.sqlite").run(run_id).status == "interrupted"
    _generators_stop("the interrupted run")

    # kill -9 of the driver: its generators die with their owner, and the run stays resumable.
    killed = SpawnedRun(argv, tmp_path, model_cache, "killed")
    before = sum(n for state, n in killed.counts().items() if state != "planned")
    killed.wait_until(lambda: made(killed, before + 4)() and bool(_generator_pids()), "progress after Ctrl-C", 600)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout_s=60)
    _generators_stop("the killed driver")

    # The rerun resumes; one of its generators is killed with SIGKILL mid-run and Ray restarts it.
    rerun = SpawnedRun(argv, tmp_path, model_cache, "rerun")
    before = sum(n for state, n in rerun.counts().items() if state != "planned")
    rerun.wait_until(lambda: made(rerun, before + 4)() and bool(_generator_pids()), "progress on the rerun", 600)
    victim = _generator_pids()[0]
    os.kill(victim, signal.SIGKILL)
    code, err = rerun.wait(timeout_s=900)
    assert code == 0, err[-3000:]

    ledger = Ledger.open_file(tmp_path / "work" / "ledger.sqlite")
    assert ledger.run(run_id).status == "completed"
    rows = ledger.candidates(run_id)
    assert len(rows) == 40 and all(r.state != "planned" for r in rows)
    moves = [h for h in ledger.history(run_id) if h.to_state == "generated"]
    assert len(moves) == 40 and len({h.candidate_id for h in moves}) == 40, "a candidate was recorded twice"
    reports = ledger.run(run_id).summary["generators"]
    assert all(f"pid {victim} " not in f"{report['worker']} " for report in reports)  # replaced by a restarted one
