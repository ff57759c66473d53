"""The policy: typed, described settings loaded from YAML. Unknown keys are errors."""

from __future__ import annotations

import fnmatch
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.errors import PolicyError
from policies.execution import ExecutionPolicy
from policies.finalize import FinalizePolicy
from policies.publish import PublishPolicy
from policies.review import ReviewPolicy
from policies.safety import SafetyPolicy
from policies.signing import SigningPolicy
from policies.watermark import WatermarkPolicy
from policies.yamlfile import YamlLimits, json_schema, load_yaml, validate_yaml

POLICY_ENV = "ASSETMINT_POLICY"
MAX_CANDIDATES_PER_RUN = 1_000_000  # what any plan may hold; a policy sets its own, usually far lower, limit
POLICY_LIMITS = YamlLimits(max_bytes=256 << 10)
DEFAULT_POLICY_NAME = "default.yaml"


class ScoringPolicy(BaseModel):
    """How candidates are scored for prompt fidelity and selected."""

    model_config = ConfigDict(extra="forbid")
    clip_model: str = Field(
        "embedded:tiny-clip",
        description="open_clip model: 'embedded:shapes-clip' (trained demo CLIP), 'embedded:tiny-clip' (random, for "
        "tests), 'NAME:PRETRAINED_TAG' (e.g. 'ViT-B-32:laion2b_s34b_b79k'), 'NAME:/path/to/checkpoint.pt', or "
        "'local-dir:/path/to/open_clip/folder'.",
    )
    min_score: float = Field(
        0.0, ge=0, le=2.5, description="Minimum CLIPScore (2.5 * max(cosine, 0)) a candidate needs to be selected."
    )
    top_k: int | None = Field(
        None, ge=1, description="Cap on candidates selected per prompt job; the manifest's keep_top_k applies below it."
    )
    batch_size: int = Field(16, ge=1, le=1024, description="Images per CLIP forward pass.")


class GenerationPolicy(BaseModel):
    """Limits and runtime settings for generation."""

    model_config = ConfigDict(extra="forbid")
    max_pixels: int = Field(1024 * 1024, ge=64 * 64, description="Largest width*height a manifest may ask for.")
    max_candidates_per_run: int = Field(
        5000, ge=1, le=MAX_CANDIDATES_PER_RUN, description="Largest number of images one manifest may plan."
    )
    allowed_models: list[str] = Field(
        default_factory=lambda: ["embedded:*"],
        description="Glob patterns of model references a manifest may use (e.g. 'stabilityai/*', '/models/*').",
    )
    chunk_size: int = Field(8, ge=1, le=4096, description="Candidates per generation task (one task per chunk).")
    batch_size: int = Field(4, ge=1, le=256, description="Images per pipeline call inside a chunk.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where to run the pipeline; auto picks CUDA when available."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights dtype; auto is bfloat16/float16 on CUDA and float32 on CPU."
    )
    batch_invariant: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Run the denoiser per sample so a candidate's pixels do not depend on its batch; auto is on for "
        "CPU and off for GPUs (where batching gives the throughput).",
    )

    @field_validator("allowed_models")
    @classmethod
    def _non_empty(cls, patterns: list[str]) -> list[str]:
        if not patterns:
            raise ValueError("allowed_models must list at least one pattern")
        return patterns

    def allows_model(self, ref: str) -> bool:
        """Whether a model reference matches one of the allowed patterns."""
        return any(fnmatch.fnmatchcase(ref, pattern) for pattern in self.allowed_models)


class LedgerPolicy(BaseModel):
    """Where the ledger lives."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        "sqlite:///{work_dir}/ledger.sqlite",
        description="SQLAlchemy database URL; '{work_dir}' is replaced by the work directory. postgresql:// means "
        "postgresql+psycopg:// (psycopg 3 is installed with AssetMint).",
    )

    @field_validator("url")
    @classmethod
    def _placeholders(cls, url: str) -> str:
        return _usable_database_url(_only_work_dir_placeholder(url))


def _usable_database_url(url: str) -> str:
    """Check, without connecting, that `url` is a database URL whose dialect and driver are installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "not a database URL; write it as dialect[+driver]://user@host/database, e.g. "
            "sqlite:///{work_dir}/ledger.sqlite or postgresql+psycopg://assetmint@db.internal/assetmint"
        ) from None
    if parsed.drivername == "postgresql":  # SQLAlchemy's default PostgreSQL driver is psycopg2; psycopg 3 ships
        parsed = parsed.set(drivername="postgresql+psycopg")
        url = parsed.render_as_string(hide_password=False)
    shown = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"{shown} names the database {parsed.drivername!r}, which SQLAlchemy does not know; use sqlite:// or "
            "postgresql+psycopg://"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ValueError(
            f"{shown} needs the Python driver {exc.name or parsed.drivername!r}, which is not installed; install it "
            "or use postgresql+psycopg:// (psycopg comes with AssetMint)"
        ) from None
    return url


def _only_work_dir_placeholder(url: str) -> str:
    unknown = sorted(set(re.findall(r"\{([^{}]*)\}", url)) - {"work_dir"})
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} in the ledger URL; only {{work_dir}} is replaced")
    return url


class Policy(BaseModel):
    """Everything AssetMint decides by rule rather than by manifest."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(1, ge=1, le=1, description="Policy format version; only 1 exists.")
    work_dir: str = Field(
        "./assetmint-output",
        max_length=4096,
        description="Directory for run folders and the default ledger; relative paths are relative to the "
        "current directory. $ASSETMINT_WORK_DIR overrides it.",
    )
    scoring: ScoringPolicy = Field(default_factory=ScoringPolicy, description="CLIP scoring and selection.")
    generation: GenerationPolicy = Field(default_factory=GenerationPolicy, description="Generation limits.")
    ledger: LedgerPolicy = Field(default_factory=LedgerPolicy, description="Ledger database.")
    execution: ExecutionPolicy = Field(
        default_factory=ExecutionPolicy, description="Where generation runs: this process or a Ray cluster."
    )
    safety: SafetyPolicy = Field(
        default_factory=SafetyPolicy, description="Prompt screening before generation and image filters after."
    )
    review: ReviewPolicy = Field(default_factory=ReviewPolicy, description="Automatic or human approval.")
    watermark: WatermarkPolicy = Field(default_factory=WatermarkPolicy, description="Invisible watermark.")
    signing: SigningPolicy = Field(
        default_factory=SigningPolicy,
        description="C2PA signing; relative file paths are relative to the policy file's folder.",
    )
    finalize: FinalizePolicy = Field(default_factory=FinalizePolicy, description="Delivery encoding and finalize.")
    publish: PublishPolicy = Field(
        default_factory=PublishPolicy, description="Create-only publishing of finalized assets (folder or S3)."
    )

    @field_validator("work_dir")
    @classmethod
    def _work_dir_is_a_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("work_dir must name a folder, e.g. ./assetmint-output")
        if "\x00" in value:
            raise ValueError("work_dir contains a NUL byte, which no file system allows in a path")
        return value

    def resolved_work_dir(self) -> Path:
        """The work directory as an absolute path (environment override applied)."""
        override = os.environ.get("ASSETMINT_WORK_DIR", "")
        if "{{" in override:  # a deployment made without the variable set carries Prefect's template text
            raise PolicyError(
                f"ASSETMINT_WORK_DIR is {override!r}, a template that was never filled in: set ASSETMINT_WORK_DIR "
                "(and ASSETMINT_HOME) before `prefect deploy`, then deploy again."
            )
        return Path(override or self.work_dir).expanduser().resolve()

    def ledger_url(self) -> str:
        """The ledger URL with '{work_dir}' filled in."""
        return self.ledger.url.replace("{work_dir}", self.resolved_work_dir().as_posix())


def default_policy_path() -> Path:
    """The policy used when none is given: $ASSETMINT_POLICY if set, else the packaged default."""
    override = os.environ.get(POLICY_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path(str(resources.files("policies").joinpath(DEFAULT_POLICY_NAME)))


def load_policy(path: Path | None = None) -> Policy:
    """Load a policy file (the packaged default when None); PolicyError names file, line and problem."""
    loaded = load_yaml(path or default_policy_path(), PolicyError, "policy", POLICY_LIMITS)
    policy = validate_yaml(loaded, Policy, PolicyError, "policy")
    return _with_paths_relative_to(policy, loaded.path.parent)


def _with_paths_relative_to(policy: Policy, folder: Path) -> Policy:
    """Resolve the signing section's relative file paths against the policy file's folder."""
    signing = policy.signing

    def absolute(value: str | None) -> str | None:
        if value is None or Path(value).expanduser().is_absolute():
            return value
        return str((folder / value).resolve())

    updated = signing.model_copy(
        update={
            "certificate_chain": absolute(signing.certificate_chain),
            "private_key": absolute(signing.private_key),
            "trust_anchors": [absolute(p) or p for p in signing.trust_anchors],
            "watermark_secret": absolute(signing.watermark_secret),
            "retired_watermark_secrets": [absolute(p) or p for p in signing.retired_watermark_secrets],
        }
    )
    return policy.model_copy(update={"signing": updated})


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of the policy format."""
    return json_schema(Policy, "policy")
