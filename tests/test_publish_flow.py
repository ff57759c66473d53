"""Publishing finalized assets from real runs: the local folder target, a real S3 server, and refusals."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from cli.main import main
from conftest import AUTO_PUBLISH_POLICY, TINY_WATERMARK, work_ledger, write

MANIFEST = """\
campaign: {id: pub, name: Publish}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 2, keep_top_k: 1}
prompts:
  - {id: mug, prompt: a ceramic mug on a desk}
  - {id: lamp, prompt: a brass lamp, output_format: jpeg}
"""


def test_auto_publish_to_the_local_folder_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path / "p.yaml", AUTO_PUBLISH_POLICY)
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(policy)]) == 0
    ledger = work_ledger(tmp_path)
    run_id = ledger.runs()[0].run_id
    assert ledger.state_counts(run_id) == {"published": 2, "not_selected": 2}
    out = capsys.readouterr().out
    for asset in ledger.assets(run_id):  # published candidates stay in the "Best candidates" table
        assert asset.candidate_id[:12] in out
    for asset in ledger.assets(run_id):
        receipt = asset.published
        published = tmp_path / "work" / "published" / receipt["key"]
        assert receipt["key"] == f"pub/{run_id}/{asset.candidate_id}.{Path(str(asset.final_path)).suffix[1:]}"
        assert hashlib.sha256(published.read_bytes()).hexdigest() == asset.final_sha256  # byte for byte as signed
        sidecar = json.loads((published.parent / f"{published.name}.provenance.json").read_text())
        assert sidecar["provenance"]["watermark_payload"] == asset.payload_hex
        assert "a ceramic mug" not in json.dumps(sidecar) and str(tmp_path) not in json.dumps(sidecar)
    capsys.readouterr()
    assert main(["publish", run_id, "--policy", str(policy)]) == 0  # nothing left to publish; nothing duplicated
    out = capsys.readouterr().out
    assert "0 published, 2 already published, 0 not published" in out
    assert f"target: {tmp_path / 'work' / 'published'}" in out
    assert main(["verify", str(tmp_path / "work" / "published" / ledger.assets(run_id)[0].published["key"])]) == 0


def test_assets_without_a_watermark_are_never_published(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path / "p.yaml", "watermark:\n  enabled: false\n")
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(policy)]) == 0
    assert "invisible watermarking is OFF" in capsys.readouterr().out
    run_id = work_ledger(tmp_path).runs()[0].run_id
    assert main(["publish", run_id, "--policy", str(policy)]) == 1
    assert "not published: " in capsys.readouterr().out
    assert work_ledger(tmp_path).state_counts(run_id)["finalized"] == 2


def test_bad_targets_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    malformed = write(tmp_path / "bad.yaml", "publish:\n  target: 's3:/no-bucket'\n")
    assert main(["validate", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(malformed)]) == 2
    assert "publish.target" in capsys.readouterr().err
    escaping = write(tmp_path / "esc.yaml", "publish:\n  key_template: '../{asset_id}.{ext}'\n")
    assert main(["validate", str(tmp_path / "m.yaml"), "--policy", str(escaping)]) == 2
    assert "publish.key_template" in capsys.readouterr().err


S3_BUCKET = os.environ.get("ASSETMINT_TEST_S3_BUCKET")


@pytest.mark.skipif(not S3_BUCKET, reason="no S3 server: start one with deploy/s3-local.sh and source its env.sh")
def test_publish_to_real_s3_matches_the_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    prefix = f"flow-{uuid.uuid4().hex[:8]}"
    policy = write(tmp_path / "p.yaml", f"publish:\n  target: 's3://{S3_BUCKET}/{prefix}'\n{TINY_WATERMARK}")
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(policy)]) == 0
    run_id = work_ledger(tmp_path).runs()[0].run_id
    assert main(["publish", run_id, "--policy", str(policy)]) == 0
    assert "2 published, 0 already published, 0 not published" in capsys.readouterr().out
    s3 = boto3.client("s3")
    try:
        listed = {o["Key"] for o in s3.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix)["Contents"]}
        for asset in work_ledger(tmp_path).assets(run_id):
            key = asset.published["key"]
            assert {key, f"{key}.provenance.json"} <= listed
            body = s3.get_object(Bucket=S3_BUCKET, Key=key)
            assert hashlib.sha256(body["Body"].read()).hexdigest() == asset.final_sha256
            assert body["Metadata"]["asset-id"] == asset.candidate_id
        assert len(listed) == 4
    finally:
        for key in s3.list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix).get("Contents", []):
            s3.delete_object(Bucket=S3_BUCKET, Key=key["Key"])


@pytest.mark.skipif(not S3_BUCKET, reason="no S3 server: start one with deploy/s3-local.sh and source its env.sh")
def test_missing_bucket_marks_nothing_published(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path / "p.yaml", "publish:\n  target: 's3://no-such-bucket-here/x'\n")
    assert main(["run", str(write(tmp_path / "m.yaml", MANIFEST)), "--policy", str(policy)]) == 0
    run_id = work_ledger(tmp_path).runs()[0].run_id
    capsys.readouterr()
    assert main(["publish", run_id, "--policy", str(policy)]) == 2  # probed before Prefect starts: one paragraph
    err = capsys.readouterr().err
    assert "bucket 'no-such-bucket-here' does not exist" in err and "starting Prefect" not in err
    assert "published" not in work_ledger(tmp_path).state_counts(run_id)
