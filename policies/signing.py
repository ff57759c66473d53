"""Signing policy: which certificate and key sign the C2PA manifest, what the manifest discloses.

Sources of the signing certificate chain and key, each chosen independently:

- chain: ``certificate_chain`` (a PEM file, leaf first) or ``certificate_chain_env`` (an environment
  variable holding the PEM text);
- key: ``private_key`` (a PEM file) or ``private_key_env`` (an environment variable holding the PEM text)
  or ``callback`` ("module:function" returning a callable that signs bytes, for KMS/HSM keys).

Setting none of them means the development chain (created on first use, untrusted for production).

The watermark's check bits are a keyed MAC; its secret comes from ``watermark_secret`` (a file) or
``watermark_secret_env`` (an environment variable), else from the development secret beside the development keys.
``retired_watermark_secrets`` only decode: they keep assets marked before a rotation resolving.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_CALLBACK_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SigningPolicy(BaseModel):
    """How AssetMint signs the Content Credential (C2PA manifest) of a finalized asset."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["es256", "ps256", "ed25519"] = Field(
        default="es256",
        description="Signature algorithm; must match the leaf certificate's key type "
        "(es256: EC P-256, ps256: RSA 2048+, ed25519: Ed25519).",
    )
    certificate_chain: str | None = Field(
        default=None,
        description="Path to the PEM certificate chain, leaf first, then intermediates (the root may follow).",
    )
    private_key: str | None = Field(
        default=None,
        description="Path to the PEM private key of the leaf certificate (unencrypted PKCS#8 or traditional).",
    )
    certificate_chain_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the PEM certificate chain (instead of certificate_chain).",
    )
    private_key_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the PEM private key (instead of private_key).",
    )
    callback: str | None = Field(
        default=None,
        description="'module:function' returning a callable that signs bytes (KMS/HSM keys), used instead of a "
        "private key; the certificate chain still comes from certificate_chain or certificate_chain_env.",
    )
    watermark_secret: str | None = Field(
        default=None,
        description="Path to the file holding the watermark MAC secret (at least 16 random bytes as hex text, "
        "mode 0600) that keys the watermark's check bits; none (and no watermark_secret_env) means the development "
        "secret beside the development keys, created on first use.",
    )
    watermark_secret_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the watermark MAC secret as hex text "
        "(instead of watermark_secret).",
    )
    retired_watermark_secrets: list[str] = Field(
        default_factory=list,
        description="Files holding watermark secrets rotated out of use: never used to mark, only to decode, so "
        "assets marked before a rotation still resolve; keep them as long as those assets may be audited.",
    )
    trust_anchors: list[str] = Field(
        default_factory=list,
        description="PEM files with the root certificates a reader trusts when validating signed assets; the "
        "development root is added automatically when the development keys sign.",
    )
    tsa_url: str | None = Field(
        default=None,
        description="RFC 3161 timestamp authority URL (http or https); none means no timestamp.",
    )
    thumbnail: bool = Field(
        default=False,
        description="Embed a thumbnail of the asset in the manifest (about +1.3 MB per 1024x1024 PNG).",
    )
    training_mining: Literal["notAllowed", "allowed", "constrained"] = Field(
        default="notAllowed",
        description="cawg.training-mining permission written for ai_training, ai_generative_training, "
        "ai_inference and data_mining.",
    )
    training_mining_constraint: str | None = Field(
        default=None,
        description="Human-readable constraint (constraint_info) written with training_mining 'constrained'.",
    )
    include_prompt_text: bool = Field(
        default=False,
        description="Write the prompt text into the generation assertion; when false only its SHA-256 is written.",
    )

    @field_validator("certificate_chain_env", "private_key_env", "watermark_secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_RE.match(value):
            raise ValueError(f"{value!r} is not an environment variable name (letters, digits, underscore)")
        return value

    @field_validator("certificate_chain", "private_key", "watermark_secret")
    @classmethod
    def _non_empty_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a file path, not an empty string")
        return value

    @field_validator("retired_watermark_secrets")
    @classmethod
    def _non_empty_paths(cls, values: list[str]) -> list[str]:
        if any(not value.strip() for value in values):
            raise ValueError("every entry must be a file path, not an empty string")
        return values

    @field_validator("callback")
    @classmethod
    def _callback_ref(cls, value: str | None) -> str | None:
        if value is not None and not _CALLBACK_RE.match(value):
            raise ValueError(f"callback {value!r} must look like 'package.module:function'")
        return value

    @field_validator("tsa_url")
    @classmethod
    def _tsa(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"tsa_url {value!r} must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _sources(self) -> SigningPolicy:
        if self.certificate_chain and self.certificate_chain_env:
            raise ValueError(
                "set either certificate_chain (a file) or certificate_chain_env (an environment variable), not both"
            )
        if self.watermark_secret and self.watermark_secret_env:
            raise ValueError(
                "set either watermark_secret (a file) or watermark_secret_env (an environment variable), not both"
            )
        key_sources = [
            name
            for name, value in (
                ("private_key", self.private_key),
                ("private_key_env", self.private_key_env),
                ("callback", self.callback),
            )
            if value
        ]
        if len(key_sources) > 1:
            raise ValueError(f"set only one of private_key, private_key_env, callback (got {', '.join(key_sources)})")
        has_chain = bool(self.certificate_chain or self.certificate_chain_env)
        if key_sources and not has_chain:
            raise ValueError(
                f"{key_sources[0]} needs the certificate chain too: set certificate_chain or certificate_chain_env"
            )
        if has_chain and not key_sources:
            raise ValueError(
                "a certificate chain needs its key: set private_key, private_key_env or callback "
                "(or set none of them to sign with the development keys)"
            )
        if self.training_mining_constraint and self.training_mining != "constrained":
            raise ValueError("training_mining_constraint applies only when training_mining is 'constrained'")
        return self

    @property
    def uses_development_keys(self) -> bool:
        """True when no certificate or key source is configured: the development chain signs."""
        return not (
            self.certificate_chain
            or self.certificate_chain_env
            or self.private_key
            or self.private_key_env
            or self.callback
        )

    @property
    def uses_development_watermark_secret(self) -> bool:
        """True when no watermark secret is configured: the development secret keys the watermark."""
        return not (self.watermark_secret or self.watermark_secret_env)
