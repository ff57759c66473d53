"""Shared fixtures: isolated user directories, a quiet Prefect, and the tiny embedded models built once."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

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
# The tiny random model paints full-range noise, where spreadTile sometimes needs its reinforced strength (see
# tiny-models-policy.yaml): flow tests whose subject is not the watermark mark its pictures with dwtDctSvd.
TINY_WATERMARK = "watermark:\n  method: dwtDctSvd\n"
AUTO_PUBLISH_POLICY = "publish:\n  auto_publish: true\n" + TINY_WATERMARK
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


def _postgres_program(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or where Debian's postgresql package puts it (off PATH)."""
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Callable[[], str]]:
    """A factory of URLs of new, empty databases on a private PostgreSQL server (unix socket only).

    Skipped where the machine has no PostgreSQL, except under deploy/test.sh (ASSETMINT_TEST_NEEDS_POSTGRES=1), which
    installs it: there a missing server is a failure, not a quiet skip.
    """
    initdb, pg_ctl = _postgres_program("initdb"), _postgres_program("pg_ctl")
    if initdb is None or pg_ctl is None or importlib.util.find_spec("psycopg") is None:
        reason = "needs PostgreSQL's initdb and pg_ctl and the psycopg driver"
        if os.environ.get("ASSETMINT_TEST_NEEDS_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="assetmint-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    quiet: dict[str, Any] = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([*as_user, initdb, "-D", f"{folder}/data", "-A", "trust", "-U", "postgres", "--no-sync"], **quiet)
    options = f"-c listen_addresses='' -k {folder} -c fsync=off"
    start = [pg_ctl, "-D", f"{folder}/data", "-o", options, "-l", f"{folder}/log", "-w", "-t", "300", "start"]
    subprocess.run([*as_user, *start], **quiet)
    import psycopg

    counter = iter(range(1000))

    def new_database() -> str:
        name = f"ledger{next(counter)}"
        with psycopg.connect(host=str(folder), user="postgres", dbname="postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@/{name}?host={folder}"

    try:
        yield new_database
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", f"{folder}/data", "-m", "immediate", "stop"], **quiet)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray cluster on this machine (deploy/local_ray.py): a head without CPUs and two 1-CPU worker nodes.

    Skipped where Ray is not installed, except under deploy/test.sh (ASSETMINT_TEST_NEEDS_RAY=1), which installs it.
    The nodes get the session's model cache, as a real cluster's workers get the model volume.
    """
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("ASSETMINT_TEST_NEEDS_RAY") == "1":
            pytest.fail("Ray is not installed")
        pytest.skip("needs Ray (pip install 'assetmint[ray]')")
    sys.path.insert(0, str(REPO / "deploy"))
    from local_ray import local_ray_cluster

    env = {**os.environ, "ASSETMINT_CACHE_DIR": str(model_cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    with local_ray_cluster(2, tmp_path_factory.mktemp("ray"), env) as address:
        yield address


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


def isolated_environment(root: Path, model_cache: Path) -> dict[str, str]:
    """The variables that put a command's config and work directories under `root`, with the tiny-models policy."""
    return {
        "ASSETMINT_CACHE_DIR": str(model_cache),
        "ASSETMINT_CONFIG_DIR": str(root / "config"),
        "ASSETMINT_WORK_DIR": str(root / "work"),
        "ASSETMINT_POLICY": str(TINY_MODELS_POLICY),
    }


def run_isolated(root: Path, model_cache: Path, argv: list[str]) -> dict[str, str]:
    """Run `assetmint ARGV` with config and work directories under `root` (for module-scoped fixtures)."""
    from cli.main import main

    env = isolated_environment(root, model_cache)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(argv) == 0
    return env


def cli_command(argv: list[str]) -> list[str]:
    """The command line of `assetmint ARGV` as a subprocess: this interpreter, so it works in any checkout."""
    return [sys.executable, "-m", "cli", *argv]


def command_environment(**extra: str) -> dict[str, str]:
    """This process's environment for an `assetmint` subprocess, without the test session's Prefect log settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")}
    env.update(extra)
    return env


class SpawnedRun:
    """`assetmint ARGV` started in a session of its own (its own process group, as a terminal's foreground job),
    observed from outside: the ledger it writes, its processes, its output (in files, so it never blocks)."""

    def __init__(self, argv: list[str], root: Path, model_cache: Path, name: str = "run", **extra_env: str) -> None:
        self.root = root
        self.stdout = root / f"{name}.stdout"
        self.stderr = root / f"{name}.stderr"
        env = command_environment(**isolated_environment(root, model_cache), **extra_env)
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen(
                cli_command(argv), cwd=root, env=env, stdout=out, stderr=err, start_new_session=True, text=True
            )

    @property
    def pid(self) -> int:
        """The command's pid, which is also its process group and session id."""
        return self.process.pid

    def counts(self) -> dict[str, int]:
        """Candidates per state in the ledger (read-only; empty before the ledger exists)."""
        return ledger_counts(self.root)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float = 300.0) -> None:
        """Poll `condition` until it holds; fail if the command ends first or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.process.poll() is None, f"the command ended before {what}:\n{self.stderr.read_text()}"
            assert time.monotonic() < deadline, f"not {what} within {timeout_s} s"
            time.sleep(0.02)

    def wait(self, timeout_s: float = 600.0) -> tuple[int, str]:
        """Wait for the command to end; its exit status and stderr."""
        code = self.process.wait(timeout=timeout_s)
        return code, self.stderr.read_text()

    def group_gone(self, timeout_s: float = 30.0) -> bool:
        """True once no process is left in the command's process group (polls up to `timeout_s`)."""

        def gone() -> bool:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return True
            return False

        return _poll(gone, timeout_s)

    def prefect_servers(self) -> list[int]:
        """The pids of the Prefect API servers the command started (its children running uvicorn)."""
        return [pid for pid, command in _children(self.pid) if "uvicorn" in command]


def process_gone(pid: int, timeout_s: float = 30.0) -> bool:
    """True once process `pid` no longer exists (polls up to `timeout_s`)."""
    return _poll(lambda: not Path(f"/proc/{pid}").exists(), timeout_s)


def _poll(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def ledger_counts(root: Path) -> dict[str, int]:
    """Candidates per state in the ledger under `root`, read without writing (empty before it exists)."""
    return dict(ledger_query(root, "SELECT state, COUNT(*) FROM candidates GROUP BY state"))


def run_statuses(root: Path) -> list[str]:
    """The status of every run in the ledger under `root`."""
    return [status for (status,) in ledger_query(root, "SELECT status FROM runs")]


def ledger_query(root: Path, sql: str) -> list[Any]:
    """Rows of `sql` on the ledger under `root`, read-only (none before the ledger and its schema exist)."""
    import sqlite3

    path = root / "work" / "ledger.sqlite"
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the schema is still being created
        return []


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of each running child of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, IndexError, ValueError):
            continue
    return found


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


@contextlib.contextmanager
def serve_on_loopback(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn, as the CLI configures it, on 127.0.0.1 and a free port; yields the base URL."""
    import threading

    import uvicorn

    from cli.review import bind
    from tasks.web.bounds import server_options

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **server_options()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 100_000) -> bytes:
    """A PNG of a few bytes whose header claims side x side pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def picture(seed: int, size: tuple[int, int] = (512, 512)) -> Any:
    """A procedural picture (PIL RGB): smooth colour at three scales under a few flat shapes."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    layers = [
        np.asarray(Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)).resize(size, Image.BICUBIC))
        for cells in (3, 8, 24)
    ]
    image = Image.fromarray((0.5 * layers[0] + 0.3 * layers[1] + 0.2 * layers[2]).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        side = int(rng.integers(width // 10, width // 3))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + side, y + side), fill=colour)
    return image


# Hypothesis settings of every fuzz test: reproducible in CI; ASSETMINT_FUZZ_EXAMPLES and ASSETMINT_FUZZ_RANDOM=1
# turn them into a longer, fresh exploration.
FUZZ = settings(
    max_examples=int(os.environ.get("ASSETMINT_FUZZ_EXAMPLES", "60")),
    deadline=None,  # tests assert their own time bounds, ones a loaded machine still meets
    derandomize=os.environ.get("ASSETMINT_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
