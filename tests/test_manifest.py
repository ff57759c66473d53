"""Manifest validation, expansion and error reporting."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from cli.main import main
from conftest import REPO, write
from tasks.core.errors import ManifestError
from tasks.core.manifest import load_manifest, load_plan, manifest_json_schema

GOOD = """\
campaign: {id: spring, name: Spring launch}
defaults:
  model: embedded:tiny-sd
  candidates: 3
  base_seed: 10
  width: 256
  height: 256
  steps: 2
prompts:
  - id: shots
    prompt: "{product} on {surface}, {style}"
    vars:
      product: [sneaker, bag]
      surface: [marble]
      style: [studio, film, neon]
    aspect_ratio: ["1:1", "16:9"]
    long_side: 512
  - prompt: plain prompt
    seeds: [7, 9]
    keep_top_k: 1
"""


def test_matrix_expansion_counts_and_settings(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path / "m.yaml", GOOD))
    shots = [job for job in plan.jobs if job.prompt_id == "shots"]
    assert len(shots) == 2 * 1 * 3 * 2
    assert {job.prompt for job in shots} >= {"sneaker on marble, studio", "bag on marble, neon"}
    assert {(job.width, job.height) for job in shots} == {(512, 512), (512, 288)}
    assert all(job.seeds == (10, 11, 12) for job in shots)
    plain = [job for job in plan.jobs if job.prompt_id == "p2"]
    assert len(plain) == 1 and plain[0].seeds == (7, 9) and plain[0].keep_top_k == 1
    assert plain[0].width == 256
    assert plan.candidate_count == 12 * 3 + 2


def test_run_id_is_deterministic_and_content_sensitive(tmp_path: Path) -> None:
    first = load_plan(write(tmp_path / "a.yaml", GOOD))
    again = load_plan(write(tmp_path / "b.yaml", "# a comment changes nothing\n" + GOOD))
    reseeded = load_plan(write(tmp_path / "c.yaml", GOOD.replace("base_seed: 10", "base_seed: 11")))
    changed = load_plan(write(tmp_path / "d.yaml", GOOD.replace("steps: 2", "steps: 3")))
    assert first.run_id == again.run_id == reseeded.run_id  # seeds make candidates, not a new batch
    assert first.run_id != changed.run_id
    assert first.run_id.startswith("spring-")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("  steps: 2\n", "  steps: 2\n  colour: red\n"), ":9: defaults.colour: unknown key"),
        (GOOD.replace("width: 256", "width: 250"), ":6: defaults.width: width must be a multiple of 8"),
        (GOOD.replace("steps: 2", "steps: many"), "defaults.steps: Input should be a valid integer"),
        (GOOD.replace("seeds: [7, 9]", "seeds: [7, 9]\n    base_seed: 3"), "set either seeds or base_seed"),
        (GOOD.replace("style: [studio, film, neon]", "colour: [red]"), "placeholder {style}"),
        (
            GOOD.replace("scheduler", "x").replace("  steps: 2", "  steps: 2\n  scheduler: turbo"),
            "unknown scheduler 'turbo'; valid schedulers: ddim",
        ),
        (GOOD.replace('["1:1", "16:9"]', '["1:1", "wide"]'), "aspect ratio must look like '16:9'"),
        ("campaign: {id: Bad Id, name: x}\nprompts: [{prompt: a}]\n", "campaign.id: String should match pattern"),
        ("campaign: {id: a, name: x}\nprompts: []\n", "prompts: List should have at least 1 item"),
        (GOOD + "  - id: shots\n    prompt: again\n", "prompt id 'shots' is used more than once"),
    ],
)
def test_invalid_manifests_name_line_field_and_value(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ManifestError) as caught:
        load_plan(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_malformed_yaml_and_duplicate_keys_report_lines(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.yaml", "campaign: {id: a, name: x\nprompts: [\n")
    with pytest.raises(ManifestError, match=r"broken\.yaml:\d+: manifest is not valid YAML"):
        load_manifest(broken)
    dup = write(tmp_path / "dup.yaml", "campaign: {id: a, name: x}\nprompts: [{prompt: a}]\nprompts: [{prompt: b}]\n")
    with pytest.raises(ManifestError, match=r"dup\.yaml:3: .*duplicate key 'prompts'"):
        load_manifest(dup)


def test_expansion_conflicts_are_errors(tmp_path: Path) -> None:
    no_model = write(tmp_path / "nomodel.yaml", "campaign: {id: a, name: x}\nprompts: [{prompt: a}]\n")
    with pytest.raises(ManifestError, match=r"no model; set defaults.model"):
        load_plan(no_model)
    mismatch = write(tmp_path / "mismatch.yaml", GOOD.replace("seeds: [7, 9]", "seeds: [7, 9]\n    candidates: 5"))
    with pytest.raises(ManifestError, match="candidates is 5 but seeds lists 2 values"):
        load_plan(mismatch)
    twice = write(tmp_path / "twice.yaml", GOOD.replace("[studio, film, neon]", "[studio, studio]"))
    with pytest.raises(ManifestError, match="expands to the same job"):
        load_plan(twice)
    no_long = write(tmp_path / "nolong.yaml", GOOD.replace("    long_side: 512\n", ""))
    with pytest.raises(ManifestError, match="needs long_side"):
        load_plan(no_long)


def test_committed_schemas_are_current() -> None:
    from policies.model import policy_json_schema

    committed = json.loads((REPO / "policies/schemas/manifest.schema.json").read_text())
    assert committed == manifest_json_schema(), "run: assetmint schema manifest > policies/schemas/manifest.schema.json"
    committed = json.loads((REPO / "policies/schemas/policy.schema.json").read_text())
    assert committed == policy_json_schema(), "run: assetmint schema policy > policies/schemas/policy.schema.json"


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate_against_schema_and_model(example: Path) -> None:
    jsonschema.validate(yaml.safe_load(example.read_text()), manifest_json_schema())
    assert load_plan(example).candidate_count > 0


def test_schema_rejects_what_the_model_rejects() -> None:
    bad = yaml.safe_load(GOOD)
    bad["defaults"]["colour"] = "red"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, manifest_json_schema())


def test_cli_validate_and_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.yaml", GOOD)
    assert main(["validate", str(good)]) == 0
    assert "valid; 13 jobs, 38 candidates" in capsys.readouterr().out
    assert main(["plan", str(good)]) == 0
    out = capsys.readouterr().out
    assert "13 jobs, 38 candidates; nothing generated" in out and "512x288" in out


def test_cli_bad_manifest_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path / "bad.yaml", GOOD.replace("width: 256", "width: 250"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: manifest") and "bad.yaml:6" in err and "250" in err
    assert "Traceback" not in err
    assert main(["plan", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_prompts_with_markup_are_shown_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    text = GOOD.replace("plain prompt", "'[bold]x[/bold] <script>alert(1)</script> [red]'")
    assert main(["plan", str(write(tmp_path / "m.yaml", text))]) == 0
    assert "[bold]x[/bold] <script>alert(1)</script> [red]" in capsys.readouterr().out
