"""A Ray cluster on this machine for tests and benchmarks: a head without CPUs and N worker nodes, with `ray start`.

Each node runs `ray start --block` in a session of its own, so stopping the cluster stops exactly its processes (not
every Ray process of the user, as `ray stop` would). Use `local_ray_cluster(...)` as a context manager, or run
`python deploy/local_ray.py --workers 2` to keep one up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

START_S = 300.0  # a loaded 2-core machine can take minutes to start Ray's processes


def _ray_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        raise RuntimeError("the ray command line is not installed (pip install 'assetmint[ray]')")
    with log.open("wb") as out:
        return subprocess.Popen(
            [ray, "start", "--block", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@contextlib.contextmanager
def local_ray_cluster(
    workers: int, logs: Path, env: dict[str, str] | None = None, cpus_per_worker: int = 1
) -> Iterator[str]:
    """Start the cluster, yield its address (127.0.0.1:PORT), and stop every process of it on leaving."""
    import ray

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    address = f"127.0.0.1:{port}"
    node_env = {k: v for k, v in (env or os.environ).items() if not k.startswith("RAY_")}
    head = ["--head", f"--port={port}", "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false"]
    head.append(f"--temp-dir={tempfile.mkdtemp(prefix='assetmint-ray-')}")
    nodes = [_ray_node(head, logs / "head.log", node_env)]
    deadline = time.monotonic() + START_S
    try:
        while not _accepts(port):
            if nodes[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no Ray head on {address}:\n{_tail(logs / 'head.log')}")
            time.sleep(1)
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
        for n in range(1, workers + 1):  # one after the other: nodes starting together race for their sockets
            log = logs / f"worker{n}.log"
            nodes.append(
                _ray_node([f"--address={address}", f"--num-cpus={cpus_per_worker}", "--num-gpus=0"], log, node_env)
            )
            while ray.cluster_resources().get("CPU", 0) < n * cpus_per_worker:
                if nodes[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Ray worker node {n} did not join:\n{_tail(log)}")
                time.sleep(1)
        ray.shutdown()  # a run connects itself, as a driver on another machine would
        yield address
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        for node in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=10)  # SIGTERM makes a node drain for up to 30 s; nothing here needs that
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)  # what SIGTERM left of the node's processes
            node.wait()


def main() -> None:
    """Keep a local cluster up until Ctrl-C, printing its address."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="worker nodes (default 2)")
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="assetmint-ray-logs-"))
    with local_ray_cluster(args.workers, logs, cpus_per_worker=args.cpus_per_worker) as address:
        print(f"RAY_ADDRESS={address}  (logs in {logs}); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
