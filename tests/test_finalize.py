"""Finalize stage and `assetmint verify` on assets produced by the real batch flow."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cli.main import main
from conftest import PACKAGED_DEFAULT_POLICY, run_isolated, work_ledger, write
from tasks.provenance.fingerprint import make_fingerprint
from tasks.provenance.trust import DEVELOPMENT

MANIFEST = """\
campaign: {id: fin, name: Finalize}
defaults:
  model: embedded:tiny-sd
  width: 256
  height: 256
  steps: 2
  candidates: 2
  base_seed: 3
  keep_top_k: 1
prompts:
  - {id: png, prompt: a red cube, output_format: png}
  - {id: jpeg, prompt: a blue ball, output_format: jpeg}
  - {id: webp, prompt: a green cone, output_format: webp}
  - {id: small, prompt: a tiny badge, width: 192, height: 192}
"""


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("finalize")
    run_isolated(root, model_cache, ["run", str(write(root / "m.yaml", MANIFEST))])
    ledger = work_ledger(root)
    run_id = ledger.runs()[0].run_id
    finals = {a.mime: Path(a.final_path) for a in ledger.assets(run_id) if a.final_path}
    yield {"root": root, **{mime.split("/")[1]: path for mime, path in finals.items()}}


@pytest.fixture
def same_env(produced: dict[str, Path], model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    root = produced["root"]
    monkeypatch.setenv("ASSETMINT_CONFIG_DIR", str(root / "config"))
    monkeypatch.setenv("ASSETMINT_WORK_DIR", str(root / "work"))
    return produced


def test_every_format_is_finalized_and_small_images_are_refused(same_env: dict[str, Path]) -> None:
    assert {"png", "jpeg", "webp"} <= set(same_env)
    ledger = work_ledger(same_env["root"])
    run_id = ledger.runs()[0].run_id
    counts = ledger.state_counts(run_id)
    assert counts["finalized"] == 3 and counts["finalize_failed"] == 1
    failed = ledger.candidates(run_id, ["finalize_failed"])[0]
    assert "192x192" in failed.error and "256 px" in failed.error
    assert not (Path(ledger.runs()[0].run_dir) / "final" / f"{failed.candidate_id}.png").exists()
    for asset in ledger.assets(run_id):
        if asset.final_path:
            assert asset.validation_state == "Trusted" and asset.payload_hex and asset.manifest_label
            assert asset.provenance["signer_is_development"] is True
            # The delivered pixels' size and fingerprint, for the audit of copies found later.
            with Image.open(asset.final_path) as delivered:
                assert asset.final_size == {"width": delivered.width, "height": delivered.height}
                if asset.mime == "image/png":  # lossless: the fingerprint is exactly that of the delivered pixels
                    assert asset.fingerprint == make_fingerprint(delivered)
            assert asset.fingerprint and len(asset.fingerprint) < 16_000
        else:
            assert asset.final_size is None and asset.fingerprint is None


def test_verify_passes_untouched_assets(same_env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(same_env[f]) for f in ("png", "jpeg", "webp")]
    assert main(["verify", "--json", *files]) == 0
    reports = json.loads(capsys.readouterr().out)
    for report in reports:
        assert report["ok"], report["problems"]
        assert report["credential"]["state"] == "Trusted"
        assert report["watermark"]["payload"] == report["credential"]["soft_binding"]["blocks"][0]["value"]
        assert report["ledger"]["candidate_id"] == report["credential"]["generation_assertion"]["asset_id"]
        assert report["credential"]["generation_assertion"]["final_size"] == {"width": 256, "height": 256}
        assert report["likeness"]["matched"] and report["likeness"]["score"] > 0.99
        assert "a red cube" not in json.dumps(report["credential"])  # prompt text is confidential by default
        actions = [a["action"] for a in report["credential"]["actions"]]
        assert actions[:2] == ["c2pa.created", "c2pa.watermarked"]
    assert all(report["credential"]["trust"] == DEVELOPMENT for report in reports)  # the label beside c2pa's state
    assert main(["verify", files[0]]) == 0
    out = capsys.readouterr().out
    assert DEVELOPMENT in out and "Trusted" not in out  # people see the development label, never "Trusted"


def _flip_last_pixel_byte_png(source: Path, target: Path) -> None:
    data = bytearray(source.read_bytes())
    idat = data.rfind(b"IDAT")
    data[idat + 12] ^= 0x01  # inside the compressed pixel data, far from the manifest chunk
    target.write_bytes(bytes(data))


def test_tampering_and_stripping_are_reported(
    same_env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = tmp_path / "tampered.png"
    _flip_last_pixel_byte_png(same_env["png"], tampered)
    stripped = tmp_path / "stripped.jpg"
    with Image.open(same_env["png"]) as image:
        image.convert("RGB").save(stripped, quality=90)  # re-encoded, metadata gone
    foreign = tmp_path / "foreign.png"
    Image.effect_noise((300, 300), 40).convert("RGB").save(foreign)
    not_image = write(tmp_path / "notes.txt", "hello")
    assert main(["verify", "--json", str(tampered), str(stripped), str(foreign), str(not_image)]) == 1
    by_name = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert by_name["tampered.png"]["credential"]["state"] == "Invalid"
    assert any("Invalid" in p for p in by_name["tampered.png"]["problems"])
    assert by_name["stripped.jpg"]["credential"]["state"] == "NoManifest"
    assert by_name["stripped.jpg"]["ledger"]["candidate_id"]  # the watermark still identifies the asset
    assert any("no AssetMint watermark" in p for p in by_name["foreign.png"]["problems"])
    assert by_name["notes.txt"]["problems"] == ["not a PNG, JPEG or WebP image"]


def test_unknown_key_and_untrusted_signer(
    same_env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "asset.png"
    shutil.copy(same_env["png"], copy)
    monkeypatch.setenv("ASSETMINT_WORK_DIR", str(tmp_path / "empty-ledger"))
    assert main(["verify", "--json", str(copy)]) == 1
    report = json.loads(capsys.readouterr().out)[0]
    assert any("resolves to no record" in p for p in report["problems"])

    from tasks.provenance.keys import init_dev_keys

    other = init_dev_keys(tmp_path / "other-keys")
    policy = write(
        tmp_path / "p.yaml",
        (
            f"signing:\n  certificate_chain: {other.chain}\n  private_key: {other.key}\n"
            f"  trust_anchors: [{other.trust_anchor}]\n"
        ),
    )
    monkeypatch.setenv("ASSETMINT_WORK_DIR", str(same_env["root"] / "work"))
    assert main(["verify", "--json", "--policy", str(policy), str(copy)]) == 1
    report = json.loads(capsys.readouterr().out)[0]
    assert report["credential"]["state"] == "Valid"
    assert "signingCredential.untrusted" in report["credential"]["status_codes"]


def test_bad_signing_configuration_fails_before_generation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path / "p.yaml", "signing:\n  certificate_chain: missing-chain.pem\n  private_key: key.pem\n")
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "missing-chain.pem" in err and "Traceback" not in err
    assert not (tmp_path / "work" / "ledger.sqlite").exists()


def _job(source: Path, final: Path, key: int, policy: Any) -> Any:
    """A finalize job for one image under `policy`, output format from the final file's extension."""
    from tasks.stages.finalize import FinalizeJob

    return FinalizeJob(
        run_id="r",
        candidate_id=source.stem,
        asset_key=key,
        image_path=str(source),
        output_format={"jpg": "jpeg"}.get(final.suffix[1:], final.suffix[1:]),
        final_path=str(final),
        prompt="p",
        negative_prompt="",
        model_name="m",
        title="t",
        generation={},
        watermark=policy.watermark,
        signing=policy.signing,
        finalize=policy.finalize,
    )


def test_corrupt_or_missing_source_image_is_refused_without_a_final_file(tmp_path: Path) -> None:
    from policies.model import load_policy
    from tasks.stages.finalize import finalize_one

    policy = load_policy()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    for source in (corrupt, tmp_path / "missing.png"):
        final = tmp_path / "final" / f"{source.stem}.png"
        job = _job(source, final, 1, policy)
        outcome = finalize_one(job)
        assert not outcome.ok and str(source) in outcome.reason
        assert not final.exists()
        assert not final.parent.exists() or not any(final.parent.iterdir())  # no temporary left behind either


@pytest.mark.parametrize(
    ("state", "require_trusted", "method"),
    [
        ("Trusted", True, "rivaGan"),
        ("Valid", True, "spreadTile"),
        ("Invalid", True, "spreadTile"),
        ("Valid", False, "rivaGan"),
    ],
)
def test_only_an_accepted_credential_chooses_the_watermark_decoder(
    state: str, require_trusted: bool, method: str
) -> None:
    from types import SimpleNamespace

    from policies.model import load_policy
    from tasks.inspection.engine import choose_decoder
    from tasks.stages.finalize import WATERMARK_ALG_PREFIX

    policy = load_policy(PACKAGED_DEFAULT_POLICY)
    policy.finalize.require_trusted = require_trusted
    report = SimpleNamespace(state=state, soft_binding={"alg": f"{WATERMARK_ALG_PREFIX}rivaGan"})
    assert choose_decoder(report, policy).method == method


@pytest.mark.parametrize(
    ("output_format", "settings"),
    [
        ("jpeg", {"jpeg_quality": 75, "jpeg_subsampling": "4:2:0"}),
        ("webp", {"webp_lossless": False, "webp_quality": 80}),
    ],
)
def test_spread_tile_assets_ship_as_lossy_4_2_0_jpeg_and_webp(
    tmp_path: Path, output_format: str, settings: dict[str, object]
) -> None:
    """The default watermark survives what the dwt marks could not, so platform-style delivery settings work."""
    import io

    from policies.model import load_policy
    from tasks.provenance import watermark
    from tasks.provenance.credentials import read_and_validate
    from tasks.provenance.mark_secrets import load_mark_secrets
    from tasks.stages.finalize import finalize_one
    from tests.test_watermark import natural_image

    policy = load_policy(PACKAGED_DEFAULT_POLICY)
    assert policy.watermark.method.value == "spreadTile"
    source = tmp_path / "candidate.png"
    natural_image(768, seed=5).resize((768, 512)).save(source)
    final = tmp_path / "final" / f"asset.{output_format}"
    delivery = policy.model_copy(update={"finalize": policy.finalize.model_copy(update=settings)})
    job = _job(source, final, 31_337, delivery)
    outcome = finalize_one(job)
    assert outcome.ok, outcome.reason
    secret = load_mark_secrets(policy.signing, create=False).current.secret
    assert outcome.payload_hex == watermark.payload_hex(31_337, "spreadTile", secret)
    report = read_and_validate(final.read_bytes(), f"image/{output_format}", [])
    assert (report.soft_binding or {})["alg"] == "com.assetmint.spreadTile.1"
    delivered = Image.open(io.BytesIO(final.read_bytes()))
    assert watermark.decode(delivered.convert("RGB"), "spreadTile", [secret]).key == 31_337
