"""Hostile and careless manifests and policies: exit 2, one paragraph, bounded time and memory, nothing written.

Each case here was found by trying AssetMint as someone who did not read the README (or meant harm); the
property-based suite in test_fuzz.py looks for more.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cli.main import main
from conftest import REPO, TINY_MANIFEST, write
from tasks.storage.ledger import Ledger

HEAD = 'version: 1\ncampaign: {id: c, name: C}\ndefaults: {model: "embedded:tiny-sd", width: 256, height: 256}\n'
MAX_SECONDS = 20.0  # `validate` answers in well under a second; this only has to tell a hang from an answer
MAX_RSS_MB = 400  # the interpreter, pydantic and SQLAlchemy take ~60 MB; a bomb took 4 GB


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _with_model(ref: str) -> str:
    return HEAD.replace("embedded:tiny-sd", ref) + "prompts: [{prompt: a}]\n"


MANIFESTS = {
    "alias-bomb": (HEAD + _laughs(9) + "prompts: [{prompt: a}]\n", "alias bomb"),
    "alias-bomb-in-vars": (
        HEAD
        + _laughs(7).replace("l0:", "x0:").replace("\nl", "\nx")
        + "prompts: [{prompt: 'a {v}', vars: {v: *l6}}]\n",
        "aliases expand to more than",
    ),
    "recursive-alias": (HEAD + "prompts: &p [{prompt: a, vars: *p}]\n", "recursive"),
    "5e9-job-matrix": (
        HEAD
        + "prompts:\n  - prompt: '{a}{b}{c}{d}{e}{f}{g}'\n    vars:\n"
        + "".join(f"      {k}: [{', '.join(f'{k}{i}' for i in range(24))}]\n" for k in "abcdefg"),
        "over max_candidates_per_run 5,000",
    ),
    "10MB-of-prompts": (
        HEAD + "prompts:\n" + "".join(f"  - prompt: 'a red circle, variant {i:06d}'\n" for i in range(300_000)),
        "larger than 1,024 KiB",
    ),
    "40k-prompts": (HEAD + "prompts:\n" + "".join(f"  - {{prompt: p{i}}}\n" for i in range(40_000)), "at most 10000"),
    "format-spec-width": (HEAD + "prompts: [{prompt: 'a {x:>200000000}', vars: {x: [y]}}]\n", "format spec"),
    "format-spec-digits": (HEAD + "prompts: [{prompt: 'a {x:3}', vars: {x: [y]}}]\n", "only plain {x}"),
    "format-conversion": (HEAD + "prompts: [{prompt: 'a {x!r}', vars: {x: [y]}}]\n", "{x!r}"),
    "attribute-lookup": (HEAD + "prompts: [{prompt: 'a {x.__class__}', vars: {x: [y]}}]\n", "not a simple name"),
    "deep-nesting": (HEAD + f"prompts: [{{prompt: a}}]\nx: {_nested(5000)}\n", "nesting"),
    "nesting-past-limit": (HEAD + f"prompts: [{{prompt: a}}]\nx: {_nested(40)}\n", "deeper than 32 levels"),
    "integer-key": (HEAD + "prompts: [{prompt: 'a {x}', vars: {1: [a]}}]\n", "mapping key '1' must be text"),
    "boolean-key": (HEAD + "prompts: [{prompt: a}]\non: 1\n", "reads it as true/false"),
    "list-key": (HEAD + "? [a, b]\n: 1\nprompts: [{prompt: a}]\n", "not a list or mapping"),
    "null-key": (HEAD + "prompts: [{prompt: a}]\n~: 1\n", "reads it as null"),
    "base-seed-1e30": (HEAD + "prompts: [{prompt: a, base_seed: 1.0e+30}]\n", "0..9223372036854775807"),
    "base-seed-overflow": (
        HEAD + "prompts: [{prompt: a, base_seed: 9223372036854775807, candidates: 4}]\n",
        "use a base_seed in 0..9223372036854775804",
    ),
    "seed-past-int64": (HEAD + "prompts: [{prompt: a, seeds: [9223372036854775808]}]\n", "9223372036854775807"),
    "keep-top-k-1e20": (HEAD + "prompts: [{prompt: a, keep_top_k: 1.0e+20}]\n", "1..1024"),
    "huge-prompt-expansion": (
        HEAD + "prompts: [{prompt: '" + "{x}" * 100 + "', vars: {x: ['" + "y" * 900 + "']}}]\n",
        "expands to up to",
    ),
    "nul-byte": (HEAD + 'prompts: [{prompt: "a\x00b"}]\n', "NUL byte"),
    "not-utf8": (HEAD + "prompts: [{prompt: caf\xe9}]\n", "not UTF-8"),
    # Found by test_fuzz.py: validate accepted an embedded name that run then refused.
    "unknown-embedded-model": (_with_model("embedded:&a shapes-sd"), "unknown embedded model"),
    "clip-as-pipeline": (_with_model("embedded:tiny-clip"), "not a text-to-image"),
    "two-documents": (HEAD + "prompts: [{prompt: a}]\n---\nx: 1\n", "not valid YAML"),
}


def _write_bytes(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("latin-1") if "\xe9" in text else text.encode("utf-8"))
    return path


def _peak_resident_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM: of its own image, unlike the rusage of a forked child,
    which starts from the parent's size at fork); 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


def _run_cli(argv: list[str], cwd: Path) -> tuple[int, str, float, float]:
    """Run `assetmint ARGV` in a child process: exit code, stderr, seconds and its peak resident MB (sampled)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as err_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *argv],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )
        peak_mb = 0.0
        while process.poll() is None:  # VmHWM only grows: a late sample holds every earlier peak
            peak_mb = max(peak_mb, _peak_resident_mb(process.pid))
            if time.monotonic() - started > MAX_SECONDS:
                process.kill()
                process.wait()
                pytest.fail(f"assetmint {' '.join(argv)} ran past {MAX_SECONDS} s (a hang)")
            time.sleep(0.02)
        err_file.seek(0)
        err = err_file.read().decode("utf-8", "replace")
    return process.returncode, err, time.monotonic() - started, peak_mb


def _assert_one_paragraph(err: str, expected: str) -> None:
    assert "Traceback" not in err, err
    assert err.startswith("error: "), err
    assert expected in err, err


def _tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_a_bad_manifest_is_refused_fast_in_one_paragraph(case: str, tmp_path: Path) -> None:
    text, expected = MANIFESTS[case]
    manifest = _write_bytes(tmp_path / "m.yaml", text)
    before = _tree(tmp_path)
    code, err, seconds, peak_mb = _run_cli(["validate", str(manifest)], tmp_path)
    assert code == 2, err
    _assert_one_paragraph(err, expected)
    assert peak_mb < MAX_RSS_MB, f"{case}: {peak_mb:.0f} MB resident"
    assert _tree(tmp_path) == before  # validate writes nothing


@pytest.mark.parametrize("case", ["base-seed-overflow", "keep-top-k-1e20", "format-spec-width", "alias-bomb"])
def test_run_refuses_what_validate_refuses_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = MANIFESTS[case]
    manifest = write(tmp_path / "m.yaml", text)
    before = _tree(tmp_path)
    assert main(["run", str(manifest)]) == 2
    err = capsys.readouterr().err
    _assert_one_paragraph(err, expected)
    assert _tree(tmp_path) == before


def test_the_largest_seeds_are_accepted_and_usable(tmp_path: Path) -> None:
    import torch

    from tasks.core.manifest import MAX_SEED, load_plan

    manifest = write(tmp_path / "m.yaml", HEAD + "prompts: [{prompt: a, base_seed: 9223372036854775804}]\n")
    assert main(["validate", str(manifest)]) == 0
    assert load_plan(manifest).jobs[0].seeds[-1] == MAX_SEED
    torch.Generator(device="cpu").manual_seed(MAX_SEED)  # what generation seeds each candidate's noise with


def test_a_job_count_is_computed_before_any_job_is_built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """10 vars of 100 values plan 10^20 jobs: refused by arithmetic in well under a second."""
    matrix = "".join(f"      {k}: [{', '.join(f'{k}{i}' for i in range(100))}]\n" for k in "abcdefghij")
    manifest = write(
        tmp_path / "m.yaml", HEAD + "prompts:\n  - prompt: '{a}{b}{c}{d}{e}{f}{g}{h}{i}{j}'\n    vars:\n" + matrix
    )
    started = time.monotonic()
    assert main(["validate", str(manifest)]) == 2
    assert time.monotonic() - started < 5
    assert "plans 400,000,000,000,000,000,000 candidates" in capsys.readouterr().err


def test_small_aliases_still_work(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "m.yaml",
        HEAD + "prompts:\n  - {prompt: 'a {x} star', vars: {x: &c [red, blue]}}\n  - {prompt: 'a {x} circle', "
        "vars: {x: *c}}\n",
    )
    assert main(["validate", str(manifest)]) == 0


# --- policies ---------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


POLICIES = {
    "garbage-ledger-url": ("ledger: {url: 'not a url'}\n", "not a database URL"),
    "unknown-database": ("ledger: {url: 'garbage://x'}\n", "which SQLAlchemy does not know"),
    "missing-driver": ("ledger: {url: 'mysql://u:hunter2@db/x'}\n", "needs the Python driver 'MySQLdb'"),
    "empty-work-dir": ("work_dir: ''\n", "work_dir must name a folder"),
    "blank-work-dir": ("work_dir: '   '\n", "work_dir must name a folder"),
    "nul-in-work-dir": ('work_dir: "/tmp/a\\0b"\n', "NUL byte"),
    "max-candidates-1e30": ("generation: {max_candidates_per_run: 1.0e+30}\n", "1..1000000"),
    "policy-alias-bomb": (_laughs(9), "alias bomb"),
    "policy-deep-nesting": (f"x: {_nested(100)}\n", "nesting"),
}


@pytest.mark.parametrize("case", sorted(POLICIES))
def test_a_bad_policy_is_refused_by_validate(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = POLICIES[case]
    policy = write(tmp_path / "p.yaml", "version: 1\n" + text)
    manifest = write(tmp_path / "m.yaml", TINY_MANIFEST)
    before = _tree(tmp_path)
    assert main(["validate", str(manifest), "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    _assert_one_paragraph(err, expected)
    assert "hunter2" not in err  # a password in a URL is never echoed
    assert _tree(tmp_path) == before


def test_postgresql_urls_use_the_psycopg_driver_that_ships_with_assetmint(tmp_path: Path) -> None:
    from policies.model import load_policy

    policy = load_policy(write(tmp_path / "p.yaml", "version: 1\nledger: {url: 'postgresql://u@db.internal/am'}\n"))
    assert policy.ledger.url == "postgresql+psycopg://u@db.internal/am"


def _refused_run(
    tmp_path: Path, policy_text: str, capsys: pytest.CaptureFixture[str], outside: Path | None = None
) -> tuple[str, float]:
    """Run the tiny manifest under a policy that must be refused before any work: stderr and seconds taken.

    Nothing under tmp_path may change, except inside `outside` (a database folder whose engine keeps its own files).
    """
    policy = write(tmp_path / "p.yaml", f"version: 1\nwork_dir: {tmp_path / 'work'}\n" + policy_text)
    manifest = write(tmp_path / "m.yaml", TINY_MANIFEST)

    def tree() -> dict[str, float]:
        return {k: v for k, v in _tree(tmp_path).items() if outside is None or not k.startswith(outside.name)}

    before = tree()
    started = time.monotonic()
    assert main(["run", str(manifest), "--policy", str(policy)]) == 2
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: "), err
    assert tree() == before, "a refused run created files"
    return err, seconds


def test_an_unreachable_postgresql_ledger_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+psycopg://assetmint:hunter2@127.0.0.1:{_free_port()}/ledger"
    err, seconds = _refused_run(tmp_path, f"ledger: {{url: '{url}'}}\n", capsys)
    assert "cannot use the ledger database at postgresql+psycopg://assetmint:***@127.0.0.1" in err
    assert "hunter2" not in err and "check that the server runs" in err
    assert seconds < 60


def test_an_unreachable_s3_target_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    endpoint = f"http://127.0.0.1:{_free_port()}"
    publish = (
        f"publish: {{target: 's3://assets/batch', endpoint_url: '{endpoint}', region: us-east-1, auto_publish: true, "
        "connect_timeout_s: 2}\n"
    )
    err, seconds = _refused_run(tmp_path, publish, capsys)
    assert f"cannot reach s3://assets/batch at {endpoint}" in err and "Nothing was run" in err
    assert seconds < 60


def test_a_read_only_ledger_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ledger file this user cannot write (as root: through a read-only SQLite URI) fails up front, not mid-run."""
    ledger_file = tmp_path / "ledger" / "ledger.sqlite"
    Ledger.open_file(ledger_file).engine.dispose()
    before = ledger_file.read_bytes()
    if os.geteuid() == 0:  # root writes any file; SQLite's own read-only mode is the same refusal from the database
        url = f"sqlite:///file:{ledger_file}?mode=ro&uri=true"
    else:
        ledger_file.chmod(0o444)
        url = f"sqlite:///{ledger_file}"
    # SQLite may leave its -wal/-shm files beside a WAL ledger it opened read-only: the ledger's bytes are what count.
    err, _ = _refused_run(tmp_path, f"ledger: {{url: '{url}'}}\n", capsys, outside=ledger_file.parent)
    assert "readonly database" in err and "writable" in err
    assert ledger_file.read_bytes() == before


def test_a_ledger_folder_that_cannot_be_created_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/proc takes no new folders, whatever permission bits (and root) say: the probe tries, and leaves nothing."""
    err, _ = _refused_run(tmp_path, "ledger: {url: 'sqlite:////proc/assetmint-nope/ledger.sqlite'}\n", capsys)
    assert "the ledger /proc/assetmint-nope/ledger.sqlite cannot be created" in err
