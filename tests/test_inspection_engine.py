"""One inspection engine behind `assetmint verify` and the audit: the same evidence, consistent answers."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import picture, run_isolated, sign_decoy_credential, work_ledger, write

MANIFEST = """\
campaign: {id: eng, name: Engine}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 1, keep_top_k: 1, base_seed: 5}
prompts:
  - {id: bowl, prompt: a wooden bowl}
"""


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("engine")
    env = run_isolated(root, model_cache, ["run", str(write(root / "m.yaml", MANIFEST))])
    ledger = work_ledger(root)
    asset = ledger.assets(ledger.runs()[0].run_id)[0]
    assert asset.final_path and asset.mime == "image/png"
    yield {"root": root, "env": env, "asset": asset, "final": Path(asset.final_path)}


@pytest.fixture
def env(produced: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name, value in produced["env"].items():
        monkeypatch.setenv(name, value)
    return produced


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pixels_png(source: Path) -> bytes:
    """The asset's pixels re-encoded: credential stripped, watermark kept."""
    out = io.BytesIO()
    Image.open(source).convert("RGB").save(out, "PNG")
    return out.getvalue()


def _files(env: dict[str, Any], folder: Path) -> dict[str, Path]:
    from tasks.provenance import watermark

    signed = env["final"].read_bytes()
    iend = signed.rindex(b"IEND") - 4
    noise = io.BytesIO()
    Image.effect_noise((300, 300), 40).convert("RGB").save(noise, "PNG")
    forged = io.BytesIO()  # the asset's key written into other pixels
    watermark.embed(picture(9, (300, 300)), env["asset"].asset_key, "dwtDctSvd").save(forged, "PNG")
    contents = {
        "verified.png": signed,
        "stripped.png": _pixels_png(env["final"]),
        # A chunk added after signing: the pixels still decode, the credential's hard binding no longer holds.
        "tampered.png": signed[:iend] + _png_chunk(b"tEXt", b"Comment\x00edited") + signed[iend:],
        "unmarked.png": noise.getvalue(),
        "forged.png": forged.getvalue(),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in contents}


def test_verify_and_audit_agree_on_the_same_evidence(env: dict[str, Any], tmp_path: Path) -> None:
    from policies.model import load_policy
    from tasks.inspection.audit import AuditResult, audit_bytes, audit_view, make_context
    from tasks.inspection.engine import inspect_bytes
    from tasks.inspection.verify import VerifyReport, verify_file, verify_view
    from tasks.storage.ledger import Ledger

    asset = env["asset"]
    policy = load_policy()
    ledger = Ledger.open(policy.ledger_url())
    ctx = make_context(policy, ledger)
    expected = {
        "verified.png": (True, "verified"),
        "stripped.png": (False, "recovered"),
        "tampered.png": (False, "tampered"),
        "unmarked.png": (False, "not_ours"),
        "forged.png": (False, "mark_mismatch"),
    }
    for name, path in _files(env, tmp_path / "files").items():
        found = inspect_bytes(path.read_bytes(), ctx.inspection())
        report = verify_view(found, VerifyReport(path=str(path)), ctx.inspection(), with_ledger=True)
        audited = audit_view(found, ctx, AuditResult("t", str(path), ""))
        assert (report.ok, audited.verdict) == expected[name], (name, report.problems, audited.reasons)
        # Both views report the same facts from the one reading.
        assert report.sha256 == audited.evidence["sha256"] and report.mime == audited.evidence["mime"]
        stated = (report.credential or {}).get("state")  # verify shows NoManifest; the audit shows no credential
        assert (None if stated == "NoManifest" else stated) == (audited.evidence["credential"] or {}).get("state")
        assert (report.watermark or {}).get("payload") == (audited.evidence.get("watermark") or {}).get("payload")
        assert (report.ledger or {}).get("candidate_id") == (audited.evidence.get("ledger") or {}).get("candidate_id")
        # The public entry points are exactly these views of the engine.
        direct = verify_file(path, policy, ledger, ctx.anchors)
        assert direct.to_dict() == report.to_dict()
        assert audit_bytes(path.read_bytes(), ctx, AuditResult("t", str(path), "")).verdict == audited.verdict
        assert report.likeness == audited.evidence.get("likeness")
        if name in ("verified.png", "stripped.png", "forged.png"):
            assert report.ledger and report.ledger["candidate_id"] == asset.candidate_id == audited.candidate_id
            assert report.watermark and report.watermark["payload"] == asset.payload_hex
            assert report.likeness and report.likeness["matched"] is (name != "forged.png")
        if name == "forged.png":
            assert any(p.endswith("a copied or forged mark") for p in report.problems)
        if name == "tampered.png":
            assert any("Content Credential is Invalid" in p for p in report.problems)
        if name == "unmarked.png":
            assert report.ledger is None and audited.candidate_id is None
            assert any("no AssetMint watermark" in p for p in report.problems)


def _run_view(view: str, path: Path, anchors: list[str]) -> tuple[dict[str, Any], int | None]:
    """The credential state and decoded watermark key one view reports for `path`."""
    from policies.model import load_policy
    from tasks.inspection.audit import AuditResult, audit_bytes, make_context
    from tasks.inspection.verify import verify_file
    from tasks.storage.ledger import Ledger

    policy = load_policy()
    ledger = Ledger.open(policy.ledger_url())
    if view == "verify":
        report = verify_file(path, policy, ledger, anchors)
        return report.credential or {}, (report.watermark or {}).get("key")
    ctx = make_context(policy, ledger)
    ctx.anchors = anchors
    result = audit_bytes(path.read_bytes(), ctx, AuditResult("t", str(path), ""))
    return result.evidence["credential"] or {}, (result.evidence.get("watermark") or {}).get("key")


@pytest.mark.parametrize("view", ["verify", "audit"])
@pytest.mark.parametrize("trusted", [False, True])
def test_only_an_accepted_credential_may_choose_the_decoder(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, view: str, trusted: bool
) -> None:
    from tasks.inspection.engine import trust_anchors_for
    from tasks.provenance import watermark

    # Someone else's credential on our marked pixels, naming a decoder that cannot read our mark.
    signed, other_anchor = sign_decoy_credential(_pixels_png(env["final"]), tmp_path / "other-keys")
    path = tmp_path / "decoy.png"
    path.write_bytes(signed)

    from policies.model import load_policy

    anchors = trust_anchors_for(load_policy()) + ([str(other_anchor)] if trusted else [])
    tried: list[str] = []
    real = watermark.decode_for_audit

    def spy(image: Any, method: Any, sizes: Any = (), secrets: Any = ()) -> Any:
        tried.append(str(method))
        return real(image, method, sizes, secrets)

    monkeypatch.setattr(watermark, "decode_for_audit", spy)
    credential, key = _run_view(view, path, anchors)
    assert credential["state"] == ("Trusted" if trusted else "Valid")
    # Untrusted: the policy's decoder leads and the decoy's is never the first one tried; trusted: it may lead.
    assert tried[0] == ("dwtDct" if trusted else "dwtDctSvd")  # the tiny-models policy marks with dwtDctSvd
    assert key == env["asset"].asset_key  # either way our mark is found
