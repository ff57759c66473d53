"""C2PA Content Credentials: build the manifest, sign it into the delivery bytes, read it back, validate.

Order of operations (DESIGN.md): signing is the last step that changes bytes; the signed bytes are read
back and validated, and the sha256 of exactly those bytes is what the ledger records and what gets
published.

c2pa-python 0.38 (c2pa-rs 0.91) is configured per call through ``c2pa.Context`` built from a settings
dict; nothing global (the deprecated ``load_settings`` is not used):

- signing: ``Context.from_dict({"builder": {"thumbnail": {"enabled": <policy>}},
  "verify": {"verify_after_sign": False}})``, ``Builder(definition, context=ctx)``,
  ``builder.sign(signer, mime, source_stream, dest_stream)``. Verification happens right after, in
  ``read_and_validate``, with the trust anchors configured (the library's own after-sign check would
  repeat it without them).
- reading: ``Context.from_dict({"trust": {"trust_anchors": <PEM text>}, "verify": {"verify_trust": True,
  "remote_manifest_fetch": False, "ocsp_fetch": False}})``, ``Reader(mime, stream, context=ctx)``.
  ``trust.trust_anchors`` replaces the library's anchor list with exactly the PEMs given.
- signers: ``Signer.from_info(C2paSignerInfo(alg, chain_pem, key_pem, tsa_url_or_None))`` for a key
  file or environment variable; ``Signer.from_callback(callable, C2paSigningAlg.X, chain_pem, tsa_url)``
  for a callback (KMS/HSM) key.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tasks.core.errors import AssetMintError, ProvenanceError, SigningConfigError
from tasks.core.media import SNIFFABLE, sniff_mime

if TYPE_CHECKING:  # pragma: no cover
    from policies.signing import SigningPolicy

log = logging.getLogger("assetmint.provenance")

SUPPORTED_MIME_TYPES = ("image/png", "image/jpeg", "image/webp")
MIME_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_LABEL = "com.assetmint.generation"
SOFT_BINDING_LABEL = "c2pa.soft-binding"
TRAINING_MINING_LABEL = "cawg.training-mining"
TRAINING_MINING_USES = ("cawg.ai_training", "cawg.ai_generative_training", "cawg.ai_inference", "cawg.data_mining")
UNTRUSTED_CODE = "signingCredential.untrusted"

# Extended key usages c2pa accepts for a claim signer: emailProtection, documentSigning, c2pa claimSigning.
EKU_EMAIL_PROTECTION = "1.3.6.1.5.5.7.3.4"
EKU_DOCUMENT_SIGNING = "1.3.6.1.5.5.7.3.36"
EKU_C2PA_CLAIM_SIGNING = "1.3.6.1.4.1.62558.2.1"
ACCEPTED_EKUS = (EKU_EMAIL_PROTECTION, EKU_DOCUMENT_SIGNING, EKU_C2PA_CLAIM_SIGNING)

_ACTIONS_LABEL_RE = re.compile(r"^c2pa\.actions(\.v\d+)?(__\d+)?$")
_SOFT_BINDING_LABEL_RE = re.compile(r"^c2pa\.soft-binding(__\d+)?$")

# A prompt shorter than this is only matched as a whole string value when checking for leaks:
# a short prompt ("cat") would otherwise match unrelated text.
_PROMPT_SUBSTRING_MIN = 12


def assetmint_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("assetmint")
    except PackageNotFoundError:
        return "0+unknown"


# --------------------------------------------------------------------------------------------------
# Signer


@dataclass
class SignerHandle:
    """A ready c2pa signer plus what AssetMint knows about it. Close it (or use ``with``) when done."""

    algorithm: str
    common_name: str
    is_development: bool
    chain_source: str  # where the chain came from, for messages ("file /x/chain.pem", "env SIGN_CHAIN", ...)
    key_source: str
    not_after: datetime
    fingerprint: str  # SHA-256 of the leaf certificate (DER), hex
    chain_pem: str = field(repr=False)
    trust_anchors: list[str]  # PEM files a reader should trust for assets this signer signs
    tsa_url: str | None = None
    thumbnail: bool = False
    _signer: Any = field(default=None, repr=False)
    _callback_error: BaseException | None = field(default=None, repr=False)

    @property
    def signer(self):
        """The underlying ``c2pa.Signer``."""
        if self._signer is None:
            raise ProvenanceError("the signer has been closed")
        return self._signer

    def close(self) -> None:
        if self._signer is not None:
            try:
                self._signer.close()
            except Exception:  # pragma: no cover - best effort release
                pass
            self._signer = None

    def __enter__(self) -> SignerHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_file(path_text: str, what: str) -> bytes:
    path = Path(path_text).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SigningConfigError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise SigningConfigError(f"{what} file {path} is a directory, not a file") from None
    except OSError as exc:
        raise SigningConfigError(f"{what} file {path} cannot be read: {exc.strerror or exc}") from None
    if not data.strip():
        raise SigningConfigError(f"{what} file {path} is empty")
    return data


def _read_env(name: str, what: str) -> bytes:
    value = os.environ.get(name)
    if value is None:
        raise SigningConfigError(f"{what} environment variable {name} is not set")
    if not value.strip():
        raise SigningConfigError(f"{what} environment variable {name} is empty")
    return value.encode("utf-8")


def _parse_chain(data: bytes, source: str):
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise SigningConfigError(f"certificate chain {source} is not a PEM certificate chain: {exc}") from None
    if not certs:
        raise SigningConfigError(f"certificate chain {source} contains no certificate")
    return certs


def _parse_private_key(data: bytes, source: str):
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningConfigError(
            f"private key {source} is encrypted; AssetMint needs an unencrypted PEM key "
            "(protect it with file permissions or a secret environment variable, or use a callback signer)"
        ) from None
    except Exception as exc:  # cryptography raises ValueError or UnsupportedAlgorithm
        raise SigningConfigError(f"private key {source} is not a usable PEM private key: {exc}") from None


def _common_name(cert) -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        return str(names[0].value)
    return cert.subject.rfc4514_string()


def _key_algorithm_problem(public_key, algorithm: str) -> str | None:
    """Why ``public_key`` cannot sign with ``algorithm``, or None when it can."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = f"EC {public_key.curve.name}"
        ok = algorithm == "es256" and public_key.curve.name == "secp256r1"
    elif isinstance(public_key, rsa.RSAPublicKey):
        kind = f"RSA {public_key.key_size}-bit"
        if algorithm == "ps256" and public_key.key_size < 2048:
            return f"an {kind} key is too small for ps256 (needs 2048 bits or more)"
        ok = algorithm == "ps256"
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        kind = "Ed25519"
        ok = algorithm == "ed25519"
    else:
        return f"its {type(public_key).__name__} key is not supported (es256: EC P-256, ps256: RSA, ed25519)"
    if ok:
        return None
    expected = {"es256": "EC P-256", "ps256": "RSA 2048+", "ed25519": "Ed25519"}[algorithm]
    return f"algorithm {algorithm} needs an {expected} key but the certificate has an {kind} key"


def check_certificate_chain(certs, algorithm: str, source: str, now: datetime | None = None) -> None:
    """Raise SigningConfigError when the chain cannot sign a c2pa manifest with ``algorithm``."""
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID

    now = now or datetime.now(UTC)
    leaf = certs[0]
    leaf_name = _common_name(leaf)

    for index, cert in enumerate(certs):
        which = "leaf certificate" if index == 0 else f"chain certificate {index + 1} ({_common_name(cert)})"
        if now < cert.not_valid_before_utc:
            raise SigningConfigError(
                f"{which} in {source} is not yet valid: valid from {cert.not_valid_before_utc.isoformat()}"
            )
        if now > cert.not_valid_after_utc:
            raise SigningConfigError(f"{which} in {source} expired on {cert.not_valid_after_utc.isoformat()}")

    if leaf.issuer == leaf.subject:
        raise SigningConfigError(
            f"leaf certificate {leaf_name!r} in {source} is self-signed; c2pa requires a signing certificate "
            "issued by a CA (chain: leaf first, then its issuers)"
        )
    for index in range(len(certs) - 1):
        try:
            certs[index].verify_directly_issued_by(certs[index + 1])
        except Exception:
            raise SigningConfigError(
                f"certificate chain in {source} is out of order or broken: certificate {index + 1} "
                f"({_common_name(certs[index])}) is not issued by certificate {index + 2} "
                f"({_common_name(certs[index + 1])}); put the leaf first, then each issuer"
            ) from None

    def ext(oid):
        try:
            return leaf.extensions.get_extension_for_oid(oid)
        except x509.ExtensionNotFound:
            return None

    basic = ext(ExtensionOID.BASIC_CONSTRAINTS)
    if basic is not None and basic.value.ca:
        raise SigningConfigError(f"leaf certificate {leaf_name!r} in {source} is a CA certificate (CA:true)")
    key_usage = ext(ExtensionOID.KEY_USAGE)
    if key_usage is None or not key_usage.value.digital_signature:
        raise SigningConfigError(
            f"leaf certificate {leaf_name!r} in {source} lacks KeyUsage digitalSignature, which c2pa requires"
        )
    eku = ext(ExtensionOID.EXTENDED_KEY_USAGE)
    eku_oids = {oid.dotted_string for oid in eku.value} if eku is not None else set()
    if not eku_oids & set(ACCEPTED_EKUS):
        found = ", ".join(sorted(eku_oids)) or "none"
        raise SigningConfigError(
            f"leaf certificate {leaf_name!r} in {source} lacks extended key usage emailProtection "
            f"({EKU_EMAIL_PROTECTION}), which c2pa requires (documentSigning or C2PA claimSigning also do); "
            f"found: {found}"
        )
    if ext(ExtensionOID.AUTHORITY_KEY_IDENTIFIER) is None:
        raise SigningConfigError(
            f"leaf certificate {leaf_name!r} in {source} lacks an Authority Key Identifier, which c2pa requires"
        )
    problem = _key_algorithm_problem(leaf.public_key(), algorithm)
    if problem:
        raise SigningConfigError(f"leaf certificate {leaf_name!r} in {source}: {problem}")


def _same_public_key(a, b) -> bool:
    from cryptography.hazmat.primitives import serialization

    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*fmt) == b.public_bytes(*fmt)


def _der_ecdsa_to_raw(signature: bytes, size: int = 32) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(signature)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _verify_with_certificate(leaf, algorithm: str, data: bytes, signature: bytes) -> None:
    """Verify a COSE-style signature (ECDSA as r||s) with the leaf's public key; raises on mismatch."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    public_key = leaf.public_key()
    if algorithm == "es256":
        if len(signature) != 64:
            raise ValueError(f"an es256 signature is 64 bytes (r||s), got {len(signature)}")
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        public_key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    elif algorithm == "ps256":
        public_key.verify(
            signature, data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
        )
    else:
        public_key.verify(signature, data)


def _load_callback(reference: str) -> Callable[[bytes], bytes]:
    import importlib

    module_name, _, attr_path = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise SigningConfigError(f"callback {reference}: cannot import module {module_name!r}: {exc}") from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SigningConfigError(f"callback {reference}: {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(target):
        raise SigningConfigError(f"callback {reference} is not callable")
    try:
        sign = target()
    except Exception as exc:
        raise SigningConfigError(f"callback {reference} failed while creating the signer: {exc}") from None
    if not callable(sign):
        raise SigningConfigError(
            f"callback {reference} must return a callable that signs bytes, got {type(sign).__name__}"
        )
    return sign


def _resolve_trust_anchor_files(paths: list[str]) -> list[str]:
    resolved = []
    for text in paths:
        path = Path(text).expanduser()
        _parse_chain(_read_file(str(path), "trust anchor"), f"trust anchor file {path}")
        resolved.append(str(path))
    return resolved


def load_signer(policy: SigningPolicy, dev_keys_dir: Path | None = None) -> SignerHandle:
    """Resolve the policy's certificate chain and key into a checked, ready signer.

    Everything that can be checked before signing is: files and variables exist and parse, the key belongs
    to the leaf certificate, every certificate is inside its validity period, the leaf has the c2pa profile
    (KeyUsage digitalSignature, EKU emailProtection, AKI, not a CA, issued by a CA) and a key type that
    matches ``policy.algorithm``. Each problem raises SigningConfigError naming the file or variable.
    """
    import c2pa
    from cryptography.hazmat.primitives import hashes, serialization

    from tasks.provenance import keys as dev

    algorithm = policy.algorithm
    is_development = policy.uses_development_keys
    trust_anchor_files = _resolve_trust_anchor_files(list(policy.trust_anchors))
    callback = None
    key = None

    if is_development:
        dev_keys, created = dev.ensure_dev_keys(dev_keys_dir, algorithm=algorithm)
        if created:
            print(
                f"AssetMint: created DEVELOPMENT signing keys in {dev_keys.directory} "
                "(untrusted for production; configure signing.certificate_chain for real deployments)",
                file=sys.stderr,
            )
        if dev_keys.algorithm != algorithm:
            raise SigningConfigError(
                f"the development keys in {dev_keys.directory} are {dev_keys.algorithm} but the signing policy "
                f"asks for {algorithm}: run `assetmint keys init --force --algorithm {algorithm}` "
                f"or set signing.algorithm: {dev_keys.algorithm}"
            )
        chain_source = f"file {dev_keys.chain}"
        key_source = f"file {dev_keys.key}"
        chain_data = _read_file(str(dev_keys.chain), "development certificate chain")
        key = _parse_private_key(_read_file(str(dev_keys.key), "development private key"), key_source)
        anchor = str(dev_keys.trust_anchor)
        if anchor not in trust_anchor_files:
            trust_anchor_files.append(anchor)
    else:
        # SigningPolicy guarantees exactly one chain source and exactly one key source here.
        if policy.certificate_chain:
            chain_source = f"file {Path(policy.certificate_chain).expanduser()}"
            chain_data = _read_file(policy.certificate_chain, "certificate chain")
        else:
            chain_source = f"environment variable {policy.certificate_chain_env}"
            chain_data = _read_env(str(policy.certificate_chain_env), "certificate chain")
        if policy.private_key:
            key_source = f"file {Path(policy.private_key).expanduser()}"
            key = _parse_private_key(_read_file(policy.private_key, "private key"), key_source)
        elif policy.private_key_env:
            key_source = f"environment variable {policy.private_key_env}"
            key = _parse_private_key(_read_env(policy.private_key_env, "private key"), key_source)
        else:
            key_source = f"callback {policy.callback}"
            callback = _load_callback(str(policy.callback))

    certs = _parse_chain(chain_data, chain_source)
    check_certificate_chain(certs, algorithm, chain_source)
    leaf = certs[0]
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs).decode("ascii")

    handle = SignerHandle(
        algorithm=algorithm,
        common_name=_common_name(leaf),
        is_development=is_development,
        chain_source=chain_source,
        key_source=key_source,
        not_after=leaf.not_valid_after_utc,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        chain_pem=chain_pem,
        trust_anchors=trust_anchor_files,
        tsa_url=policy.tsa_url,
        thumbnail=policy.thumbnail,
    )

    if key is not None:
        if not _same_public_key(key.public_key(), leaf.public_key()):
            raise SigningConfigError(
                f"private key in {key_source} does not match the leaf certificate "
                f"{handle.common_name!r} in {chain_source}"
            )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            info = c2pa.C2paSignerInfo(algorithm, chain_pem.encode("ascii"), key_pem, policy.tsa_url)
            handle._signer = c2pa.Signer.from_info(info)
        except Exception as exc:
            raise SigningConfigError(f"c2pa rejected the signer ({chain_source}, {key_source}): {exc}") from None
    else:
        sign_fn = _wrap_callback(callback, handle)
        probe = b"AssetMint signer check " + os.urandom(16)
        try:
            signature = sign_fn(probe)
        except Exception as exc:
            handle._callback_error = None
            raise SigningConfigError(f"{key_source} failed to sign a test message: {exc}") from None
        try:
            _verify_with_certificate(leaf, algorithm, probe, signature)
        except Exception as exc:
            raise SigningConfigError(
                f"{key_source} does not produce {algorithm} signatures that verify with the leaf certificate "
                f"{handle.common_name!r} in {chain_source} (wrong key, algorithm or signature format)"
                + (f": {exc}" if str(exc) else "")
            ) from None
        c2pa_alg = {
            "es256": c2pa.C2paSigningAlg.ES256,
            "ps256": c2pa.C2paSigningAlg.PS256,
            "ed25519": c2pa.C2paSigningAlg.ED25519,
        }[algorithm]
        try:
            handle._signer = c2pa.Signer.from_callback(sign_fn, c2pa_alg, chain_pem, policy.tsa_url)
        except Exception as exc:
            raise SigningConfigError(f"c2pa rejected the callback signer {key_source}: {exc}") from None

    if is_development:
        log.info("signing with the AssetMint DEVELOPMENT certificate %r (untrusted for production)", handle.common_name)
    return handle


def _wrap_callback(sign: Callable[[bytes], bytes], handle: SignerHandle) -> Callable[[bytes], bytes]:
    """Normalise a user signing callable: bytes out, ECDSA as r||s; remember its failure for messages."""
    algorithm = handle.algorithm

    def signer(data: bytes) -> bytes:
        try:
            signature = sign(data)
            if not isinstance(signature, (bytes, bytearray, memoryview)):
                raise TypeError(f"the signing callable returned {type(signature).__name__}, expected bytes")
            signature = bytes(signature)
            if algorithm == "es256" and len(signature) != 64 and signature[:1] == b"\x30":
                signature = _der_ecdsa_to_raw(signature)  # KMS/HSM APIs usually return DER
            return signature
        except BaseException as exc:
            handle._callback_error = exc
            raise

    return signer


# --------------------------------------------------------------------------------------------------
# Manifest definition


@dataclass(frozen=True)
class AssetFacts:
    """What the manifest says about the asset. ``generation`` is AssetMint's own assertion content."""

    asset_id: str
    model_name: str
    prompt: str
    generation: dict = field(default_factory=dict)
    title: str | None = None
    mime: str = "image/png"
    negative_prompt: str | None = None


@dataclass(frozen=True)
class WatermarkFacts:
    """The invisible watermark embedded in the pixels, written as the soft binding."""

    algorithm: str  # soft-binding algorithm label, e.g. "com.assetmint.imwatermark.dwtDctSvd"
    method: str  # e.g. "dwtDctSvd"
    payload_hex: str  # the embedded payload bits, hex
    key: str  # the short ledger key the payload resolves to


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_safe(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ProvenanceError(f"{where} is not JSON-serializable: {exc}") from None


def _numeric_array_path(value: Any, path: str = "$") -> str | None:
    """Path of the first non-empty array of numbers in ``value``, or None.

    c2pa-python 0.38 (c2pa-rs 0.91) writes a JSON array of numbers into CBOR as a byte string, truncating every
    element to a byte (``[256, 256]`` reads back as ``"AAA="``), so such arrays must not reach an assertion.
    """
    if isinstance(value, list):
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return path
        items = enumerate(value)
        return next((found for i, v in items if (found := _numeric_array_path(v, f"{path}[{i}]"))), None)
    if isinstance(value, dict):
        return next((found for k, v in value.items() if (found := _numeric_array_path(v, f"{path}.{k}"))), None)
    return None


def _find_text(value: Any, needle: str, path: str = "$") -> str | None:
    """Path of the first string (key or value) in ``value`` that is, or (for long needles) contains, ``needle``."""
    if isinstance(value, str):
        if value == needle or (len(needle) >= _PROMPT_SUBSTRING_MIN and needle in value):
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_text(str(key), needle, f"{path}.<key {key}>") or _find_text(item, needle, f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_text(item, needle, f"{path}[{index}]")
            if found:
                return found
    return None


def build_manifest_definition(asset: AssetFacts, policy: SigningPolicy, watermark: WatermarkFacts | None) -> dict:
    """The c2pa manifest definition (Builder JSON) for a generated asset."""
    mime = _check_mime(asset.mime)
    version = assetmint_version()

    generation = _json_safe(dict(asset.generation), "the generation assertion")
    numeric = _numeric_array_path(generation)
    if numeric:
        raise ProvenanceError(
            f"the generation assertion holds an array of numbers at {numeric}; c2pa stores those as byte strings "
            "and loses them: use an object (e.g. {width, height}) instead"
        )
    prompts = {"prompt": asset.prompt, "negative_prompt": asset.negative_prompt}
    for name, text in prompts.items():
        generation.pop(name, None)
        if text:
            generation[f"{name}_sha256"] = _sha256_text(text)
            if policy.include_prompt_text:
                generation[name] = text
    generation["asset_id"] = asset.asset_id
    generation.setdefault("model", {"name": asset.model_name})

    created: dict[str, Any] = {
        "action": "c2pa.created",
        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "softwareAgent": {"name": "AssetMint", "version": version},
        "description": f"Generated by AssetMint with model {asset.model_name}",
        "parameters": {"com.assetmint.model": asset.model_name},
    }
    actions: list[dict] = [created]
    assertions: list[dict] = []

    if watermark is not None:
        try:
            bytes.fromhex(watermark.payload_hex)
        except ValueError:
            raise ProvenanceError(f"watermark payload_hex {watermark.payload_hex!r} is not hexadecimal") from None
        if not watermark.algorithm:
            raise ProvenanceError("watermark algorithm label is empty")
        actions.append(
            {
                "action": "c2pa.watermarked",
                "softwareAgent": {"name": "AssetMint", "version": version},
                "description": f"Invisible watermark ({watermark.method}) embedded in the pixels",
                "parameters": {"com.assetmint.watermark.method": watermark.method},
            }
        )
        generation.setdefault(
            "watermark",
            {
                "algorithm": watermark.algorithm,
                "method": watermark.method,
                "payload_hex": watermark.payload_hex.lower(),
                "key": watermark.key,
            },
        )

    assertions.append({"label": "c2pa.actions", "data": {"actions": actions}})
    if watermark is not None:
        assertions.append(
            {
                "label": SOFT_BINDING_LABEL,
                "data": {
                    "alg": watermark.algorithm,
                    "blocks": [{"scope": {}, "value": watermark.payload_hex.lower()}],
                    "name": f"invisible watermark ({watermark.method}), payload as hex",
                    "pad": [],
                },
            }
        )
    entry: dict[str, Any] = {"use": policy.training_mining}
    if policy.training_mining == "constrained" and policy.training_mining_constraint:
        entry["constraint_info"] = policy.training_mining_constraint
    assertions.append(
        {"label": TRAINING_MINING_LABEL, "data": {"entries": {use: dict(entry) for use in TRAINING_MINING_USES}}}
    )
    assertions.append({"label": GENERATION_LABEL, "data": generation})

    definition = {
        "claim_generator_info": [{"name": "AssetMint", "version": version}],
        "title": asset.title or f"{asset.asset_id}.{MIME_EXTENSIONS[mime]}",
        "format": mime,
        "assertions": assertions,
    }
    if not policy.include_prompt_text:
        for name, text in prompts.items():
            if text:
                leak = _find_text(definition, text)
                if leak:
                    raise ProvenanceError(
                        f"the {name.replace('_', ' ')} text appears in the manifest at {leak} although the signing "
                        "policy has include_prompt_text: false; remove it from the generation data"
                    )
    return definition


# --------------------------------------------------------------------------------------------------
# Sign


def _check_mime(mime: str) -> str:
    normalized = (mime or "").strip().lower()
    if normalized not in SUPPORTED_MIME_TYPES:
        raise ProvenanceError(
            f"unsupported image format {mime!r} for signing; supported: {', '.join(SUPPORTED_MIME_TYPES)}"
        )
    return normalized


def sign_asset(image_bytes: bytes, mime: str, manifest_definition: dict, signer: SignerHandle) -> bytes:
    """Sign the manifest into the image bytes (in memory) and return the signed bytes."""
    import c2pa

    mime = _check_mime(mime)
    if not image_bytes:
        raise ProvenanceError("no image bytes to sign")
    actual = sniff_mime(image_bytes)
    if actual != mime:
        raise ProvenanceError(
            f"the image bytes are {actual or 'not a ' + SNIFFABLE + ' image'}, not {mime} as declared"
        )
    definition = dict(manifest_definition)
    declared = definition.setdefault("format", mime)
    if str(declared).lower() != mime:
        raise ProvenanceError(f"the manifest definition was built for {declared}, but the asset is signed as {mime}")
    settings = {
        "builder": {"thumbnail": {"enabled": bool(signer.thumbnail)}},
        "verify": {"verify_after_sign": False},
    }
    c2pa_signer = signer.signer
    signer._callback_error = None
    out = io.BytesIO()
    try:
        with c2pa.Context.from_dict(settings) as context:
            with c2pa.Builder(definition, context=context) as builder:
                builder.sign(c2pa_signer, mime, io.BytesIO(image_bytes), out)
    except Exception as exc:
        callback_error = signer._callback_error
        if callback_error is not None:
            signer._callback_error = None
            raise SigningConfigError(f"{signer.key_source} failed to sign: {callback_error}") from None
        raise ProvenanceError(f"signing the {mime} asset failed: {exc}") from None
    signed = out.getvalue()
    if not signed:
        raise ProvenanceError(f"signing the {mime} asset produced no bytes")
    return signed


# --------------------------------------------------------------------------------------------------
# Read and validate


ValidationState = Literal["Trusted", "Valid", "Invalid", "NoManifest"]


@dataclass
class ValidationReport:
    """What a reader learns from an asset's manifest store, with the trust anchors it was given."""

    state: ValidationState
    status_codes: list[str] = field(default_factory=list)  # failure codes, e.g. "assertion.dataHash.mismatch"
    active_manifest_label: str | None = None
    signer: str | None = None  # signing certificate common name
    signer_issuer: str | None = None  # the "issuer" c2pa reports (the signing certificate's organization)
    claim_generator: str | None = None  # "AssetMint/0.1.0"
    actions: list[dict] = field(default_factory=list)
    soft_binding: dict | None = None
    generation_assertion: dict | None = None
    training_mining: dict | None = None
    manifest_store_json: dict = field(default_factory=dict)

    @property
    def is_trusted(self) -> bool:
        return self.state == "Trusted"

    @property
    def has_manifest(self) -> bool:
        return self.state != "NoManifest"

    def to_dict(self) -> dict:
        return {
            "state": self.state,
            "status_codes": list(self.status_codes),
            "active_manifest_label": self.active_manifest_label,
            "signer": self.signer,
            "signer_issuer": self.signer_issuer,
            "claim_generator": self.claim_generator,
            "actions": self.actions,
            "soft_binding": self.soft_binding,
            "generation_assertion": self.generation_assertion,
            "training_mining": self.training_mining,
        }


def _anchor_pem_text(trust_anchors) -> str:
    """Concatenated PEM text of the trust anchors (paths to PEM files, or PEM text itself)."""
    from cryptography.hazmat.primitives import serialization

    parts = []
    for item in trust_anchors or []:
        text = str(item)
        if "-----BEGIN CERTIFICATE-----" in text:
            data, source = text.encode("ascii", "replace"), "trust anchor PEM text"
        else:
            data, source = _read_file(text, "trust anchor"), f"trust anchor file {Path(text).expanduser()}"
        for cert in _parse_chain(data, source):
            parts.append(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return "".join(parts)


def _failure_codes(store: dict) -> list[str]:
    codes: list[str] = []
    for status in store.get("validation_status") or []:
        code = status.get("code")
        if code and code not in codes:
            codes.append(code)
    results = store.get("validation_results") or {}
    for status in (results.get("activeManifest") or {}).get("failure") or []:
        code = status.get("code")
        if code and code not in codes:
            codes.append(code)
    for delta in results.get("ingredientDeltas") or []:
        for status in (delta.get("validationDeltas") or {}).get("failure") or []:
            code = status.get("code")
            if code and code not in codes:
                codes.append(code)
    return codes


def _report_from_store(store: dict) -> ValidationReport:
    codes = _failure_codes(store)
    state = store.get("validation_state")
    if state not in ("Trusted", "Valid", "Invalid"):
        # Older stores carry no validation_state: only an untrusted signer is compatible with Valid.
        state = "Valid" if set(codes) <= {UNTRUSTED_CODE} else "Invalid"
    label = store.get("active_manifest")
    manifest = (store.get("manifests") or {}).get(label) or {}
    signature = manifest.get("signature_info") or {}

    actions: list[dict] = []
    soft_binding = generation = training = None
    for assertion in manifest.get("assertions") or []:
        name = assertion.get("label") or ""
        data = assertion.get("data")
        if _ACTIONS_LABEL_RE.match(name):
            actions.extend((data or {}).get("actions") or [])
        elif _SOFT_BINDING_LABEL_RE.match(name):
            soft_binding = soft_binding or data
        elif name == GENERATION_LABEL:
            generation = data
        elif name == TRAINING_MINING_LABEL:
            training = data

    claim_generator = manifest.get("claim_generator")
    infos = manifest.get("claim_generator_info") or []
    if not claim_generator and infos:
        first = infos[0]
        claim_generator = first.get("name")
        if claim_generator and first.get("version"):
            claim_generator = f"{claim_generator}/{first['version']}"

    return ValidationReport(
        state=state,
        status_codes=codes,
        active_manifest_label=label,
        signer=signature.get("common_name") or signature.get("issuer"),
        signer_issuer=signature.get("issuer"),
        claim_generator=claim_generator,
        actions=actions,
        soft_binding=soft_binding,
        generation_assertion=generation,
        training_mining=training,
        manifest_store_json=store,
    )


def read_and_validate(signed: bytes, mime: str, trust_anchors: list[Path] | list[str]) -> ValidationReport:
    """Read the manifest store of ``signed`` and validate it, trusting exactly ``trust_anchors``.

    No manifest gives state "NoManifest"; bytes the library cannot parse as an image raise ProvenanceError.
    """
    import c2pa

    if not signed:
        raise ProvenanceError("no bytes to read: the asset is empty")
    anchors = _anchor_pem_text(trust_anchors)
    settings: dict[str, Any] = {
        "verify": {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False},
    }
    if anchors:
        settings["trust"] = {"trust_anchors": anchors}
    try:
        with c2pa.Context.from_dict(settings) as context:
            try:
                reader = c2pa.Reader(mime, io.BytesIO(signed), context=context)
            except c2pa.C2paError.ManifestNotFound:
                return ValidationReport(state="NoManifest")
            with reader:
                store = json.loads(reader.json())
    except AssetMintError:
        raise
    except Exception as exc:
        raise ProvenanceError(f"cannot read the Content Credentials of the {mime} asset: {exc}") from None
    return _report_from_store(store)


def accepted_states(require_trusted: bool) -> tuple[str, ...]:
    """The validation states a credential may have to be accepted: Trusted, plus Valid unless trust is required."""
    return ("Trusted",) if require_trusted else ("Trusted", "Valid")


def sign_and_validate(
    image_bytes: bytes,
    mime: str,
    manifest_definition: dict,
    signer: SignerHandle,
    require_trusted: bool = True,
    trust_anchors: list[Path] | list[str] | None = None,
) -> tuple[bytes, ValidationReport, str]:
    """Sign, read the signed bytes back, validate; return (signed bytes, report, sha256 hex of those bytes).

    Raises ProvenanceError unless the state is Trusted (or, with ``require_trusted=False``, Valid), the
    signer is the one configured and the generation assertion reads back as written. ``trust_anchors``
    defaults to the signer's (the policy's anchors plus the development root for development keys).
    """
    signed = sign_asset(image_bytes, mime, manifest_definition, signer)
    anchors = signer.trust_anchors if trust_anchors is None else trust_anchors
    report = read_and_validate(signed, mime, anchors)
    allowed = accepted_states(require_trusted)
    if report.state not in allowed:
        hint = ""
        if report.state == "Valid" and UNTRUSTED_CODE in report.status_codes:
            hint = (
                "; the signing chain's root is not among the trust anchors "
                f"({', '.join(map(str, anchors)) or 'none configured'}): add it to signing.trust_anchors"
            )
        codes = ", ".join(report.status_codes) or "no failure codes"
        raise ProvenanceError(
            f"the signed {mime} asset did not validate as {' or '.join(allowed)}: state {report.state} ({codes}){hint}"
        )
    if report.signer != signer.common_name:
        raise ProvenanceError(
            f"the signed asset reads back signed by {report.signer!r}, expected {signer.common_name!r}"
        )
    expected_generation = next(
        (a.get("data") for a in manifest_definition.get("assertions", []) if a.get("label") == GENERATION_LABEL),
        None,
    )
    if expected_generation is not None and report.generation_assertion != _json_safe(
        expected_generation, "the generation assertion"
    ):
        raise ProvenanceError("the generation assertion reads back different from what was signed")
    return signed, report, hashlib.sha256(signed).hexdigest()
