"""`assetmint audit` on assets produced and published by the real batch flow, and on attacks against them."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cli.main import main
from conftest import bomb_png, picture, png_chunk, run_isolated, sign_decoy_credential, work_ledger, write
from tasks.provenance import trust
from tasks.storage.ledger import AssetRow, Ledger

MANIFEST = """\
campaign: {id: aud, name: Audit}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 1, keep_top_k: 1, base_seed: 7}
prompts:
  - {id: mug, prompt: a ceramic mug on a desk}
  - {id: lamp, prompt: a brass lamp}
  - {id: cup, prompt: a tea cup, output_format: jpeg}
"""
S3_BUCKET = os.environ.get("ASSETMINT_TEST_S3_BUCKET")
# As the quickstart: candidates at the model's 64 px, upscaled to 256 px by finalize so that they can be watermarked.
SMALL_MANIFEST = """\
campaign: {id: small, name: Small}
defaults: {model: embedded:tiny-sd, width: 64, height: 64, steps: 2, candidates: 1, keep_top_k: 1, base_seed: 7}
prompts:
  - {id: badge, prompt: a round badge}
"""


def _publish_run(root: Path, model_cache: Path, manifest: str, policy_text: str) -> dict[str, Any]:
    """Run `manifest` under `root` with auto-publish; its root, policy file, environment and (all published) assets."""
    policy = write(root / "p.yaml", policy_text + "publish:\n  auto_publish: true\n")
    env = run_isolated(root, model_cache, ["run", str(write(root / "m.yaml", manifest)), "--policy", str(policy)])
    ledger = work_ledger(root)
    assets = ledger.assets(ledger.runs()[0].run_id)
    assert assets and all(a.published is not None for a in assets)
    return {"root": root, "policy": policy, "env": env, "assets": assets}


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, Any]:
    produced = _publish_run(tmp_path_factory.mktemp("audit"), model_cache, MANIFEST, "")
    assert len(produced["assets"]) == 3
    return produced


@pytest.fixture
def env(produced: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name, value in produced["env"].items():
        monkeypatch.setenv(name, value)
    return produced


@pytest.fixture(scope="module")
def upscaled(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, Any]:
    # dwtDctSvd: the method that decodes resized copies by rescaling them to a recorded size (spreadTile searches).
    policy = "watermark:\n  upscale_small: true\n  method: dwtDctSvd\n"
    return _publish_run(tmp_path_factory.mktemp("upscaled"), model_cache, SMALL_MANIFEST, policy)


def _published(produced: dict[str, Any], asset: AssetRow) -> Path:
    return produced["root"] / "work" / "published" / str(asset.published["key"])  # type: ignore[index]


def _pngs(produced: dict[str, Any]) -> list[AssetRow]:
    return [a for a in produced["assets"] if a.mime == "image/png"]


def _audit(env: dict[str, Any], tmp_path: Path, *targets: str, html: bool = False) -> tuple[int, dict[str, dict]]:
    lines = tmp_path / "audit.jsonl"
    args = ["audit", *targets, "--json-lines", str(lines), "--policy", str(env["policy"])]
    if html:
        args += ["--html", str(tmp_path / "audit.html")]
    code = main(args)
    results = [json.loads(line) for line in lines.read_text().splitlines()]
    return code, {Path(r["object"]).name if not r["object"].startswith("s3://") else r["object"]: r for r in results}


def _replace_cabx(png: bytes, store: bytes) -> bytes:
    """`png` with its caBX chunk (the C2PA manifest store) replaced by `store`."""
    pos = 8
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        if kind == b"caBX":
            return png[:pos] + png_chunk(b"caBX", store) + png[pos + 12 + length :]
        pos += 12 + length
    raise AssertionError("no caBX chunk")


def test_published_folder_is_verified_with_reports_and_ledger_records(env: dict[str, Any], tmp_path: Path) -> None:
    code, results = _audit(env, tmp_path, str(env["root"] / "work" / "published"), html=True)
    assert code == 0
    assert {r["verdict"] for r in results.values()} == {"verified"} and len(results) == 3  # sidecars skipped
    for asset in env["assets"]:
        result = results[_published(env, asset).name]
        assert result["expected"] and result["candidate_id"] == asset.candidate_id
        assert result["evidence"]["credential"]["manifest_label"] == asset.manifest_label
        assert result["evidence"]["watermark"]["payload"] == asset.payload_hex
    html = (tmp_path / "audit.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 3 and "<svg" in html and "http" not in html.split("<svg")[0]
    # Development-signed: c2pa's raw state stays for machines, people see the development label, never "Trusted".
    for result in results.values():
        credential = result["evidence"]["credential"]
        assert credential["state"] == "Trusted" and credential["trust"] == trust.DEVELOPMENT
        assert credential["development_signer"] and "trusted credential" not in " ".join(result["reasons"])
    assert "Trusted" not in html and trust.DEVELOPMENT in html and 'class="dev"' in html
    ledger = work_ledger(env["root"])
    recorded = ledger.audits(candidate_id=env["assets"][0].candidate_id)
    assert recorded and recorded[0].verdict == "verified" and recorded[0].evidence["sha256"]


def test_attacks_get_their_verdicts(env: dict[str, Any], tmp_path: Path) -> None:
    from tasks.inspection.audit import manifest_store_bytes
    from tasks.provenance import credentials as provenance
    from tasks.provenance.watermark import watermark_alg

    a, b = _pngs(env)
    jpeg = next(x for x in env["assets"] if x.mime == "image/jpeg")
    wild = tmp_path / "wild"
    wild.mkdir()
    a_bytes, b_bytes = _published(env, a).read_bytes(), _published(env, b).read_bytes()
    pixels = Image.open(io.BytesIO(a_bytes)).convert("RGB")
    # JPEG q75 re-encode with Pillow's default 4:2:0 chroma, metadata stripped.
    pixels.save(wild / "stripped-q75.jpg", "JPEG", quality=75, subsampling=2)
    pixels.resize((128, 128), Image.Resampling.LANCZOS).save(wild / "half.png")
    flipped = bytearray(_published(env, jpeg).read_bytes())
    flipped[flipped.index(b"\xff\xda") + 3000] ^= 0x01  # one byte of the entropy-coded pixel data
    (wild / "flipped.jpg").write_bytes(bytes(flipped))
    # A's credential spliced into B's pixels, and A's manifest definition signed (validly) onto B's pixels.
    (wild / "spliced.png").write_bytes(_replace_cabx(b_bytes, manifest_store_bytes(a_bytes) or b""))
    from policies.model import load_policy

    policy = load_policy(env["policy"])
    facts = provenance.AssetFacts(asset_id=a.candidate_id, model_name="embedded:tiny-sd", prompt="x", generation={})
    mark = provenance.WatermarkFacts(watermark_alg("spreadTile"), "spreadTile", str(a.payload_hex), "1")
    out = io.BytesIO()
    Image.open(io.BytesIO(b_bytes)).convert("RGB").save(out, "PNG")
    with provenance.load_signer(policy.signing) as signer:
        definition = provenance.build_manifest_definition(facts, policy.signing, mark)
        (wild / "resigned.png").write_bytes(provenance.sign_asset(out.getvalue(), "image/png", definition, signer))
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(wild / "foreign.png")
    (wild / "garbage.png").write_bytes(os.urandom(5000))
    (wild / "truncated.png").write_bytes(a_bytes[: len(a_bytes) // 2])
    (wild / "bomb.png").write_bytes(bomb_png())
    (wild / "<img src=x onerror=alert(1)>.png").write_bytes(b"<b>not an image</b>")

    code, results = _audit(env, tmp_path, str(wild), html=True)
    verdicts = {name: r["verdict"] for name, r in results.items()}
    assert verdicts == {
        "stripped-q75.jpg": "recovered",
        "half.png": "recovered",
        "flipped.jpg": "tampered",
        "spliced.png": "mismatch",
        "resigned.png": "mismatch",
        "foreign.png": "not_ours",
        "garbage.png": "unreadable",
        "truncated.png": "unreadable",
        "bomb.png": "unreadable",
        "<img src=x onerror=alert(1)>.png": "unreadable",
    }
    assert code == 1  # tampered and mismatched copies of published assets fail the audit
    recovered = results["stripped-q75.jpg"]["evidence"]["recovered"]
    assert recovered == {
        "asset_key": a.asset_key,
        "run_id": a.run_id,
        "candidate_id": a.candidate_id,
        "manifest_label": a.manifest_label,
    }
    assert results["half.png"]["evidence"]["watermark"]["attempt"].startswith("search: tile period 64")
    for name in ("stripped-q75.jpg", "half.png"):  # the pixels are the asset's
        assert results[name]["evidence"]["likeness"]["matched"], results[name]["evidence"]["likeness"]
        assert results[name]["reasons"][-1].startswith("the pixels match its fingerprint (likeness")
    assert results["resigned.png"]["evidence"]["credential"]["state"] == "Trusted"
    assert "decompression bomb" in results["bomb.png"]["reasons"][0]
    html = (tmp_path / "audit.html").read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.png" in html


def test_resized_copies_of_upscaled_assets_are_rescaled_to_the_finalized_size(
    upscaled: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in upscaled["env"].items():
        monkeypatch.setenv(name, value)
    asset = upscaled["assets"][0]
    delivered = _published(upscaled, asset)
    pixels = Image.open(delivered).convert("RGB")
    assert pixels.size == (256, 256) and asset.final_size == {"width": 256, "height": 256}
    assert (asset.fingerprint or b"").startswith(b"\x89PNG")
    wild = tmp_path / "wild"
    wild.mkdir()
    for scale in (0.5, 0.75):  # credential stripped, resized, re-encoded
        side = round(256 * scale)
        pixels.resize((side, side), Image.Resampling.LANCZOS).save(wild / f"{scale}x.jpg", quality=90, subsampling=0)
    code, results = _audit(upscaled, tmp_path, str(wild), str(delivered))
    assert code == 0
    # The credential tells the finalized size besides the candidate's.
    credential = results[delivered.name]["evidence"]["credential"]
    assert credential["final_size"] == [256, 256] and credential["size"] == [64, 64]
    for scale in (0.5, 0.75):
        result = results[f"{scale}x.jpg"]
        # Rescaled to the candidate's 64 px (below the watermark's 256 px minimum) this was not_ours.
        assert result["verdict"] == "recovered", result["reasons"]
        assert result["evidence"]["watermark"]["attempt"] == "rescaled to 256x256"
        assert result["evidence"]["likeness"]["matched"] and result["candidate_id"] == asset.candidate_id


def test_a_mark_written_into_other_pixels_is_a_mark_mismatch(
    env: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.provenance import watermark

    a = _pngs(env)[0]
    forged = watermark.embed(picture(5, (320, 320)), a.asset_key, "dwtDctSvd")  # A's key, someone else's pixels
    assert watermark.decode(forged, "dwtDctSvd").key == a.asset_key
    wild = tmp_path / "wild"
    wild.mkdir()
    forged.save(wild / "forged.png")
    forged.save(wild / "forged.jpg", quality=90, subsampling=0)
    code, results = _audit(env, tmp_path, str(wild), html=True)
    assert code == 1  # the mark names a published asset: its audit fails
    for name in ("forged.png", "forged.jpg"):
        result = results[name]
        assert result["verdict"] == "mark_mismatch" and result["failed"], result["reasons"]
        assert result["candidate_id"] == a.candidate_id and "recovered" not in result["evidence"]
        assert result["evidence"]["likeness"]["matched"] is False
        assert result["reasons"][0].startswith(f"the watermark names asset {a.candidate_id}, but the pixels are not")
        assert result["reasons"][0].endswith("a copied or forged mark")
    assert "mark_mismatch" in (tmp_path / "audit.html").read_text()

    assert main(["verify", str(wild / "forged.png"), "--policy", str(env["policy"])]) == 1
    out = capsys.readouterr().out
    assert "a copied or forged mark" in out and "not the asset's pixels" in out


def test_an_asset_finalized_before_fingerprints_is_recovered_unconfirmed(env: dict[str, Any]) -> None:
    from policies.model import load_policy
    from tasks.inspection.audit import AuditResult, audit_bytes, make_context

    a = _pngs(env)[0]
    policy = load_policy(env["policy"])
    ctx = make_context(policy, Ledger.open(policy.ledger_url()))
    ctx.index.by_key[a.asset_key][0].fingerprint = None  # as the 0003 migration leaves earlier assets
    stripped = io.BytesIO()
    Image.open(_published(env, a)).convert("RGB").save(stripped, "PNG")
    result = audit_bytes(stripped.getvalue(), ctx, AuditResult("t", "x", ""))
    assert result.verdict == "recovered" and result.evidence["likeness"]["matched"] is None
    assert "the pixels could not be confirmed" in result.reasons[-1]


def test_without_the_watermark_secret_a_stripped_copy_is_not_recovered_and_says_why(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from policies.model import load_policy
    from tasks.inspection.audit import AuditResult, audit_bytes, make_context
    from tasks.provenance.mark_secrets import dev_secret_path

    a = _pngs(env)[0]
    stripped = io.BytesIO()
    Image.open(_published(env, a)).convert("RGB").save(stripped, "PNG")
    policy = load_policy(env["policy"])
    here_context = make_context(policy, Ledger.open(policy.ledger_url()))
    here = audit_bytes(stripped.getvalue(), here_context, AuditResult("t", "x", ""))
    assert here.verdict == "recovered"
    monkeypatch.setenv("ASSETMINT_CONFIG_DIR", str(env["root"] / "another-machine"))  # the ledger, not the secret
    elsewhere = make_context(policy, Ledger.open(policy.ledger_url()))
    result = audit_bytes(stripped.getvalue(), elsewhere, AuditResult("t", "x", ""))
    assert result.verdict == "not_ours" and result.candidate_id is None
    assert "no watermark secret on this machine" in result.evidence["watermark"]["note"]
    assert "spreadTile marks cannot be checked" in result.reasons[-1]
    assert not dev_secret_path().exists()  # an audit never creates a secret


def test_bad_target_is_a_usage_error(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "/no/such/folder", "--policy", str(env["policy"])]) == 2
    assert "/no/such/folder" in capsys.readouterr().err


@pytest.mark.skipif(not S3_BUCKET, reason="no S3 server: start one with deploy/s3-local.sh and source its env.sh")
def test_s3_prefix_with_metadata_cross_check(env: dict[str, Any], tmp_path: Path) -> None:
    import boto3

    from policies.model import load_policy
    from tasks.storage.publish import PublishItem, S3Target

    prefix = f"audit-{uuid.uuid4().hex[:8]}"
    policy = load_policy(env["policy"])
    target = S3Target(str(S3_BUCKET), prefix, policy.publish)
    a, b = _pngs(env)
    jpeg = next(x for x in env["assets"] if x.mime == "image/jpeg")

    def item(asset: AssetRow, claimed: AssetRow, run: str) -> PublishItem:
        return PublishItem(
            asset_id=asset.candidate_id,
            run_id=run,
            campaign="aud",
            prompt_id="p",
            policy_name="test",
            path=Path(str(asset.final_path)),
            sha256=str(asset.final_sha256),
            mime=str(asset.mime),
            ext=Path(str(asset.final_path)).suffix[1:],
            metadata={
                "asset-id": claimed.candidate_id,
                "watermark-payload": str(claimed.payload_hex),
                "c2pa-manifest": str(claimed.manifest_label),
            },
            sidecar={"asset_id": asset.candidate_id, "provenance": {"sha256": asset.final_sha256}},
        )

    s3 = boto3.client("s3")
    try:
        target.publish(item(a, a, "good"))
        target.publish(item(jpeg, jpeg, "good"))
        target.publish(item(b, a, "relabelled"))  # B's bytes under metadata claiming asset A
        s3.put_object(Bucket=S3_BUCKET, Key=f"{prefix}/notes.txt", Body=b"hello")
        code, results = _audit(env, tmp_path, f"s3://{S3_BUCKET}/{prefix}")
        verdicts = {name.split("/", 4)[-1]: r["verdict"] for name, r in results.items()}
        assert verdicts == {
            f"aud/good/{a.candidate_id}.png": "verified",
            f"aud/good/{jpeg.candidate_id}.jpg": "verified",
            f"aud/relabelled/{b.candidate_id}.png": "mismatch",
            "notes.txt": "unreadable",
        }
        relabelled = results[f"s3://{S3_BUCKET}/{prefix}/aud/relabelled/{b.candidate_id}.png"]
        assert relabelled["evidence"]["s3_metadata"]["asset-id"] == a.candidate_id
        assert any("object metadata asset-id" in reason for reason in relabelled["reasons"])
        assert code == 1
    finally:
        for entry in s3.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix).get("Contents", []):
            s3.delete_object(Bucket=S3_BUCKET, Key=entry["Key"])


def test_audit_flow_returns_counts(env: dict[str, Any], tmp_path: Path) -> None:
    from flows.audit import audit_flow

    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(_published(env, env["assets"][0]), folder)
    result = audit_flow(target=str(folder), policy=str(env["policy"]))
    assert result["counts"]["verified"] == 1 and result["exit_code"] == 0


def test_signer_outside_the_trust_anchors_is_untrusted(env: dict[str, Any]) -> None:
    from policies.model import load_policy
    from tasks.inspection.audit import AuditResult, audit_bytes, make_context

    policy = load_policy(env["policy"])
    ctx = make_context(policy, Ledger.open(policy.ledger_url()))
    ctx.anchors = []  # nobody is trusted: the development root is not an anchor here
    data = _published(env, env["assets"][0]).read_bytes()
    result = audit_bytes(data, ctx, AuditResult("t", "x", ""))
    assert result.verdict == "untrusted" and result.expected and result.failed
    assert "signingCredential.untrusted" in result.evidence["credential"]["status_codes"]


def test_registering_the_commands_does_not_import_prefect() -> None:
    import subprocess
    import sys

    code = "import sys, cli.main; print('prefect' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_an_access_error_is_that_objects_verdict(env: dict[str, Any]) -> None:
    from policies.model import load_policy
    from tasks.inspection.audit import AuditItem, audit_items, make_context

    def denied() -> tuple[bytes, dict[str, str]]:
        raise PermissionError("AccessDenied")

    good = _published(env, env["assets"][0])
    items = [
        AuditItem("t", "s3://b/denied.png", ("s3", "b", "denied.png"), denied),
        AuditItem("t", str(good), ("file", str(good.resolve())), lambda: (good.read_bytes(), {})),
    ]
    policy = load_policy(env["policy"])
    results = [r for _, r in audit_items(items, make_context(policy, Ledger.open(policy.ledger_url())))]
    assert [r.verdict for r in results] == ["unreadable", "verified"]
    assert "AccessDenied" in results[0].reasons[0]


def test_an_untrusted_credential_cannot_steer_the_watermark_decoder(env: dict[str, Any], tmp_path: Path) -> None:
    a = _pngs(env)[0]
    pixels = io.BytesIO()
    Image.open(_published(env, a)).convert("RGB").save(pixels, "PNG")  # our credential stripped, our mark kept
    # A foreign, untrusted credential whose soft binding names a decoder that cannot read our mark.
    signed, _ = sign_decoy_credential(pixels.getvalue(), tmp_path / "other-keys")
    wild = tmp_path / "wild"
    wild.mkdir()
    (wild / "decoy.png").write_bytes(signed)
    _, results = _audit(env, tmp_path, str(wild))
    evidence = results["decoy.png"]["evidence"]
    assert evidence["credential"]["state"] != "Trusted"
    assert evidence["watermark"]["key"] == a.asset_key and evidence["watermark"]["method"] == "spreadTile"


def test_development_signed_assets_never_read_trusted(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """verify, the audit summary and the review page show the development label and banner, never "Trusted"."""
    from fastapi.testclient import TestClient

    from policies.model import load_policy
    from tasks.web.review.app import create_app

    published = str(_published(env, env["assets"][0]))
    assert main(["verify", published, "--policy", str(env["policy"])]) == 0
    out = capsys.readouterr().out
    assert trust.DEVELOPMENT in out and "Trusted" not in out
    assert main(["verify", published, "--json", "--policy", str(env["policy"])]) == 0
    credential = json.loads(capsys.readouterr().out)[0]["credential"]
    assert credential["state"] == "Trusted" and credential["trust"] == trust.DEVELOPMENT

    assert main(["audit", published, "--policy", str(env["policy"])]) == 0
    assert "3 objects are" not in (out := capsys.readouterr().out) and f"1 objects are {trust.DEVELOPMENT}" in out

    token = "trust-test-token-0123456789abcdef"
    url = f"sqlite:///{env['root'] / 'work' / 'ledger.sqlite'}"
    client = TestClient(create_app(url, load_policy(env["policy"]), token, "alice"), base_url="http://127.0.0.1:8765")
    asset = env["assets"][0]
    for path in (f"/runs/{asset.run_id}", f"/runs/{asset.run_id}/candidates/{asset.candidate_id}"):
        page = client.get(f"{path}?token={token}")
        assert page.status_code == 200 and 'class="dev-banner"' in page.text, path
        # c2pa's raw state appears only in the recorded history, with the label beside it
        text = page.text.replace(
            f"&#34;trust&#34;: &#34;{trust.DEVELOPMENT}&#34;, &#34;validation&#34;: &#34;Trusted", ""
        )
        assert "Trusted" not in text and "style=" not in page.text
    assert trust.DEVELOPMENT in page.text
    assert 'class="dev-banner"' not in client.get("/").text  # no run, no banner


def _odd_folder(root: Path, image: Path) -> dict[str, str]:
    """A folder of regular files and entries that are not: what each non-file's reason must say."""
    root.mkdir()
    shutil.copy(image, root / "good.png")
    (root / "notes.txt").write_text("hello")
    (root / "sub").mkdir()
    shutil.copy(image, root / "sub" / "nested.png")
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    (root / "self").symlink_to("self")
    (root / "dangling.png").symlink_to("gone.png")
    os.mkfifo(root / "pipe")
    (root / "pipe-link").symlink_to("pipe")
    (root / "folder-link").symlink_to("sub")
    (root / "file-link.png").symlink_to("good.png")
    return {
        "loop-a": "symbolic link loop",
        "loop-b": "symbolic link loop",
        "self": "symbolic link loop",
        "dangling.png": "dangling symbolic link to gone.png",
        "pipe": "not a regular file (FIFO)",
        "pipe-link": "not a regular file (FIFO)",
        "folder-link": "symbolic link to the directory sub, not followed",
    }


def test_every_folder_entry_is_reported_even_links_and_fifos(
    env: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    from policies.model import load_policy
    from tasks.inspection.audit import run_audit

    folder = tmp_path / "odd"
    odd = _odd_folder(folder, _published(env, env["assets"][0]))
    policy = load_policy(env["policy"])
    found: list[Any] = []
    # A FIFO opened for reading would block forever: the audit runs beside the test, which gives up on it.
    worker = threading.Thread(
        target=lambda: found.append(run_audit([str(folder)], policy, None, record=False)), daemon=True
    )
    worker.start()
    worker.join(timeout=120)
    assert found, "the audit did not finish: it blocked on an entry"
    summary = found[0]
    names = {Path(r.object).name: r for r in summary.results}
    assert summary.to_dict()["objects"] == len(names) == 11
    for name, why in odd.items():
        assert names[name].verdict == "unreadable" and names[name].reasons[0].startswith(why), name
    assert {n: names[n].verdict for n in ("good.png", "nested.png", "file-link.png")} == dict.fromkeys(
        ("good.png", "nested.png", "file-link.png"), "verified"
    )
    assert names["notes.txt"].verdict == "unreadable" and summary.counts["unreadable"] == 8

    code, results = _audit(env, tmp_path, str(folder))  # the CLI: a line and a count for each of the 11
    assert code == 0 and len(results) == 11 and "11 objects audited" in capsys.readouterr().out
    assert {name: results[name]["reasons"][0][: len(why)] for name, why in odd.items()} == odd
    assert main(["audit", str(folder / "pipe"), "--policy", str(env["policy"])]) == 2  # named alone: a usage error
