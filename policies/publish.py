"""The `publish` section of a policy: where finalized assets go and how they get there (create-only, always)."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from policies.errors import PolicyError

KEY_FIELDS = frozenset({"campaign", "run", "asset_id", "ext", "prompt_id", "date"})
DEFAULT_TARGET = "{work_dir}/published"
DEFAULT_KEY_TEMPLATE = "{campaign}/{run}/{asset_id}.{ext}"
TARGET_HELP = "use a folder path (default '{work_dir}/published') or 's3://BUCKET/optional/prefix'"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class TargetSyntaxError(PolicyError, ValueError):
    """A publish or audit target is not a folder path or an s3://bucket/prefix URI."""


@dataclass(frozen=True)
class TargetLocation:
    """A parsed target: an S3 bucket and prefix, or a folder (whose '{work_dir}' is filled in when used)."""

    kind: Literal["s3", "folder"]
    bucket: str = ""
    prefix: str = ""
    folder: str = ""

    def folder_path(self, work_dir: Path) -> Path:
        """The absolute folder of a folder target, '{work_dir}' replaced by `work_dir`."""
        folder = Path(self.folder.replace("{work_dir}", str(work_dir))).expanduser()
        return folder if folder.is_absolute() else Path.cwd() / folder


def parse_target(uri: str) -> TargetLocation:
    """Parse a target URI once; TargetSyntaxError names the URI and what is allowed."""
    if not isinstance(uri, str) or not uri.strip():
        raise TargetSyntaxError(f"publish target is empty; {TARGET_HELP}")
    if uri != uri.strip():
        raise TargetSyntaxError(f"publish target {uri!r} has leading or trailing whitespace; {TARGET_HELP}")
    scheme, sep, rest = uri.partition("://")
    if sep and scheme.lower() == "s3":
        if scheme != "s3":
            raise TargetSyntaxError(f"publish target {uri!r}: write the scheme as lowercase 's3://'")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise TargetSyntaxError(f"publish target {uri!r} names no bucket; write 's3://BUCKET/prefix'")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise TargetSyntaxError(
                f"publish target {uri!r}: {bucket!r} is not a valid S3 bucket name (3-63 characters: lowercase "
                "letters, digits, '.', '-'; starting and ending with a letter or digit)"
            )
        prefix = prefix.strip("/")
        _check_prefix(uri, prefix)
        return TargetLocation("s3", bucket=bucket, prefix=prefix)
    if sep and scheme.lower() == "file":
        path_text = rest
    elif sep or uri.lower().startswith("s3:"):
        raise TargetSyntaxError(f"publish target {uri!r}: unsupported scheme {scheme.split(':')[0]!r}; {TARGET_HELP}")
    else:
        path_text = uri
    if "\\" in path_text:
        raise TargetSyntaxError(f"publish target {uri!r} contains a backslash; write folders with '/'")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(path_text) if name is not None}
    except ValueError as exc:
        raise TargetSyntaxError(
            f"publish target {uri!r}: only the placeholder {{work_dir}} is allowed ({exc})"
        ) from None
    if fields - {"work_dir"}:
        unknown = sorted(fields - {"work_dir"})[0]
        raise TargetSyntaxError(f"publish target {uri!r}: only the placeholder {{work_dir}} is allowed ({unknown!r})")
    if ".." in Path(path_text).parts:
        raise TargetSyntaxError(f"publish target {uri!r} contains '..'; give the folder directly")
    return TargetLocation("folder", folder=path_text)


def _check_prefix(uri: str, prefix: str) -> None:
    if not prefix:
        return
    for segment in prefix.split("/"):
        if segment in ("", ".", ".."):
            raise TargetSyntaxError(f"publish target {uri!r}: prefix {prefix!r} has an empty, '.' or '..' segment")
    if "\\" in prefix:
        raise TargetSyntaxError(f"publish target {uri!r}: prefix {prefix!r} contains a backslash; use '/'")


def check_key_template(template: str) -> str:
    """Return `template` if it only uses known fields and cannot produce an empty, absolute or escaping key."""
    allowed = ", ".join("{" + name + "}" for name in sorted(KEY_FIELDS))
    if not template or not template.strip():
        raise ValueError(f"key_template is empty; use e.g. {DEFAULT_KEY_TEMPLATE!r}")
    if "\\" in template:
        raise ValueError(f"key_template {template!r} contains a backslash; separate key segments with '/'")
    if template.startswith("/"):
        raise ValueError(f"key_template {template!r} starts with '/'; keys are relative to the target's prefix")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"key_template {template!r} is not a valid template ({exc}); fields look like {{asset_id}}"
        ) from None
    if any(".." in literal for literal, _, _, _ in parsed):
        raise ValueError(f"key_template {template!r} contains '..'; keys may not walk up the prefix")
    fields: set[str] = set()
    skeleton = []
    for literal, name, spec, conversion in parsed:
        skeleton.append(literal)
        if name is None:
            continue
        if name not in KEY_FIELDS:
            raise ValueError(f"key_template {template!r} uses unknown field {{{name}}}; allowed: {allowed}")
        if spec or conversion:
            raise ValueError(f"key_template {template!r}: field {{{name}}} takes no format spec or conversion")
        fields.add(name)
        skeleton.append("x")  # a rendered field is never empty and never contains '/'
    if "asset_id" not in fields:
        raise ValueError(f"key_template {template!r} lacks {{asset_id}}: every asset needs its own key")
    for segment in "".join(skeleton).split("/"):
        if segment == "":
            raise ValueError(f"key_template {template!r} has an empty path segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise ValueError(f"key_template {template!r} has a {segment!r} segment; keys may not walk up or sideways")
    return template


class PublishPolicy(BaseModel):
    """Where approved, finalized assets are published and how; publishing is always create-only."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(
        DEFAULT_TARGET,
        description=(
            "Where assets go: a local folder ('{work_dir}/published', the embedded default, same key layout as S3; "
            "'{work_dir}' is the run's work directory) or 's3://bucket/prefix' for S3 or an S3-compatible store."
        ),
    )
    key_template: str = Field(
        DEFAULT_KEY_TEMPLATE,
        description=(
            "Object key (or relative path) of each asset under the target's prefix. Fields: {campaign} {run} "
            "{asset_id} {ext} {prompt_id} {date} (the asset's finalization day, UTC, YYYY-MM-DD). Must contain "
            "{asset_id}; no '..', no leading '/', no empty segments, no backslashes."
        ),
    )
    endpoint_url: str | None = Field(
        None,
        description=(
            "S3 endpoint URL for S3-compatible stores (e.g. 'http://127.0.0.1:7480'). Unset: boto3's own chain "
            "(AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the AWS config file), else AWS."
        ),
    )
    region: str | None = Field(
        None, description="S3 region. Unset: boto3's own chain (AWS_REGION, AWS_DEFAULT_REGION, the AWS config file)."
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto",
        description=(
            "Bucket addressing: 'path' (endpoint/bucket/key, what most S3-compatible stores want), 'virtual' "
            "(bucket.endpoint/key), or 'auto' (boto3 decides; the AWS config file's s3.addressing_style applies)."
        ),
    )
    multipart_threshold_mb: int = Field(
        64, ge=5, le=5 * 1024, description="Files at least this many MiB are uploaded in parts (multipart upload)."
    )
    multipart_chunk_mb: int = Field(
        16, ge=5, le=5 * 1024, description="Part size in MiB for multipart uploads (S3's minimum part size is 5 MiB)."
    )
    max_attempts: int = Field(
        6,
        ge=1,
        le=50,
        description=(
            "Attempts per S3 request, the first included, for errors that can clear up (5xx, throttling, timeouts, "
            "dropped connections); exponential backoff with full jitter between them. Other 4xx never retry."
        ),
    )
    concurrency: int = Field(4, ge=1, le=64, description="Assets published in parallel.")
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="Seconds to wait for an S3 connection.")
    read_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Seconds to wait for an S3 response before the attempt counts as timed out."
    )
    auto_publish: bool = Field(
        False, description="Publish auto-approved assets as soon as they are finalized, without a publish command."
    )
    sidecar: bool = Field(
        True,
        description=(
            "Also publish '<key>.provenance.json' beside each asset (its ledger facts and provenance summary; never "
            "secrets), create-only like the asset."
        ),
    )

    @field_validator("key_template")
    @classmethod
    def _valid_template(cls, template: str) -> str:
        return check_key_template(template)

    @field_validator("endpoint_url")
    @classmethod
    def _valid_endpoint(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url {url!r} must start with http:// or https:// (e.g. 'http://127.0.0.1:7480')")
        return url

    _location: TargetLocation = PrivateAttr()

    @field_validator("target")
    @classmethod
    def _valid_target(cls, target: str) -> str:
        parse_target(target)  # errors here carry the field's name, 'publish.target'
        return target

    @model_validator(mode="after")
    def _keep_location(self) -> PublishPolicy:
        self._location = parse_target(self.target)
        return self

    @property
    def location(self) -> TargetLocation:
        """The target, parsed once when the policy was loaded."""
        return self._location
