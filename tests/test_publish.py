"""Publishing without a server: key templates, target URIs, the local folder target, retries against a fake client."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from pydantic import ValidationError

from conftest import backdate
from policies.publish import PublishPolicy, TargetLocation, TargetSyntaxError, parse_target
from tasks.storage.publish import (
    LocalFolderTarget,
    PublishConflictError,
    PublishItem,
    PublishTargetError,
    S3Target,
    backoff_delay,
    is_retryable,
    object_metadata,
    open_target,
    publish_many,
    render_key,
)


def make_item(tmp_path: Path, data: bytes = b"\x89PNG signed bytes", asset_id: str = "a1", **over: Any) -> PublishItem:
    path = tmp_path / f"signed-{hashlib.sha256(asset_id.encode()).hexdigest()[:12]}.png"
    path.write_bytes(data)
    fields: dict[str, Any] = {
        "asset_id": asset_id,
        "run_id": "run-1",
        "campaign": "spring",
        "prompt_id": "p7",
        "policy_name": "default",
        "path": path,
        "sha256": hashlib.sha256(data).hexdigest(),
        "mime": "image/png",
        "ext": "png",
        "metadata": {"asset-id": asset_id, "watermark-payload": "00ff", "c2pa-manifest": "urn:c2pa:1"},
        "sidecar": {"asset_id": asset_id, "clip_score": 0.31},
        "created_at": datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    }
    fields.update(over)
    return PublishItem(**fields)


# --- key templates -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{campaign}/{run}/{asset_id}.{ext}",
        "{date}/{campaign}/{prompt_id}-{asset_id}.{ext}",
        "assets/{asset_id}",
    ],
)
def test_valid_key_templates_load(template: str) -> None:
    assert PublishPolicy(key_template=template).key_template == template


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{campaign}/{secret}/{asset_id}", "unknown field {secret}"),
        ("/{campaign}/{asset_id}", "starts with '/'"),
        ("{campaign}//{asset_id}", "empty path segment"),
        ("{campaign}/{asset_id}/", "empty path segment"),
        ("{campaign}/../{asset_id}", "contains '..'"),
        ("..{campaign}/{asset_id}", "contains '..'"),
        ("{campaign}\\{asset_id}", "backslash"),
        ("{campaign}/{run}.{ext}", "lacks {asset_id}"),
        ("{asset_id!r}", "format spec or conversion"),
        ("{asset_id:>10}", "format spec or conversion"),
        ("{asset_id", "not a valid template"),
        ("", "empty"),
    ],
)
def test_bad_key_templates_are_refused_at_load(template: str, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        PublishPolicy(key_template=template)
    assert needle in str(info.value)


def test_unknown_policy_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match="extra"):
        PublishPolicy(bucket="x")  # type: ignore[call-arg]


def test_every_field_is_described() -> None:
    for name, info in PublishPolicy.model_fields.items():
        assert info.description, name


def test_render_key_fills_fields_under_the_prefix(tmp_path: Path) -> None:
    item = make_item(tmp_path)
    assert render_key("{campaign}/{run}/{asset_id}.{ext}", item, "out/v1") == "out/v1/spring/run-1/a1.png"
    assert render_key("{date}/{asset_id}.{ext}", item, "") == "2026-11-26/a1.png"


@pytest.mark.parametrize("field_name", ["campaign", "run_id", "asset_id", "prompt_id"])
@pytest.mark.parametrize("value", ["..", ".", "a/../../etc", "x\\y", "", "a\nb"])
def test_render_key_refuses_values_that_escape(tmp_path: Path, field_name: str, value: str) -> None:
    item = make_item(tmp_path, **{field_name: value})
    with pytest.raises(PublishTargetError, match="key fields must be non-empty"):
        render_key("{campaign}/{run}/{prompt_id}/{asset_id}.{ext}", item, "prefix")


def test_render_key_needs_a_date_for_date_templates(tmp_path: Path) -> None:
    with pytest.raises(PublishTargetError, match="no finalization time"):
        render_key("{date}/{asset_id}", make_item(tmp_path, created_at=None), "")


# --- target URIs ---------------------------------------------------------------------------------------------------


def test_parse_target_kinds(tmp_path: Path) -> None:
    assert parse_target("s3://bucket-1/a/b/") == TargetLocation("s3", bucket="bucket-1", prefix="a/b")
    assert parse_target("s3://bucket-1") == TargetLocation("s3", bucket="bucket-1")
    assert parse_target("{work_dir}/published").folder_path(tmp_path) == tmp_path / "published"
    assert parse_target(f"file://{tmp_path}/x").folder_path(Path("/elsewhere")) == tmp_path / "x"
    assert PublishPolicy(target="s3://bucket-1/p").location == TargetLocation("s3", bucket="bucket-1", prefix="p")


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://Bad_Bucket/x", "not a valid S3 bucket name"),
        ("s3://ab/x", "not a valid S3 bucket name"),
        ("S3://bucket/x", "lowercase 's3://'"),
        ("s3:/bucket/x", "unsupported scheme"),
        ("gs://bucket/x", "unsupported scheme 'gs'"),
        ("https://example.com/bucket", "unsupported scheme 'https'"),
        ("s3://bucket/a/../b", "'..' segment"),
        ("s3://bucket/a//b", "empty"),
        ("{home}/published", "only the placeholder {work_dir}"),
        ("{work_dir}/../elsewhere", "contains '..'"),
        ("", "empty"),
        (" s3://bucket", "whitespace"),
    ],
)
def test_parse_target_errors_name_the_uri_and_the_fix(tmp_path: Path, uri: str, needle: str) -> None:
    with pytest.raises(TargetSyntaxError) as info:
        parse_target(uri)
    assert needle in str(info.value)
    if uri:
        assert repr(uri) in str(info.value)


def test_policy_refuses_malformed_targets_at_load() -> None:
    with pytest.raises(ValidationError, match="unsupported scheme"):
        PublishPolicy(target="ftp://host/x")
    with pytest.raises(ValidationError, match="must start with http"):
        PublishPolicy(endpoint_url="127.0.0.1:7480")


def test_policy_json_schema_builds() -> None:
    schema = PublishPolicy.model_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) >= {"target", "key_template", "max_attempts", "sidecar", "addressing_style"}


# --- local folder target -------------------------------------------------------------------------------------------


def test_local_publish_writes_exact_bytes_and_sidecar(tmp_path: Path) -> None:
    item = make_item(tmp_path)
    target = open_target(PublishPolicy(), tmp_path / "work")
    assert isinstance(target, LocalFolderTarget)
    receipt = target.publish(item)
    published = tmp_path / "work/published/spring/run-1/a1.png"
    assert published.read_bytes() == item.path.read_bytes()
    assert receipt.key == "spring/run-1/a1.png" and not receipt.already_published
    assert receipt.sidecar_key == "spring/run-1/a1.png.provenance.json"
    assert receipt.checksum_sha256 == base64.b64encode(bytes.fromhex(item.sha256)).decode()
    sidecar = json.loads((tmp_path / "work/published" / receipt.sidecar_key).read_text())
    assert sidecar == item.sidecar
    leftovers = [p.name for p in published.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_local_publish_sweeps_what_a_killed_publish_left_in_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "work/published/spring/run-1"
    folder.mkdir(parents=True)
    stale = [folder / ".a0.png.x1y2z3w4.tmp", folder / ".a0.png.provenance.json.q9r8s7t6.tmp"]
    for path in [*stale, folder / "a0.png", folder / ".notes.tmp"]:
        path.write_bytes(b"left over")
        backdate(path)
    open_target(PublishPolicy(), tmp_path / "work").publish(make_item(tmp_path))
    names = sorted(p.name for p in folder.iterdir())
    assert names == [".notes.tmp", "a0.png", "a1.png", "a1.png.provenance.json"]


def test_local_republish_is_idempotent(tmp_path: Path) -> None:
    item = make_item(tmp_path)
    target = open_target(PublishPolicy(), tmp_path / "work")
    first = target.publish(item)
    second = target.publish(item)
    assert not first.already_published and second.already_published
    assert second.key == first.key


def test_local_conflict_never_overwrites(tmp_path: Path) -> None:
    target = open_target(PublishPolicy(), tmp_path / "work")
    target.publish(make_item(tmp_path))
    (tmp_path / "other").mkdir()
    other = make_item(tmp_path / "other", data=b"other bytes")
    with pytest.raises(PublishConflictError) as info:
        target.publish(other)
    assert "different bytes" in str(info.value) and other.sha256 in str(info.value)
    published = tmp_path / "work/published/spring/run-1/a1.png"
    assert published.read_bytes() == b"\x89PNG signed bytes"


def test_local_sidecar_conflict_is_reported(tmp_path: Path) -> None:
    target = open_target(PublishPolicy(), tmp_path / "work")
    item = make_item(tmp_path)
    target.publish(item)
    changed = make_item(tmp_path, sidecar={"asset_id": "a1", "clip_score": 0.99})
    with pytest.raises(PublishConflictError, match="provenance.json"):
        target.publish(changed)


def test_local_sha_mismatch_is_refused_and_nothing_written(tmp_path: Path) -> None:
    item = make_item(tmp_path)
    item.path.write_bytes(b"re-encoded after signing")
    target = open_target(PublishPolicy(), tmp_path / "work")
    with pytest.raises(PublishTargetError, match="changed after signing"):
        target.publish(item)
    assert not (tmp_path / "work/published/spring/run-1/a1.png").exists()


def test_sidecar_with_secrets_is_refused(tmp_path: Path) -> None:
    item = make_item(tmp_path, sidecar={"signer": {"private_key": "-----BEGIN"}})
    with pytest.raises(PublishTargetError, match="looks like a secret"):
        open_target(PublishPolicy(), tmp_path / "work").publish(item)


def test_missing_file_is_a_target_error(tmp_path: Path) -> None:
    item = make_item(tmp_path)
    item.path.unlink()
    with pytest.raises(PublishTargetError, match="cannot read asset a1"):
        open_target(PublishPolicy(), tmp_path / "work").publish(item)


def test_metadata_is_ascii_safe(tmp_path: Path) -> None:
    item = make_item(tmp_path, metadata={"Title_Text": "Café ☕", "c2pa-manifest": "urn:c2pa:x"})
    meta = object_metadata(item)
    assert meta["title-text"] == "Caf%C3%A9%20%E2%98%95" or meta["title-text"].isascii()
    assert all(value.isascii() for value in meta.values())
    assert meta["sha256"] == item.sha256


def test_publish_many_returns_receipts_and_errors_in_order(tmp_path: Path) -> None:
    target = open_target(PublishPolicy(), tmp_path / "work")
    good = make_item(tmp_path, asset_id="g1")
    bad = make_item(tmp_path, asset_id="b1")
    bad.path.write_bytes(b"tampered")
    results = publish_many(target, [good, bad], concurrency=2)
    assert not results[0].already_published  # type: ignore[union-attr]
    assert isinstance(results[1], PublishTargetError)


# --- S3 target against a fake client: retries and their classification --------------------------------------------


def client_error(code: str, status: int, op: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


@pytest.mark.parametrize(
    "exc",
    [
        client_error("InternalError", 500),
        client_error("ServiceUnavailable", 503),
        client_error("SlowDown", 503),
        client_error("RequestTimeout", 400),
        client_error("TooManyRequests", 429),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ],
)
def test_transient_errors_retry(exc: Exception) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        client_error("AccessDenied", 403),
        client_error("NoSuchBucket", 404),
        client_error("InvalidArgument", 400),
        client_error("BadDigest", 400),
        client_error("PreconditionFailed", 412),
        NoCredentialsError(),
        ValueError("x"),
    ],
)
def test_other_errors_do_not_retry(exc: Exception) -> None:
    assert not is_retryable(exc)


def test_backoff_is_full_jitter_and_capped() -> None:
    assert backoff_delay(1, rng=lambda: 1.0) == pytest.approx(0.2)
    assert backoff_delay(3, rng=lambda: 1.0) == pytest.approx(0.8)
    assert backoff_delay(30, rng=lambda: 1.0) == pytest.approx(8.0)
    assert backoff_delay(5, rng=lambda: 0.0) == 0.0


class FakeS3:
    """An in-memory S3 with create-only PUT and a scripted list of failures per operation."""

    def __init__(self, failures: dict[str, list[Exception]] | None = None, apply_then_fail: bool = False) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.failures = failures or {}
        self.apply_then_fail = apply_then_fail
        self.calls: list[str] = []

    def _fail(self, op: str) -> Exception | None:
        queue = self.failures.get(op) or []
        return queue.pop(0) if queue else None

    def put_object(self, **kw: Any) -> dict[str, Any]:
        self.calls.append("put_object")
        failure = self._fail("put_object")
        if failure and not self.apply_then_fail:
            raise failure
        if kw.get("IfNoneMatch") == "*" and kw["Key"] in self.objects:
            raise client_error("PreconditionFailed", 412)
        body = kw["Body"]
        assert base64.b64encode(hashlib.md5(body).digest()).decode() == kw["ContentMD5"]
        self.objects[kw["Key"]] = {
            "Body": body,
            "Metadata": kw["Metadata"],
            "ETag": f'"{hashlib.md5(body).hexdigest()}"',
        }
        if failure:
            raise failure  # the write happened, the response was lost
        return {"ETag": self.objects[kw["Key"]]["ETag"]}

    def head_object(self, **kw: Any) -> dict[str, Any]:
        self.calls.append("head_object")
        failure = self._fail("head_object")
        if failure:
            raise failure
        obj = self.objects.get(kw["Key"])
        if obj is None:
            raise client_error("404", 404, "HeadObject")
        return {"ETag": obj["ETag"], "Metadata": obj["Metadata"], "ContentLength": len(obj["Body"])}

    def get_object(self, **kw: Any) -> dict[str, Any]:
        self.calls.append("get_object")
        return {"Body": io.BytesIO(self.objects[kw["Key"]]["Body"])}


def s3_target(fake: FakeS3, **policy: Any) -> tuple[S3Target, list[float]]:
    sleeps: list[float] = []
    target = S3Target(
        "bucket", "pre", PublishPolicy(target="s3://bucket/pre", **policy), client=fake, sleep=sleeps.append
    )
    return target, sleeps


def test_s3_retries_5xx_then_succeeds(tmp_path: Path) -> None:
    fake = FakeS3({"put_object": [client_error("InternalError", 500), client_error("SlowDown", 503)]})
    target, sleeps = s3_target(fake)
    receipt = target.publish(make_item(tmp_path))
    assert not receipt.already_published and receipt.key == "pre/spring/run-1/a1.png"
    assert fake.calls.count("put_object") == 4  # 3 for the asset, 1 for the sidecar
    assert len(sleeps) == 2


def test_s3_does_not_retry_4xx(tmp_path: Path) -> None:
    fake = FakeS3({"put_object": [client_error("AccessDenied", 403)]})
    target, sleeps = s3_target(fake)
    with pytest.raises(PublishTargetError, match="access denied"):
        target.publish(make_item(tmp_path))
    assert fake.calls == ["put_object"] and sleeps == []


def test_s3_gives_up_after_max_attempts(tmp_path: Path) -> None:
    fake = FakeS3({"put_object": [client_error("ServiceUnavailable", 503)] * 10})
    target, sleeps = s3_target(fake, max_attempts=3)
    with pytest.raises(PublishTargetError, match="after 3 attempts") as info:
        target.publish(make_item(tmp_path))
    assert info.value.retryable
    assert fake.calls.count("put_object") == 3 and len(sleeps) == 2


def test_s3_lost_response_ends_as_already_published(tmp_path: Path) -> None:
    fake = FakeS3({"put_object": [ConnectionClosedError(endpoint_url="http://x")]}, apply_then_fail=True)
    target, _ = s3_target(fake)
    item = make_item(tmp_path)
    receipt = target.publish(item)
    assert receipt.already_published
    assert fake.objects["pre/spring/run-1/a1.png"]["Body"] == item.path.read_bytes()


def test_s3_conflict_names_both_digests_and_keeps_the_object(tmp_path: Path) -> None:
    fake = FakeS3()
    target, _ = s3_target(fake)
    target.publish(make_item(tmp_path))
    other = make_item(tmp_path, data=b"different")
    with pytest.raises(PublishConflictError) as info:
        target.publish(other)
    message = str(info.value)
    assert "s3://bucket/pre/spring/run-1/a1.png" in message
    assert other.sha256 in message and hashlib.sha256(b"\x89PNG signed bytes").hexdigest() in message
    assert fake.objects["pre/spring/run-1/a1.png"]["Body"] == b"\x89PNG signed bytes"


def test_s3_no_credentials_is_a_target_error(tmp_path: Path) -> None:
    fake = FakeS3({"put_object": [NoCredentialsError()]})
    target, _ = s3_target(fake)
    with pytest.raises(PublishTargetError, match="no AWS credentials"):
        target.publish(make_item(tmp_path))


def test_s3_missing_bucket_is_a_target_error(tmp_path: Path) -> None:
    fake = FakeS3({"put_object": [client_error("NoSuchBucket", 404)]})
    target, _ = s3_target(fake)
    with pytest.raises(PublishTargetError, match="bucket 'bucket' does not exist"):
        target.publish(make_item(tmp_path))


def test_s3_refuses_bytes_that_are_not_the_signed_ones(tmp_path: Path) -> None:
    fake = FakeS3()
    target, _ = s3_target(fake)
    item = make_item(tmp_path)
    item.path.write_bytes(b"stripped")
    with pytest.raises(PublishTargetError, match="changed after signing"):
        target.publish(item)
    assert fake.calls == []


def test_s3_metadata_claiming_our_digest_does_not_make_other_bytes_ours(tmp_path: Path) -> None:
    item = make_item(tmp_path)
    fake = FakeS3()
    target, _ = s3_target(fake)
    key = render_key(PublishPolicy().key_template, item, "pre")
    # Someone else's bytes under our key, with user metadata that copies our sha256.
    fake.objects[key] = {"Body": b"other bytes", "Metadata": {"sha256": item.sha256}, "ETag": '"x"'}
    with pytest.raises(PublishConflictError):
        target.publish(item)
    assert fake.objects[key]["Body"] == b"other bytes"


def test_a_folder_target_is_probed_without_creating_it(tmp_path: Path) -> None:
    LocalFolderTarget(tmp_path / "not" / "yet" / "there", PublishPolicy()).probe()  # a writable ancestor suffices
    assert not (tmp_path / "not").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("where the folder should be")
    with pytest.raises(PublishTargetError, match="a-file is not a writable folder"):
        LocalFolderTarget(blocker / "published", PublishPolicy()).probe()
