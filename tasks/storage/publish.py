"""Publishing finalized assets, create-only: a local folder (the embedded default) or S3 (any S3-compatible store).

Publishing the same asset twice is impossible, not just avoided: every write is conditional (S3 `If-None-Match: *`,
a hard link onto a name that must not exist locally). When the object is already there, its sha256 decides: the same
bytes mean the asset is already published (a receipt with already_published=True, which is also how a retried PUT
whose first response was lost ends), different bytes raise PublishConflictError. Nothing is ever overwritten.

Exactly the signed bytes go out: the file is re-hashed as it is read for upload and refused when its sha256 is not
the one recorded at finalization.

radosgw (Ceph 16, Debian 12) notes, measured against deploy/s3-local.sh: it enforces If-None-Match on PutObject but
ignores it on CompleteMultipartUpload, ignores x-amz-checksum-sha256 (accepts a wrong one, returns none) while it
does verify Content-MD5 (BadDigest), supports Tagging on PutObject but drops it on CreateMultipartUpload, and
answers a repeated CompleteMultipartUpload of the same upload with 200. So every upload also sends Content-MD5,
multipart objects are tagged after completion, and the object is HEADed just before CompleteMultipartUpload; see
S3Target._publish_multipart for the race that leaves on stores which ignore the condition there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from policies.publish import KEY_FIELDS, check_key_template
from tasks.core.errors import AssetMintError
from tasks.core.files import create_only, sweep_temp_files, why_not_creatable

if TYPE_CHECKING:
    from policies.publish import PublishPolicy

SIDECAR_SUFFIX = ".provenance.json"
SHA256_METADATA_KEY = "sha256"
MIB = 1024 * 1024
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 8.0
MAX_METADATA_BYTES = 2048  # S3's limit on all user metadata of an object
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9 +\-=._:/@]")
_META_KEY_UNSAFE = re.compile(r"[^a-z0-9-]")
_SECRET_KEY_RE = re.compile(r"(secret|password|passwd|token|private[_-]?key|credential|api[_-]?key)", re.IGNORECASE)
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
    }
)
DENIED_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "AccountProblem"}
)
CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


class PublishConflictError(AssetMintError):
    """The key already holds different bytes than the asset being published; nothing was overwritten."""


class PublishTargetError(AssetMintError):
    """The publish target is malformed, unreachable, refuses us, or the asset's bytes are not the signed ones."""

    def __init__(self, message: str, retryable: bool = False, code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


@dataclass(frozen=True)
class PublishItem:
    """One finalized asset to publish: exactly the signed file and the facts that name and describe it."""

    asset_id: str
    run_id: str
    campaign: str
    prompt_id: str
    policy_name: str
    path: Path
    sha256: str
    mime: str
    ext: str
    metadata: dict[str, str] = field(default_factory=dict)
    sidecar: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None  # finalization time; {date} in key templates renders from it


@dataclass(frozen=True)
class PublishReceipt:
    """Where an asset was published and what the store said about it."""

    target: str
    bucket: str | None
    key: str
    version_id: str | None
    etag: str | None
    checksum_sha256: str | None
    published_at: datetime
    already_published: bool
    sidecar_key: str | None


class Target(Protocol):
    """A place assets are published to, create-only."""

    def describe(self) -> str:
        """A one-line description of the target for messages and receipts."""
        ...

    def publish(self, item: PublishItem) -> PublishReceipt:
        """Publish one asset (and its sidecar); idempotent for equal bytes, PublishConflictError otherwise."""
        ...

    def probe(self) -> None:
        """Check once, quickly and creating nothing, that the target can take assets; PublishTargetError if not."""
        ...


# --- targets and keys -----------------------------------------------------------------------------------------------


def _key_value(name: str, value: str) -> str:
    text = str(value)
    if not text or text in (".", "..") or "/" in text or "\\" in text or any(ord(ch) < 32 for ch in text):
        raise PublishTargetError(
            f"cannot build an object key: {{{name}}} is {text!r}; key fields must be non-empty, not '.' or '..', "
            "and contain no '/', '\\' or control characters"
        )
    return text


def render_key(template: str, item: PublishItem, prefix: str) -> str:
    """The object key of `item`: `template` rendered under `prefix`, refusing anything that would escape it."""
    try:
        check_key_template(template)
    except ValueError as exc:
        raise PublishTargetError(str(exc)) from None
    values = {"campaign": item.campaign, "run": item.run_id, "asset_id": item.asset_id, "ext": item.ext.lstrip(".")}
    values["prompt_id"] = item.prompt_id
    if "{date}" in template:
        if item.created_at is None:
            raise PublishTargetError(
                f"key_template {template!r} uses {{date}} but asset {item.asset_id} has no finalization time"
            )
        values["date"] = item.created_at.astimezone(UTC).strftime("%Y-%m-%d")
    used = {name: _key_value(name, values[name]) for name in KEY_FIELDS if "{" + name + "}" in template}
    relative = template.format(**used)
    prefix = prefix.strip("/")
    key = f"{prefix}/{relative}" if prefix else relative
    segments = key.split("/")
    if key.startswith("/") or any(seg in ("", ".", "..") for seg in segments) or "\\" in key:
        raise PublishTargetError(f"object key {key!r} for asset {item.asset_id} is not a plain relative key")
    if prefix and not key.startswith(prefix + "/"):
        raise PublishTargetError(f"object key {key!r} escapes the target prefix {prefix!r}")
    if len(key.encode("utf-8")) + len(SIDECAR_SUFFIX) > 1024:
        raise PublishTargetError(f"object key for asset {item.asset_id} is longer than S3's 1024 bytes: {key[:80]}...")
    return key


def open_target(
    policy: PublishPolicy, work_dir: Path, client: Any = None, sleep: Callable[[float], None] = time.sleep
) -> Target:
    """The target the policy names: LocalFolderTarget or S3Target (the one place implementations are chosen)."""
    location = policy.location
    if location.kind == "folder":
        return LocalFolderTarget(location.folder_path(work_dir), policy)
    return S3Target(location.bucket, location.prefix, policy, client=client, sleep=sleep)


# --- shared helpers ---------------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _b64_to_hex(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (ValueError, TypeError):
        return None


def read_verified(item: PublishItem) -> bytes:
    """The file's bytes, refused unless their sha256 is the one recorded when the asset was signed."""
    try:
        data = item.path.read_bytes()
    except OSError as exc:
        raise PublishTargetError(f"cannot read asset {item.asset_id} at {item.path}: {exc.strerror or exc}") from None
    _check_digest(item, hashlib.sha256(data).hexdigest())
    return data


def _check_digest(item: PublishItem, actual: str) -> None:
    if actual != item.sha256.lower():
        raise PublishTargetError(
            f"refusing to publish asset {item.asset_id}: {item.path} has sha256 {actual}, but the signed asset has "
            f"{item.sha256}; the file changed after signing, re-finalize it"
        )


def sidecar_bytes(item: PublishItem) -> bytes:
    """The sidecar document: item.sidecar as stable JSON, refused if it carries anything that looks like a secret."""
    _refuse_secrets(item.sidecar, "sidecar", item.asset_id)
    return (json.dumps(item.sidecar, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def _refuse_secrets(value: Any, where: str, asset_id: str) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if _SECRET_KEY_RE.search(str(key)):
                raise PublishTargetError(
                    f"refusing to publish asset {asset_id}: {where}.{key} looks like a secret; sidecars are public"
                )
            _refuse_secrets(inner, f"{where}.{key}", asset_id)
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            _refuse_secrets(inner, f"{where}[{index}]", asset_id)


def object_metadata(item: PublishItem) -> dict[str, str]:
    """S3 user metadata: item.metadata plus the sha256, keys lowercased [a-z0-9-], values ASCII (percent-encoded)."""
    out: dict[str, str] = {}
    for key, value in {**item.metadata, SHA256_METADATA_KEY: item.sha256.lower()}.items():
        clean_key = _META_KEY_UNSAFE.sub("-", str(key).lower().replace("_", "-")).strip("-")
        if not clean_key:
            raise PublishTargetError(f"asset {item.asset_id}: metadata key {key!r} has no usable characters")
        text = str(value)
        if not text.isascii() or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
            text = urllib.parse.quote(text, safe=" !#$&'()*+,/:;=?@[]~")
        out[clean_key] = text
    size = sum(len(k) + len(v) for k, v in out.items())
    if size > MAX_METADATA_BYTES:
        raise PublishTargetError(
            f"asset {item.asset_id}: user metadata is {size} bytes, over S3's {MAX_METADATA_BYTES}; put long values "
            "in the sidecar instead"
        )
    return out


def object_tagging(item: PublishItem) -> str:
    """The object's tags (campaign, run, policy) as an S3 Tagging query string."""

    def clean(value: str) -> str:
        return _TAG_UNSAFE.sub("_", value)[:256] or "_"

    tags = {"campaign": clean(item.campaign), "run": clean(item.run_id), "policy": clean(item.policy_name)}
    return urllib.parse.urlencode(tags)


def publish_many(
    target: Target, items: Sequence[PublishItem], concurrency: int
) -> list[PublishReceipt | AssetMintError]:
    """Publish `items` with up to `concurrency` in flight; per item a receipt or the AssetMintError that stopped it."""

    def one(item: PublishItem) -> PublishReceipt | AssetMintError:
        try:
            return target.publish(item)
        except AssetMintError as exc:
            return exc

    if concurrency <= 1 or len(items) <= 1:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="publish") as pool:
        return list(pool.map(one, items))


# --- local folder -----------------------------------------------------------------------------------------------------


class LocalFolderTarget:
    """A folder with the same key layout as S3; files are created atomically and never replaced."""

    def __init__(self, root: Path, policy: PublishPolicy) -> None:
        self.root = root
        self.policy = policy
        self._swept: set[Path] = set()
        self._swept_lock = threading.Lock()

    def describe(self) -> str:
        """The folder, as a file URI."""
        return f"file://{self.root}"

    def probe(self) -> None:
        """The folder can be created (or is there) and written: tried, leaving nothing behind."""
        why = why_not_creatable(self.root)
        if why is not None:
            raise PublishTargetError(f"cannot publish to {self.describe()}: {why}; fix publish.target")

    def publish(self, item: PublishItem) -> PublishReceipt:
        """Link the verified bytes (and sidecar) into place; equal existing bytes = already published."""
        data = read_verified(item)
        key = render_key(self.policy.key_template, item, "")
        already = self._create_only(key, data, item.sha256.lower(), item)
        sidecar_key = None
        if self.policy.sidecar:
            sidecar_key = key + SIDECAR_SUFFIX
            payload = sidecar_bytes(item)
            self._create_only(sidecar_key, payload, hashlib.sha256(payload).hexdigest(), item)
        return PublishReceipt(
            target=self.describe(),
            bucket=None,
            key=key,
            version_id=None,
            etag=None,
            checksum_sha256=_b64(bytes.fromhex(item.sha256)),
            published_at=_now(),
            already_published=already,
            sidecar_key=sidecar_key,
        )

    def _create_only(self, key: str, data: bytes, sha256: str, item: PublishItem) -> bool:
        final = self.root.joinpath(*key.split("/"))
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishTargetError(
                f"cannot create folder {final.parent} in publish target {self.describe()}: {exc.strerror or exc}"
            ) from None
        self._sweep_once(final.parent)
        if final.exists():
            return self._existing(final, key, sha256, item)
        try:
            created = create_only(final, data)  # never replaces a published file
        except OSError as exc:
            raise PublishTargetError(
                f"cannot publish {key} into {self.describe()}: {exc.strerror or exc} (the folder must be on a "
                "file system with hard links)"
            ) from None
        return False if created else self._existing(final, key, sha256, item)

    def _sweep_once(self, folder: Path) -> None:
        """Remove what interrupted publishes left in `folder`, the first time this target writes there."""
        with self._swept_lock:
            if folder in self._swept:
                return
            self._swept.add(folder)
            sweep_temp_files(folder)

    def _existing(self, final: Path, key: str, sha256: str, item: PublishItem) -> bool:
        existing = hashlib.sha256(final.read_bytes()).hexdigest()
        if existing == sha256:
            return True
        raise PublishConflictError(
            f"{self.describe()}/{key} already exists with different bytes (sha256 {existing}, asset {item.asset_id} "
            f"has {sha256}); published files are never replaced: change the key template or remove the file"
        )


# --- S3 -------------------------------------------------------------------------------------------------------------


def _error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def is_retryable(exc: BaseException) -> bool:
    """Whether an S3 error can clear up by itself: 5xx, throttling, timeouts, dropped or refused connections."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, ResponseStreamingError

    if isinstance(exc, ConnectionError | HTTPClientError | ResponseStreamingError):
        return True  # EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError, ...
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        return status >= 500 or status == 429 or code in RETRYABLE_CODES
    return False


def backoff_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff before retry number `attempt` (1-based): uniform in [0, min(cap, base*2^n))."""
    return rng() * min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** (attempt - 1)))


def _md5_b64(data: bytes) -> str:
    return _b64(hashlib.md5(data, usedforsecurity=False).digest())


class S3Target:
    """An S3 bucket and prefix; every object is created with If-None-Match: * and never overwritten."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        policy: PublishPolicy,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.policy = policy
        self.client = client if client is not None else make_s3_client(policy)
        self.sleep = sleep
        self.rng = rng

    @property
    def uri(self) -> str:
        """The target as an s3:// URI."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def describe(self) -> str:
        """The target URI plus the endpoint when it is not AWS."""
        uri = self.uri
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", None)
        if endpoint and "amazonaws.com" not in str(endpoint):
            return f"{uri} at {endpoint}"
        return uri

    # The retry loop: the one place attempts, backoff and error translation happen.
    def _call(self, what: str, key: str, fn: Callable[[], Any]) -> Any:
        from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, ParamValidationError

        attempts = self.policy.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except (NoCredentialsError, NoRegionError) as exc:
                raise self._setup_error(exc) or PublishTargetError(str(exc)) from None
            except ParamValidationError as exc:
                raise PublishTargetError(f"{what} {key} in {self.describe()}: invalid request ({exc})") from None
            except ClientError as exc:
                code, status = _error_code(exc)
                if code in CONFLICT_CODES or status == 412:
                    raise
                if not is_retryable(exc):
                    raise self._translate(what, key, exc) from None
                if attempt == attempts:
                    raise PublishTargetError(
                        f"{what} {key} in {self.describe()} still failing after {attempts} attempts: {code or status}; "
                        "try again later",
                        retryable=True,
                    ) from None
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if attempt == attempts:
                    raise PublishTargetError(
                        f"{what} {key} in {self.describe()} still failing after {attempts} attempts: "
                        f"{type(exc).__name__}: {exc}; check that the endpoint is reachable, then try again",
                        retryable=True,
                    ) from None
            self.sleep(backoff_delay(attempt, self.rng))
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, what: str, key: str, exc: Exception) -> PublishTargetError:
        code, status = _error_code(exc)
        if code == "NoSuchBucket" or (not key and status == 404):  # HEAD of a bucket answers a bare 404
            return PublishTargetError(
                f"bucket {self.bucket!r} does not exist at {self.describe()}: create it or fix publish.target"
            )
        if code in DENIED_CODES or status == 403:
            return PublishTargetError(
                f"access denied ({code or status}) for {what} s3://{self.bucket}/{key} at {self.describe()}: check the "
                "credentials and that they allow s3:PutObject, s3:PutObjectTagging, s3:GetObject and s3:ListBucket"
            )
        return PublishTargetError(
            f"{what} s3://{self.bucket}/{key} failed at {self.describe()}: {code or status} {exc}", code=code
        )

    def publish(self, item: PublishItem) -> PublishReceipt:
        """Upload the verified bytes create-only (multipart above the threshold), then the sidecar."""
        key = render_key(self.policy.key_template, item, self.prefix)
        size = self._size(item)
        if size >= self.policy.multipart_threshold_mb * MIB:
            receipt = self._publish_multipart(item, key)
        else:
            receipt = self._publish_single(item, key)
        if not self.policy.sidecar:
            return receipt
        sidecar_key = key + SIDECAR_SUFFIX
        payload = sidecar_bytes(item)
        sidecar_sha = hashlib.sha256(payload).hexdigest()
        self._put_create_only(
            sidecar_key,
            payload,
            sidecar_sha,
            item,
            content_type="application/json",
            metadata={SHA256_METADATA_KEY: sidecar_sha, "asset-id": item.asset_id},
        )
        return PublishReceipt(**{**receipt.__dict__, "sidecar_key": sidecar_key})

    def _size(self, item: PublishItem) -> int:
        try:
            return item.path.stat().st_size
        except OSError as exc:
            raise PublishTargetError(
                f"cannot read asset {item.asset_id} at {item.path}: {exc.strerror or exc}"
            ) from None

    def _publish_single(self, item: PublishItem, key: str) -> PublishReceipt:
        data = read_verified(item)
        return self._put_create_only(
            key,
            data,
            item.sha256.lower(),
            item,
            content_type=item.mime,
            metadata=object_metadata(item),
            tagging=object_tagging(item),
        )

    def _put_create_only(
        self,
        key: str,
        data: bytes,
        sha256: str,
        item: PublishItem,
        content_type: str,
        metadata: dict[str, str],
        tagging: str | None = None,
    ) -> PublishReceipt:
        from botocore.exceptions import ClientError

        checksum = _b64(bytes.fromhex(sha256))
        md5_b64 = _md5_b64(data)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
            "ContentMD5": md5_b64,
            "ChecksumSHA256": checksum,
            "Metadata": metadata,
            "IfNoneMatch": "*",
        }
        if tagging:
            params["Tagging"] = tagging
        # A 409 ConditionalRequestConflict means a concurrent write to the key is in progress: look, then try again.
        for _ in range(self.policy.max_attempts):
            try:
                response = self._call("upload", key, lambda: self.client.put_object(**params))
            except ClientError as exc:
                code, status = _error_code(exc)
                existing = self._head(key)
                if existing is None:
                    if code == "ConditionalRequestConflict" or status == 409:
                        self.sleep(backoff_delay(1, self.rng))
                        continue
                    raise PublishTargetError(
                        f"upload s3://{self.bucket}/{key}: the store answered {code or status} to a create-only PUT "
                        "but has no object there; try again",
                        retryable=True,
                    ) from None
                return self._receipt_for_existing(key, existing, sha256, data, item)
            returned = response.get("ChecksumSHA256")
            if returned and _b64_to_hex(returned) != sha256:
                raise PublishTargetError(
                    f"s3://{self.bucket}/{key}: the store reports sha256 {_b64_to_hex(returned)} for what it stored, "
                    f"we sent {sha256}; the object is suspect, inspect it before anything else"
                )
            etag = response.get("ETag")
            md5_hex = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if etag and _plain_md5_etag(etag) and etag.strip('"') != md5_hex:
                raise PublishTargetError(
                    f"s3://{self.bucket}/{key}: the store's ETag {etag} is not the MD5 {md5_hex} of what we sent; "
                    "the object is suspect, inspect it before anything else"
                )
            return self._receipt(key, response.get("VersionId"), etag, returned, _now(), already_published=False)
        raise PublishTargetError(
            f"upload s3://{self.bucket}/{key}: concurrent writes kept conflicting after {self.policy.max_attempts} "
            "tries; try again",
            retryable=True,
        )

    def probe(self) -> None:
        """One HEAD of the bucket within the policy's timeouts, no retries: unreachable, missing or denied fails now."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise self._translate("reach", "", exc) from None
        except BotoCoreError as exc:
            raise self._setup_error(exc) or PublishTargetError(
                f"cannot reach {self.describe()} (waited up to {self.policy.connect_timeout_s:g} s): "
                f"{type(exc).__name__}: {exc}. Nothing was run; check publish.endpoint_url and that the store is up."
            ) from None

    def _setup_error(self, exc: BaseException) -> PublishTargetError | None:
        """The message for what no retry fixes: missing credentials or region."""
        from botocore.exceptions import NoCredentialsError, NoRegionError

        if isinstance(exc, NoCredentialsError):
            return PublishTargetError(
                f"no AWS credentials for {self.describe()}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or run with an instance/task role"
            )
        if isinstance(exc, NoRegionError):
            return PublishTargetError(
                f"no region for {self.describe()}: set publish.region in the policy or AWS_DEFAULT_REGION"
            )
        return None

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        def head() -> dict[str, Any] | None:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            except ClientError as exc:
                code, status = _error_code(exc)
                if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

        return self._call("inspect", key, head)

    def _existing_sha256(self, head: dict[str, Any], data: bytes | None, key: str) -> str | None:
        """The existing object's sha256: the store's own checksum, else a hash of its bytes (never user metadata,
        which any writer can set)."""
        checksum = head.get("ChecksumSHA256")
        if checksum and "-" not in checksum:
            return _b64_to_hex(checksum)
        if not (head.get("Metadata") or {}).get(SHA256_METADATA_KEY):
            return None  # not written by AssetMint; the ETag/MD5 comparison decides
        body = self._call("read back", key, lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        return hashlib.sha256(body).hexdigest()

    def _receipt_for_existing(
        self, key: str, head: dict[str, Any], sha256: str, data: bytes | None, item: PublishItem
    ) -> PublishReceipt:
        existing = self._existing_sha256(head, data, key)
        etag = head.get("ETag")
        if existing is None and data is not None and etag and _plain_md5_etag(etag):
            # No sha256 recorded (written by something else): equal MD5 and length still prove equal bytes enough
            # to call it published, since we sent Content-MD5 ourselves for everything we wrote.
            if etag.strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest() and head.get(
                "ContentLength"
            ) == len(data):
                existing = sha256
        if existing != sha256:
            raise PublishConflictError(
                f"s3://{self.bucket}/{key} already exists with different content (sha256 {existing or 'unknown'}, "
                f"asset {item.asset_id} has {sha256}); published objects are never overwritten: change the key "
                "template or remove the object deliberately"
            )
        published_at = head.get("LastModified") or _now()
        checksum = head.get("ChecksumSHA256")
        return self._receipt(key, head.get("VersionId"), etag, checksum, published_at, already_published=True)

    def _parts(self, item: PublishItem) -> Iterator[bytes]:
        chunk = self.policy.multipart_chunk_mb * MIB
        try:
            with item.path.open("rb") as handle:
                while block := handle.read(chunk):
                    yield block
        except OSError as exc:
            raise PublishTargetError(
                f"cannot read asset {item.asset_id} at {item.path}: {exc.strerror or exc}"
            ) from None

    def _publish_multipart(self, item: PublishItem, key: str) -> PublishReceipt:
        """Multipart, create-only as far as the store allows.

        CompleteMultipartUpload is sent with If-None-Match: * (AWS S3 enforces it there). radosgw 16 ignores it,
        so the object is HEADed just before completing: a writer that completes the same key between that HEAD and
        our complete is overwritten there. The HEAD after completing detects it (the ETag or sha256 is not ours)
        and raises PublishConflictError, so the race is reported, not silent; it needs two publishers racing on
        one key, which asset ids derived from content make an equal-bytes race in practice.
        """
        from botocore.exceptions import ClientError

        sha256 = item.sha256.lower()
        existing = self._head(key)
        if existing is not None:
            return self._receipt_for_existing(key, existing, sha256, None, item)
        created = self._call(
            "start multipart upload of",
            key,
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ContentType=item.mime,
                Metadata=object_metadata(item),
                Tagging=object_tagging(item),
                ChecksumAlgorithm="SHA256",
            ),
        )
        upload_id = created["UploadId"]
        try:
            whole = hashlib.sha256()
            md5s: list[bytes] = []
            parts: list[dict[str, Any]] = []
            for number, block in enumerate(self._parts(item), start=1):
                whole.update(block)
                part_sha = _b64(hashlib.sha256(block).digest())
                md5 = hashlib.md5(block, usedforsecurity=False)
                md5s.append(md5.digest())
                response = self._call(
                    f"upload part {number} of",
                    key,
                    lambda block=block, number=number, part_sha=part_sha, md5=md5: self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=block,
                        ContentMD5=_b64(md5.digest()),
                        ChecksumSHA256=part_sha,
                    ),
                )
                returned = response.get("ChecksumSHA256")
                if returned and returned != part_sha:
                    raise PublishTargetError(
                        f"s3://{self.bucket}/{key}: part {number} checksum {returned} from the store is not ours "
                        f"({part_sha}); upload aborted"
                    )
                part: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
                if returned:
                    part["ChecksumSHA256"] = returned
                parts.append(part)
            _check_digest(item, whole.hexdigest())  # the bytes sent are the signed bytes, or nothing completes
            expected_etag = f'"{hashlib.md5(b"".join(md5s), usedforsecurity=False).hexdigest()}-{len(md5s)}"'
            existing = self._head(key)
            if existing is not None:
                return self._receipt_for_existing(key, existing, sha256, None, item)
            try:
                response = self._call(
                    "complete multipart upload of",
                    key,
                    lambda: self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                        IfNoneMatch="*",
                    ),
                )
            except ClientError:
                existing = self._head(key)
                if existing is None:
                    raise PublishTargetError(
                        f"complete multipart upload of s3://{self.bucket}/{key} was refused but no object exists; "
                        "try again",
                        retryable=True,
                    ) from None
                return self._receipt_for_existing(key, existing, sha256, None, item)
            except PublishTargetError as exc:
                # A retried complete whose first response was lost answers NoSuchUpload: look at what is there.
                if exc.code != "NoSuchUpload":
                    raise
                existing = self._head(key)
                if existing is None:
                    raise
                receipt = self._receipt_for_existing(key, existing, sha256, None, item)
                return PublishReceipt(
                    **{**receipt.__dict__, "already_published": existing.get("ETag") != expected_etag}
                )
            upload_id = ""
            head = self._head(key)
            if head is None or head.get("ETag") != expected_etag or self._existing_sha256(head, None, key) != sha256:
                raise PublishConflictError(
                    f"s3://{self.bucket}/{key}: after completing our multipart upload the object is not ours (ETag "
                    f"{head.get('ETag') if head else None}, expected {expected_etag}); another writer raced on this "
                    "key and this store does not enforce If-None-Match on CompleteMultipartUpload; inspect it"
                )
            # radosgw 16 drops the Tagging given to CreateMultipartUpload; setting the same tags again is harmless.
            tag_set = [{"Key": k, "Value": v} for k, v in urllib.parse.parse_qsl(object_tagging(item))]
            self._call(
                "tag",
                key,
                lambda: self.client.put_object_tagging(Bucket=self.bucket, Key=key, Tagging={"TagSet": tag_set}),
            )
            version = response.get("VersionId") or head.get("VersionId")
            checksum = response.get("ChecksumSHA256") or None
            return self._receipt(key, version, head.get("ETag"), checksum, _now(), already_published=False)
        finally:
            if upload_id:
                self._abort(key, upload_id)

    def _receipt(
        self,
        key: str,
        version_id: str | None,
        etag: str | None,
        checksum: str | None,
        published_at: datetime,
        already_published: bool,
    ) -> PublishReceipt:
        return PublishReceipt(
            target=self.uri,
            bucket=self.bucket,
            key=key,
            version_id=version_id,
            etag=etag,
            checksum_sha256=checksum,
            published_at=published_at,
            already_published=already_published,
            sidecar_key=None,
        )

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - best effort; a lifecycle rule cleans up what is left
            pass


def _plain_md5_etag(etag: str) -> bool:
    return bool(re.fullmatch(r'"?[0-9a-f]{32}"?', etag))


def make_s3_client(policy: PublishPolicy) -> Any:
    """A boto3 S3 client: standard credential chain, endpoint/region from the policy or boto3's own chain.

    boto3's retries are off (one attempt): S3Target's retry policy is the only one, so it is ours and testable.
    Request checksums only when an operation requires them: we send our own SHA256 and Content-MD5, and
    S3-compatible stores differ in what they accept beyond that (radosgw 16 cannot read aws-chunked trailers).
    """
    import boto3
    from botocore.config import Config

    s3_config = {} if policy.addressing_style == "auto" else {"addressing_style": policy.addressing_style}
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=policy.connect_timeout_s,
        read_timeout=policy.read_timeout_s,
        max_pool_connections=max(10, policy.concurrency * 2),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        **({"s3": s3_config} if s3_config else {}),
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=policy.endpoint_url, region_name=policy.region, config=config)
