"""Policy loading, unknown keys, and limits applied to plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from conftest import write
from policies.model import load_policy
from tasks.core.errors import PolicyError
from tasks.core.limits import check_plan
from tasks.core.manifest import load_plan

MANIFEST = """\
campaign: {id: c, name: C}
defaults: {model: embedded:tiny-sd, width: 512, height: 512, candidates: 2}
prompts: [{prompt: a cat}]
"""


def test_packaged_default_policy_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSETMINT_POLICY")
    policy = load_policy()
    assert policy.scoring.clip_model == "embedded:shapes-clip"
    assert [(r.concept, r.threshold) for r in policy.safety.concepts.rules] == [("a knife", 0.52)]
    assert policy.watermark.upscale_small
    assert policy.generation.allows_model("embedded:shapes-sd") and policy.generation.allows_model("embedded:tiny-sd")
    assert not policy.generation.allows_model("someone/else")
    assert policy.ledger_url().startswith("sqlite:///") and policy.ledger_url().endswith("/ledger.sqlite")


def test_unknown_and_wrong_keys_are_errors_with_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "scoring:\n  min_score: 0.2\n  topk: 3\ngeneration:\n  max_pixels: lots\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert "has 2 problems" in message
    assert "p.yaml:3: scoring.topk: unknown key" in message
    assert "p.yaml:5: generation.max_pixels: Input should be a valid integer" in message


def test_unreadable_policy_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError, match="is a directory"):
        load_policy(tmp_path)


def test_default_policy_can_be_set_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSETMINT_POLICY", str(write(tmp_path / "house.yaml", "scoring:\n  min_score: 0.5\n")))
    assert load_policy().scoring.min_score == 0.5
    monkeypatch.setenv("ASSETMINT_POLICY", str(tmp_path / "missing.yaml"))
    with pytest.raises(PolicyError, match="missing.yaml"):
        load_policy()


def test_plan_limits(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path / "m.yaml", MANIFEST))
    check_plan(plan, load_policy())
    strict = load_policy(
        write(
            tmp_path / "strict.yaml",
            ("generation:\n  max_pixels: 65536\n  max_candidates_per_run: 1\n  allowed_models: ['org/*']\n"),
        )
    )
    with pytest.raises(PolicyError) as caught:
        check_plan(plan, strict)
    message = str(caught.value)
    assert "model 'embedded:tiny-sd' is not allowed; allowed_models: org/*" in message
    assert "512x512 = 262144 pixels, over max_pixels 65536" in message
    with pytest.raises(PolicyError, match="plans 2 candidates, over max_candidates_per_run 1;"):
        load_plan(tmp_path / "m.yaml", strict.generation.max_candidates_per_run)


def test_cli_reports_policy_violation_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write(tmp_path / "m.yaml", MANIFEST)
    policy = write(tmp_path / "p.yaml", "generation:\n  max_pixels: 65536\n")
    assert main(["validate", str(manifest), "--policy", str(policy)]) == 2
    assert "over max_pixels" in capsys.readouterr().err


def test_example_policies_load() -> None:
    from conftest import REPO

    for path in sorted((REPO / "policies").glob("*.yaml")):
        assert load_policy(path).version == 1, path


def test_validate_warns_when_images_are_too_small_to_watermark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import REPO

    manifest = write(tmp_path / "m.yaml", MANIFEST.replace("512", "64"))
    brand_safe = str(REPO / "policies" / "brand-safe.yaml")
    for command in ("validate", "plan"):
        assert main([command, str(manifest), "--policy", brand_safe]) == 0
        err = capsys.readouterr().err
        assert "64x64 images are below the watermark's 256 px minimum" in err, command
        assert "watermark.upscale_small: false" in err and "cannot be finalized" in err
    default = str(REPO / "policies" / "default.yaml")
    assert main(["validate", str(manifest), "--policy", default]) == 0  # the default policy upscales small images
    assert "cannot be finalized" not in capsys.readouterr().err


def test_an_unfilled_deployment_template_for_the_work_dir_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSETMINT_WORK_DIR", "{{ $ASSETMINT_WORK_DIR }}")
    with pytest.raises(PolicyError, match="never filled in: set ASSETMINT_WORK_DIR"):
        load_policy().resolved_work_dir()
