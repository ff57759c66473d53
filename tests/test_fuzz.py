"""Property-based fuzzing of what users write: manifests and policies, from their JSON Schemas and from mutations of
the committed examples, against `assetmint validate` and the checks `assetmint run` makes before it starts a flow.

For every input: exit 0 or 2 and never an exception; at most a few seconds and a few hundred MB; with exit 2 one
paragraph starting `error:` and an unchanged work tree; with exit 0 a plan whose every seed, count, size and prompt
is one the generator takes. Failures found here are kept as regression cases in test_bad_input.py.

Examples per property: ASSETMINT_FUZZ_EXAMPLES (default 60); set ASSETMINT_FUZZ_RANDOM=1 for a fresh random
exploration instead of the reproducible one CI runs.
"""

from __future__ import annotations

import contextlib
import io
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from cli.main import main
from conftest import FUZZ, REPO, TINY_MANIFEST, TINY_MODELS_POLICY
from policies.model import policy_json_schema
from tasks.core.manifest import MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MIN_SIDE, load_plan, manifest_json_schema

MAX_SECONDS = 5.0
MAX_PEAK_MB = 200

EXAMPLE_MANIFESTS = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples").glob("*.yaml"))] + [
    yaml.safe_load(TINY_MANIFEST)
]
EXAMPLE_POLICIES = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "policies").glob("*.yaml"))] + [
    yaml.safe_load(TINY_MODELS_POLICY.read_text())
]

# Values a careless or hostile author puts where something else belongs.
NASTY_SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 7, 8, 63, 64, 65, 2**31, 2**63 - 1, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e20, 1e30, -0.0, 0.5, 1e-300]),
    st.booleans(),
    st.none(),
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "{",
            "}",
            "{x}",
            "{0}",
            "{x:>99999999}",
            "{x!r}",
            "{x.y}",
            "{x[0]}",
            "{{x}}",
            "../../etc/passwd",
            "embedded:tiny-sd",
            "embedded:nope",
            "s3://",
            "sqlite:///",
            "postgresql://u:p@127.0.0.1:1/x",
            "16:9",
            "0:0",
            "999:1",
            "x" * 5000,
            "🎨" * 100,
        ]
    ),
)
NASTY = st.recursive(
    NASTY_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _replace(data: Any, path: tuple[Any, ...], make: Callable[[Any], Any]) -> Any:
    if not path:
        return make(data)
    copy = dict(data) if isinstance(data, dict) else list(data)
    copy[path[0]] = _replace(copy[path[0]], path[1:], make)
    return copy


@st.composite
def mutated(draw: st.DrawFn, examples: list[Any]) -> Any:
    """A committed example with one to four edits: a value replaced, a key dropped or added, a list emptied."""
    data = draw(st.sampled_from(examples))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths[1:] or paths))  # rarely the whole document: that only tests one message
        action = draw(st.sampled_from(["replace", "replace", "drop", "add", "empty", "repeat"]))
        if action == "replace":
            value = draw(NASTY)
            data = _replace(data, path, lambda _old, value=value: value)
        elif action == "drop" and path:
            parent, last = path[:-1], path[-1]
            data = _replace(data, parent, lambda old, last=last: _without(old, last))
        elif action == "add":
            key, value = draw(st.text(min_size=1, max_size=12)), draw(NASTY)
            data = _replace(data, path, lambda old, key=key, value=value: _with(old, key, value))
        elif action == "empty":
            data = _replace(data, path, lambda old: type(old)() if isinstance(old, (dict, list)) else old)
        elif action == "repeat":
            times = draw(st.sampled_from([2, 50, 2000]))
            data = _replace(data, path, lambda old, times=times: old * times if isinstance(old, (list, str)) else old)
    return data


def _without(container: Any, key: Any) -> Any:
    if isinstance(container, dict):
        return {k: v for k, v in container.items() if k != key}
    return [v for i, v in enumerate(container) if i != key]


def _with(container: Any, key: str, value: Any) -> Any:
    if isinstance(container, dict):
        return {**container, key: value}
    if isinstance(container, list):
        return [*container, value]
    return container


@st.composite
def text_mutated(draw: st.DrawFn, examples: list[Any]) -> str:
    """A committed example's YAML text with YAML syntax spliced in at random places: the parser's own fuzz."""
    text = yaml.safe_dump(draw(st.sampled_from(examples)), sort_keys=False)
    pieces = st.sampled_from(
        [
            "&a ",
            "*a",
            "*b",
            "[",
            "]",
            "{",
            "}",
            ": ",
            "- ",
            "\t",
            "\n  ",
            "? ",
            "!!python/object:os.system ",
            "<<: ",
            "%",
        ]
    )
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:at] + draw(pieces) + text[at:]
    return text


def from_schema(
    schema: dict[str, Any], likely: dict[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[Any]:
    """Documents that follow a JSON Schema (the subset pydantic writes): $ref, anyOf, enum, bounds, patterns.

    `likely` gives, per property name, values to draw as often as schema-valid ones (a model the policy allows, a
    known scheduler), so that generated documents also get past the checks the schema cannot express.
    """
    definitions = schema.get("$defs", {})
    likely = likely or {}

    def property_strategy(name: str, node: dict[str, Any]) -> st.SearchStrategy[Any]:
        return st.one_of(likely[name], build(node)) if name in likely else build(node)

    def build(node: dict[str, Any]) -> st.SearchStrategy[Any]:
        if "$ref" in node:
            return st.deferred(lambda: build(definitions[node["$ref"].rsplit("/", 1)[-1]]))
        if "anyOf" in node:
            return st.one_of([build(option) for option in node["anyOf"]])
        if "enum" in node:
            return st.sampled_from(node["enum"])
        if "const" in node:
            return st.just(node["const"])
        kind = node.get("type")
        if kind == "integer":
            return st.integers(node.get("minimum", -(2**40)), node.get("maximum", 2**40))
        if kind == "number":
            return st.floats(node.get("minimum"), node.get("maximum"), allow_nan=False, allow_infinity=False)
        if kind == "string":
            if "pattern" in node:
                return st.from_regex(node["pattern"], fullmatch=True)
            return st.text(min_size=node.get("minLength", 0), max_size=min(node.get("maxLength", 30), 30))
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        if kind == "array":
            low = node.get("minItems", 0)
            return st.lists(
                build(node.get("items", {})), min_size=low, max_size=max(low, min(node.get("maxItems", 3), 3))
            )
        if kind == "object" or "properties" in node:
            properties = {name: property_strategy(name, sub) for name, sub in node.get("properties", {}).items()}
            required = set(node.get("required", []))
            fixed = st.fixed_dictionaries(
                {k: v for k, v in properties.items() if k in required},
                optional={k: v for k, v in properties.items() if k not in required},
            )
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                return st.tuples(fixed, st.dictionaries(st.text(min_size=1, max_size=8), build(extra), max_size=3)).map(
                    lambda pair: {**pair[1], **pair[0]}
                )
            return fixed
        return NASTY_SCALARS

    return build(schema)


def _dump(data: Any) -> str:
    return data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


def _check(argv: list[str], root: Path) -> tuple[int, str]:
    """Run the CLI in-process and assert the properties every input must have; returns exit code and stderr."""
    before = _tree(root)
    err = io.StringIO()
    tracemalloc.start()
    started = time.monotonic()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    finally:
        seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    message = err.getvalue()
    assert code in (0, 2), f"exit {code}: {message}"
    assert "Traceback" not in message, message
    assert seconds < MAX_SECONDS, f"took {seconds:.1f} s"
    assert peak < MAX_PEAK_MB * 2**20, f"allocated {peak / 2**20:.0f} MB"
    if code == 2:
        assert message.startswith("error: ") and "\n\n" not in message.strip(), message
        assert _tree(root) == before, "a refused input changed the work tree"
    return code, message


def _check_accepted_plan(manifest: Path, policy: Path | None) -> None:
    """What validate accepts is a plan the generator can run: seeds, sizes, counts and prompts in range."""
    from policies.model import load_policy

    limit = load_policy(policy).generation.max_candidates_per_run
    plan = load_plan(manifest, limit)
    assert 0 < plan.candidate_count <= limit
    for job in plan.jobs:
        assert all(0 <= seed <= MAX_SEED for seed in job.seeds) and len(set(job.seeds)) == len(job.seeds)
        assert MIN_SIDE <= min(job.width, job.height) and max(job.width, job.height) <= MAX_SIDE
        assert job.width % 8 == 0 and job.height % 8 == 0
        assert 1 <= job.keep_top_k and 1 <= job.steps and len(job.prompt) <= MAX_PROMPT_CHARS


@pytest.fixture(scope="module")
def warmed_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Import the run path and resolve the tiny models once, so examples measure input handling, not start-up."""
    from tasks.stages.runs import load_context

    root = tmp_path_factory.mktemp("warm-up")
    (root / "m.yaml").write_text(TINY_MANIFEST, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASSETMINT_WORK_DIR", str(root / "work"))
        load_context(root / "m.yaml", None)


@pytest.fixture
def fuzz_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, warmed_up: None) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    monkeypatch.setenv("ASSETMINT_WORK_DIR", str(root / "work"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def _mostly(usual: st.SearchStrategy[Any], edge: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` about five times in six, else `edge` (values at and past a limit)."""
    return st.one_of(usual, usual, usual, usual, usual, edge)


@st.composite
def plausible_manifests(draw: st.DrawFn) -> dict[str, Any]:
    """Manifests built to be nearly valid, with values drawn up to (and past) each limit: the accept path's fuzz."""
    names = draw(st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), unique=True, max_size=4))
    value = st.text(min_size=1, max_size=draw(_mostly(st.just(12), st.just(1200))))
    count = draw(_mostly(st.integers(1, 3), st.integers(40, 1001)))
    variables = {name: draw(st.lists(value, min_size=1, max_size=count)) for name in names}
    literal = draw(st.text(max_size=draw(_mostly(st.just(20), st.just(4100))))).replace("{", "{{").replace("}", "}}")
    template = literal + "".join(f" {{{name}}}" for name in names) or "a"
    side = _mostly(st.integers(8, 64).map(lambda n: n * 8), st.integers(0, 1100).map(lambda n: n * 8 + n % 3))
    settings: dict[str, Any] = {
        "model": draw(st.sampled_from(["embedded:tiny-sd", "embedded:shapes-sd"])),
        "candidates": draw(_mostly(st.integers(1, 8), st.integers(1000, 1100))),
        "keep_top_k": draw(_mostly(st.integers(1, 4), st.integers(1000, 2000))),
        "base_seed": draw(_mostly(st.integers(0, 100), st.integers(2**63 - 1100, 2**63 + 5))),
    }
    if draw(st.booleans()):
        settings["width"], settings["height"] = draw(side), draw(side)
    else:
        ratio = _mostly(st.integers(1, 21), st.integers(0, 1000))
        aspects = st.tuples(ratio, ratio).map(lambda wh: f"{wh[0]}:{wh[1]}")
        settings["aspect_ratio"] = draw(st.lists(aspects, min_size=1, max_size=4))
        settings["long_side"] = draw(side)
    prompts = [{"prompt": template, "vars": variables}] * draw(_mostly(st.just(1), st.integers(2, 3)))
    return {"campaign": {"id": "fuzz", "name": "Fuzz"}, "defaults": settings, "prompts": prompts}


LIKELY_MANIFEST_VALUES = {
    "model": st.sampled_from(["embedded:tiny-sd", "embedded:shapes-sd"]),
    "scheduler": st.sampled_from(["default", "euler", "ddim", "dpm++2m"]),
    "width": st.sampled_from([64, 256, 512]),
    "height": st.sampled_from([64, 256, 512]),
}
MANIFESTS = st.one_of(
    plausible_manifests(),
    mutated(EXAMPLE_MANIFESTS),
    text_mutated(EXAMPLE_MANIFESTS),
    from_schema(manifest_json_schema(), LIKELY_MANIFEST_VALUES),
)
POLICIES = st.one_of(mutated(EXAMPLE_POLICIES), text_mutated(EXAMPLE_POLICIES), from_schema(policy_json_schema()))


@FUZZ
@given(manifest=MANIFESTS)
def test_validate_answers_every_manifest(manifest: Any, fuzz_root: Path) -> None:
    path = fuzz_root / "m.yaml"
    path.write_text(_dump(manifest), encoding="utf-8")
    code, _ = _check(["validate", str(path)], fuzz_root)
    if code == 0:
        _check_accepted_plan(path, None)


@FUZZ
@given(policy=POLICIES)
def test_validate_answers_every_policy(policy: Any, fuzz_root: Path) -> None:
    manifest = fuzz_root / "m.yaml"
    manifest.write_text(TINY_MANIFEST, encoding="utf-8")
    path = fuzz_root / "p.yaml"
    path.write_text(_dump(policy), encoding="utf-8")
    code, _ = _check(["validate", str(manifest), "--policy", str(path)], fuzz_root)
    if code == 0:
        _check_accepted_plan(manifest, path)


class _FlowWouldStart(Exception):
    """Raised in place of starting Prefect: every check `run` makes before generating anything has passed."""


@FUZZ
@given(manifest=st.one_of(mutated(EXAMPLE_MANIFESTS), text_mutated(EXAMPLE_MANIFESTS)))
def test_run_refuses_exactly_what_validate_refuses(
    manifest: Any, fuzz_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` accepts exactly what validate accepts (up to starting Prefect); a refusal writes nothing."""
    import cli.runs

    def prefect_would_start() -> None:
        raise _FlowWouldStart

    monkeypatch.setattr(cli.runs, "start_prefect", prefect_would_start)
    path = fuzz_root / "m.yaml"
    path.write_text(_dump(manifest), encoding="utf-8")
    validated, _ = _check(["validate", str(path)], fuzz_root)
    try:
        ran, message = _check(["run", str(path)], fuzz_root)
    except _FlowWouldStart:
        ran, message = 0, ""
    assert ran == validated, f"validate said {validated}, run said {ran}: {message}"
