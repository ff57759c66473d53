"""Publishing against a real S3 server (radosgw from deploy/s3-local.sh), directly and through a fault proxy."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from policies.publish import PublishPolicy
from s3proxy import Fault, S3FaultProxy
from tasks.storage.publish import (
    SIDECAR_SUFFIX,
    PublishConflictError,
    PublishItem,
    PublishReceipt,
    PublishTargetError,
    S3Target,
    open_target,
    publish_many,
)

BUCKET = os.environ.get("ASSETMINT_TEST_S3_BUCKET")
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL_S3")
pytestmark = pytest.mark.skipif(
    not BUCKET or not ENDPOINT,
    reason="no S3 server: run `deploy/s3-local.sh start` and `source /tmp/assetmint-ceph/env.sh` "
    "(sets ASSETMINT_TEST_S3_BUCKET and AWS_ENDPOINT_URL_S3)",
)


def fast_sleep(seconds: float) -> None:
    """Backoff sleeps, shortened so fault tests stay quick (the delays themselves are unit-tested)."""
    time.sleep(min(seconds, 0.05))


@pytest.fixture
def s3() -> Any:
    """A plain boto3 client on the real server, for reading back what was published."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"mode": "standard", "total_max_attempts": 3}))


@pytest.fixture
def prefix(s3: Any) -> Iterator[str]:
    """A fresh prefix per test so tests never see each other's objects; emptied afterwards (memstore is RAM)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(listing(s3, name))
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": batch, "Quiet": True})


@pytest.fixture
def proxy() -> Iterator[S3FaultProxy]:
    """A fault-injecting proxy in front of the real server."""
    assert ENDPOINT
    with S3FaultProxy(ENDPOINT) as running:
        yield running


def make_item(tmp_path: Path, asset_id: str, data: bytes | None = None, size: int = 4096) -> PublishItem:
    payload = data if data is not None else hashlib.sha256(asset_id.encode()).digest() * (size // 32)
    path = tmp_path / f"{asset_id}.png"
    path.write_bytes(payload)
    return PublishItem(
        asset_id=asset_id,
        run_id="run-1",
        campaign="spring",
        prompt_id="p1",
        policy_name="default",
        path=path,
        sha256=hashlib.sha256(payload).hexdigest(),
        mime="image/png",
        ext="png",
        metadata={"asset-id": asset_id, "watermark-payload": "00ff11", "c2pa-manifest": f"urn:c2pa:{asset_id}"},
        sidecar={"asset_id": asset_id, "signer": "AssetMint dev (untrusted)"},
        created_at=datetime(2026, 11, 26, tzinfo=UTC),
    )


def target_for(prefix: str, endpoint: str | None = None, **policy: Any) -> S3Target:
    settings = {"target": f"s3://{BUCKET}/{prefix}", "endpoint_url": endpoint, **policy}
    target = open_target(PublishPolicy(**settings), Path("/unused"), sleep=fast_sleep)
    assert isinstance(target, S3Target)
    return target


def listing(s3: Any, prefix: str) -> dict[str, dict[str, Any]]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return {obj["Key"]: obj for page in pages for obj in page.get("Contents", [])}


def body_sha(s3: Any, key: str) -> str:
    return hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()


def assert_published_exactly_once(s3: Any, prefix: str, items: list[PublishItem], receipts: list[Any]) -> None:
    objects = listing(s3, prefix)
    expected = {f"{prefix}/spring/run-1/{item.asset_id}.png": item for item in items}
    sidecars = {key + SIDECAR_SUFFIX for key in expected}
    assert set(objects) == set(expected) | sidecars, "every asset (and sidecar) once, nothing else"
    for key, item in expected.items():
        assert body_sha(s3, key) == item.sha256
    for item, receipt in zip(items, receipts, strict=True):
        assert isinstance(receipt, PublishReceipt), receipt
        assert receipt.key == f"{prefix}/spring/run-1/{item.asset_id}.png"
        assert receipt.etag == objects[receipt.key]["ETag"]
        assert receipt.sidecar_key == receipt.key + SIDECAR_SUFFIX


# --- against the server directly ----------------------------------------------------------------------------------


def test_publish_reads_back_bytes_metadata_tags_and_sidecar(tmp_path: Path, prefix: str, s3: Any) -> None:
    item = make_item(tmp_path, "a1")
    receipt = target_for(prefix).publish(item)
    assert not receipt.already_published and receipt.bucket == BUCKET
    assert receipt.target == f"s3://{BUCKET}/{prefix}"
    got = s3.get_object(Bucket=BUCKET, Key=receipt.key, ChecksumMode="ENABLED")
    assert got["Body"].read() == item.path.read_bytes()
    assert got["ContentType"] == "image/png"
    assert got["Metadata"]["sha256"] == item.sha256
    assert got["Metadata"]["asset-id"] == "a1"
    assert got["Metadata"]["watermark-payload"] == "00ff11"
    assert got["Metadata"]["c2pa-manifest"] == "urn:c2pa:a1"
    assert got["ETag"] == f'"{hashlib.md5(item.path.read_bytes()).hexdigest()}"' == receipt.etag
    if got.get("ChecksumSHA256"):  # AWS returns it; radosgw 16 does not store additional checksums
        assert receipt.checksum_sha256 == got["ChecksumSHA256"]
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=BUCKET, Key=receipt.key)["TagSet"]}
    assert tags == {"campaign": "spring", "run": "run-1", "policy": "default"}
    sidecar = s3.get_object(Bucket=BUCKET, Key=receipt.sidecar_key)
    assert json.loads(sidecar["Body"].read()) == item.sidecar
    assert sidecar["ContentType"] == "application/json"


def test_republish_is_idempotent(tmp_path: Path, prefix: str, s3: Any) -> None:
    item = make_item(tmp_path, "a1")
    target = target_for(prefix)
    first = target.publish(item)
    second = target.publish(item)
    assert not first.already_published and second.already_published
    assert second.etag == first.etag
    assert_published_exactly_once(s3, prefix, [item], [second])


def test_conditional_conflict_never_overwrites(tmp_path: Path, prefix: str, s3: Any) -> None:
    target = target_for(prefix)
    original = make_item(tmp_path, "a1")
    target.publish(original)
    (tmp_path / "other").mkdir()
    impostor = make_item(tmp_path / "other", "a1", data=b"other bytes for the same key")
    with pytest.raises(PublishConflictError) as info:
        target.publish(impostor)
    assert original.sha256 in str(info.value) and impostor.sha256 in str(info.value)
    assert f"s3://{BUCKET}/{prefix}/spring/run-1/a1.png" in str(info.value)
    assert body_sha(s3, f"{prefix}/spring/run-1/a1.png") == original.sha256


def test_multipart_publish(tmp_path: Path, prefix: str, s3: Any) -> None:
    item = make_item(tmp_path, "big", size=12 * 1024 * 1024 + 123)
    target = target_for(prefix, multipart_threshold_mb=5, multipart_chunk_mb=5)
    receipt = target.publish(item)
    assert not receipt.already_published
    head = s3.head_object(Bucket=BUCKET, Key=receipt.key)
    assert head["ETag"].endswith('-3"') and head["ETag"] == receipt.etag
    assert head["Metadata"]["sha256"] == item.sha256 and head["ContentType"] == "image/png"
    assert body_sha(s3, receipt.key) == item.sha256
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=BUCKET, Key=receipt.key)["TagSet"]}
    assert tags["campaign"] == "spring"
    assert target.publish(item).already_published
    (tmp_path / "other").mkdir()
    impostor = make_item(tmp_path / "other", "big", size=11 * 1024 * 1024)
    with pytest.raises(PublishConflictError):
        target.publish(impostor)
    assert body_sha(s3, receipt.key) == item.sha256
    uploads = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix + "/").get("Uploads", [])
    assert uploads == [], "no multipart upload left behind"


def test_listing_a_prefix_shows_each_asset_once(tmp_path: Path, prefix: str, s3: Any) -> None:
    items = [make_item(tmp_path, f"a{i}") for i in range(5)]
    target = target_for(prefix)
    receipts = publish_many(target, items, concurrency=4)
    assert_published_exactly_once(s3, prefix, items, receipts)
    again = publish_many(target, items, concurrency=4)
    assert all(isinstance(r, PublishReceipt) and r.already_published for r in again)


def test_racing_publishers_of_one_asset_create_it_once(tmp_path: Path, prefix: str, s3: Any) -> None:
    item = make_item(tmp_path, "a1", size=256 * 1024)
    receipts = publish_many(target_for(prefix, concurrency=6), [item] * 6, concurrency=6)
    assert all(isinstance(r, PublishReceipt) for r in receipts), receipts
    assert sum(not r.already_published for r in receipts) == 1  # type: ignore[union-attr]
    assert_published_exactly_once(s3, prefix, [item], receipts[:1])


# --- faults, through the proxy ---------------------------------------------------------------------------------------


def test_faults_on_every_step_still_publish_each_asset_once(
    tmp_path: Path, prefix: str, s3: Any, proxy: S3FaultProxy
) -> None:
    proxy.script(
        Fault("status", method="PUT", status=500, code="InternalError"),
        Fault("status", method="PUT", status=503, code="SlowDown"),
        Fault("reset", method="PUT"),
        Fault("lost", method="PUT"),
        Fault("delay", method="PUT", seconds=2.5),
        Fault("status", method="HEAD", status=503, code="ServiceUnavailable"),
        Fault("lost", method="PUT", path_contains=SIDECAR_SUFFIX),
        Fault("reset", method="HEAD"),
    )
    items = [make_item(tmp_path, f"f{i}") for i in range(6)]
    target = target_for(prefix, endpoint=proxy.url, read_timeout_s=1.0, connect_timeout_s=2.0, max_attempts=6)
    receipts = [target.publish(item) for item in items]
    assert proxy.remaining() == 0, "every scripted fault was hit"
    assert_published_exactly_once(s3, prefix, items, receipts)


def test_lost_response_ends_as_already_published(tmp_path: Path, prefix: str, s3: Any, proxy: S3FaultProxy) -> None:
    proxy.script(Fault("lost", method="PUT", path_contains="/a1.png"))
    item = make_item(tmp_path, "a1")
    receipt = target_for(prefix, endpoint=proxy.url, read_timeout_s=2.0).publish(item)
    assert receipt.already_published, "the first PUT was applied; its retry met If-None-Match"
    actions = [seen.action for seen in proxy.seen if seen.method == "PUT" and "/a1.png" in seen.target]
    assert actions[:2] == ["lost", "forward"]
    assert_published_exactly_once(s3, prefix, [item], [receipt])


def test_response_slower_than_read_timeout_is_retried(
    tmp_path: Path, prefix: str, s3: Any, proxy: S3FaultProxy
) -> None:
    proxy.script(Fault("delay", method="PUT", path_contains="/a1.png", seconds=2.5))
    item = make_item(tmp_path, "a1")
    started = time.monotonic()
    receipt = target_for(prefix, endpoint=proxy.url, read_timeout_s=1.0).publish(item)
    assert time.monotonic() - started < 30
    assert receipt.already_published
    assert_published_exactly_once(s3, prefix, [item], [receipt])


def test_concurrent_publishing_with_faults(tmp_path: Path, prefix: str, s3: Any, proxy: S3FaultProxy) -> None:
    proxy.script(
        Fault("status", method="PUT", status=503, code="SlowDown", times=4),
        Fault("lost", method="PUT", times=3),
        Fault("reset", method="PUT", times=2),
    )
    items = [make_item(tmp_path, f"c{i}") for i in range(8)]
    target = target_for(prefix, endpoint=proxy.url, read_timeout_s=2.0, max_attempts=8, concurrency=4)
    receipts = publish_many(target, items, concurrency=4)
    assert_published_exactly_once(s3, prefix, items, receipts)


def test_multipart_with_faults(tmp_path: Path, prefix: str, s3: Any, proxy: S3FaultProxy) -> None:
    proxy.script(
        Fault("lost", method="PUT", path_contains="partNumber=2"),
        Fault("status", method="PUT", path_contains="partNumber=1", status=500, code="InternalError"),
        Fault("lost", method="POST", path_contains="uploadId="),
    )
    item = make_item(tmp_path, "big", size=11 * 1024 * 1024)
    target = target_for(prefix, endpoint=proxy.url, read_timeout_s=5.0, multipart_threshold_mb=5, multipart_chunk_mb=5)
    receipt = target.publish(item)
    assert proxy.remaining() == 0
    assert body_sha(s3, receipt.key) == item.sha256
    assert s3.head_object(Bucket=BUCKET, Key=receipt.key)["ETag"] == receipt.etag
    assert listing(s3, prefix).keys() == {receipt.key, receipt.key + SIDECAR_SUFFIX}
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix + "/").get("Uploads", []) == []


def test_persistent_5xx_gives_up_with_nothing_published(
    tmp_path: Path, prefix: str, s3: Any, proxy: S3FaultProxy
) -> None:
    proxy.script(Fault("status", method="PUT", status=503, code="ServiceUnavailable", times=3))
    with pytest.raises(PublishTargetError, match="after 3 attempts") as info:
        target_for(prefix, endpoint=proxy.url, max_attempts=3).publish(make_item(tmp_path, "a1"))
    assert info.value.retryable
    assert listing(s3, prefix) == {}


# --- bad input -------------------------------------------------------------------------------------------------------


def test_missing_bucket(tmp_path: Path) -> None:
    policy = PublishPolicy(target="s3://assetmint-no-such-bucket/x")
    with pytest.raises(PublishTargetError, match="bucket 'assetmint-no-such-bucket' does not exist"):
        open_target(policy, tmp_path).publish(make_item(tmp_path, "a1"))


def test_wrong_credentials_are_access_denied(tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-real-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    with pytest.raises(PublishTargetError, match="access denied"):
        target_for(prefix).publish(make_item(tmp_path, "a1"))


def test_no_credentials(tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never look past loopback for an instance role
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    with pytest.raises(PublishTargetError, match="no AWS credentials"):
        target_for(prefix).publish(make_item(tmp_path, "a1"))


def test_malformed_uri_never_reaches_a_target() -> None:
    with pytest.raises(ValidationError, match="unsupported scheme"):
        PublishPolicy(target="s3:/assetmint-test/x")
