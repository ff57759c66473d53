"""The deployment path for real: a Prefect server, the process work pool, every deployment, a worker, two runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import REPO, TINY_MANIFEST, TINY_MODELS_POLICY, write

PREFECT_CLI = shutil.which("prefect", path=str(Path(sys.executable).parent)) or shutil.which("prefect")
pytestmark = pytest.mark.skipif(PREFECT_CLI is None, reason="the prefect command line is not installed")

SERVER_START_S = 240  # a busy 2-core machine can take minutes to import and migrate the server
RUN_S = 300
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RETRYABLE_STATUS = {429, 502, 503}  # as prefect.client.base.PrefectHttpxAsyncClient
API_RETRY_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, Any]]:
    """A Prefect server on a free loopback port, the process pool, every deployment deployed and a worker."""
    root = tmp_path_factory.mktemp("deployed")
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(root / "prefect-home"),
        PREFECT_API_URL=url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        PREFECT_WORKER_QUERY_SECONDS="2",
        # What README's Prefect section asks for: the code location and the place for outputs.
        ASSETMINT_HOME=str(REPO),
        ASSETMINT_WORK_DIR=str(root / "work"),
        ASSETMINT_CACHE_DIR=str(model_cache),
        ASSETMINT_CONFIG_DIR=str(root / "config"),
        ASSETMINT_POLICY=str(TINY_MODELS_POLICY),
        PYTHONPATH=str(REPO),  # this checkout, also where the package is installed from another one
        HF_HUB_OFFLINE="1",
    )
    host, port = "127.0.0.1", url.split(":")[2].split("/")[0]
    server_log, worker_log = root / "server.log", root / "worker.log"
    process = _start([str(PREFECT_CLI), "server", "start", "--host", host, "--port", port], env, server_log)
    worker = None
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, f"prefect server exited:\n{_tail(server_log)}"
            assert time.monotonic() < deadline, f"no healthy server in {SERVER_START_S} s:\n{_tail(server_log)}"
            time.sleep(2)
        for args in (
            ["work-pool", "create", "assetmint-process", "--type", "process"],
            ["deploy", "--prefect-file", "deploy/prefect.yaml", "--all"],
        ):
            done = subprocess.run(
                [str(PREFECT_CLI), "--no-prompt", *args],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        worker = _start([str(PREFECT_CLI), "worker", "start", "--pool", "assetmint-process"], env, worker_log)
        yield {"url": url, "root": root, "worker_log": worker_log}
    finally:
        if worker is not None:
            _stop(worker)
        _stop(process)


def _api(server: dict[str, Any], method: str, path: str, **json: Any) -> Any:
    """One REST call, retried on the statuses Prefect's own client retries.

    A Prefect server on SQLite answers 503 when its database reports SQLITE_BUSY (in WAL mode a snapshot that went stale
    while the worker wrote a run's states and logs, which no busy timeout waits out): it committed nothing for that
    request and asks the client to send it again.
    """
    deadline = time.monotonic() + API_RETRY_S
    delay = 1.0
    while True:
        response = httpx.request(method, f"{server['url']}{path}", json=json or None, timeout=30)
        if response.status_code not in RETRYABLE_STATUS or time.monotonic() > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json()


def _run_deployment(server: dict[str, Any], name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    deployment = _api(server, "GET", f"/deployments/name/{name}")
    run = _api(server, "POST", f"/deployments/{deployment['id']}/create_flow_run", parameters=parameters)
    deadline = time.monotonic() + RUN_S
    while True:
        run = _api(server, "GET", f"/flow_runs/{run['id']}")
        if run["state_type"] in TERMINAL:
            return run
        assert time.monotonic() < deadline, f"{name} still {run['state_type']} after {RUN_S} s:\n" + _tail(
            server["worker_log"]
        )
        time.sleep(2)


def _log_text(server: dict[str, Any], flow_run_id: str, expected: str, wait_s: float = 60) -> str:
    """A flow run's log messages, once `expected` is among them: a run's last logs reach the server after its state."""
    deadline = time.monotonic() + wait_s
    while True:
        logs = _api(server, "POST", "/logs/filter", logs={"flow_run_id": {"any_": [flow_run_id]}})
        text = "\n".join(log["message"] for log in logs)
        if expected in text or time.monotonic() > deadline:
            return text
        time.sleep(2)


def test_deployed_batch_then_delivery_complete_with_logs_and_artifacts(server: dict[str, Any]) -> None:
    from tasks.core.manifest import load_plan

    deployments = _api(server, "POST", "/deployments/filter")
    names = {d["name"] for d in deployments}
    assert {"batch", "delivery", "finalize", "publish", "audit-nightly", "train-demo-models"} <= names
    for deployment in deployments:  # a schedule that needs the user's own resources ships inactive
        assert not any(s["active"] for s in deployment["schedules"]), deployment["name"]

    manifest = write(server["root"] / "campaign" / "manifest.yaml", TINY_MANIFEST)
    run_id = load_plan(manifest).run_id
    batch = _run_deployment(server, "assetmint-batch/batch", {"manifest": str(manifest)})
    assert batch["state_type"] == "COMPLETED", _tail(server["worker_log"])
    delivery = _run_deployment(server, "assetmint-delivery/delivery", {"run_id": run_id})
    assert delivery["state_type"] == "COMPLETED", _tail(server["worker_log"])

    # Runs read by run id in the UI and carry the campaign and policy digest as tags.
    assert batch["name"] == run_id and delivery["name"] == f"deliver-{run_id}"
    for run in (batch, delivery):
        assert "campaign:e2e" in run["tags"] and any(tag.startswith("policy:") for tag in run["tags"]), run["tags"]

    # The stages' INFO lines reach the server, attached to the runs they happened in.
    for run, line in ((batch, "CLIP-scored"), (delivery, "published")):
        assert line in _log_text(server, run["id"], line), f"no {line!r} log for {run['name']}"
    artifacts = _api(server, "POST", "/artifacts/filter", artifacts={"flow_run_id": {"any_": [batch["id"]]}})
    keys = {a["key"].rsplit("-", 2)[0] for a in artifacts}
    assert keys >= {"ranking", "summary", "contact-sheet"}, keys
    ranking = next(a for a in artifacts if a["key"].startswith("ranking-"))
    assert ranking["data"] and ranking["data"] != "[]", "the ranking table is empty"

    # Outputs land in ASSETMINT_WORK_DIR, where a reviewer runs `assetmint review`, never in a temporary clone.
    work = server["root"] / "work"
    assert (work / "ledger.sqlite").is_file() and (work / "runs" / run_id).is_dir()
    assert list((work / "published").rglob("*.png")), "the delivery run published nothing"
