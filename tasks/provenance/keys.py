"""Development certificate chain for C2PA signing.

A fresh machine has no signing certificate, so AssetMint creates a development chain on first use: a
self-signed root CA and a leaf signing certificate issued by it, with the certificate profile c2pa
requires (KeyUsage digitalSignature critical, Authority and Subject Key Identifiers, EKU
emailProtection, not a CA). Both certificates say plainly, in their subject names, that they are
untrusted for production. The root's private key is discarded after issuing the leaf; the root
certificate is kept as the trust anchor a reader needs to report the development chain as Trusted.

Files, in ``tasks.core.paths.config_dir() / "keys"`` unless told otherwise:

- ``chain.pem``: the leaf certificate then the root certificate (PEM), as c2pa expects.
- ``signer.key``: the leaf's private key (PKCS#8 PEM), mode 0600 from the moment it exists.
- ``root-ca.pem``: the root CA certificate, the trust anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.errors import SigningConfigError
from tasks.core.files import write_atomic
from tasks.core.paths import config_dir

if TYPE_CHECKING:  # pragma: no cover
    from cryptography import x509

CHAIN_FILE = "chain.pem"
KEY_FILE = "signer.key"
TRUST_ANCHOR_FILE = "root-ca.pem"

DEV_SIGNER_NAME = "AssetMint DEVELOPMENT signer - untrusted for production"
DEV_ROOT_NAME = "AssetMint DEVELOPMENT root CA - untrusted for production"
DEV_ORGANIZATION = "AssetMint DEVELOPMENT - untrusted for production"

ALGORITHMS = ("es256", "ps256", "ed25519")

LEAF_VALIDITY = timedelta(days=2 * 365)
ROOT_VALIDITY = timedelta(days=10 * 365)
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class DevKeys:
    """Where a development signing chain lives and what it is."""

    chain: Path
    key: Path
    trust_anchor: Path
    algorithm: str
    subject: str
    not_after: datetime
    fingerprint: str  # SHA-256 of the leaf certificate (DER), lowercase hex

    @property
    def directory(self) -> Path:
        return self.chain.parent


def default_keys_dir() -> Path:
    """Where development keys live unless a directory is given."""
    return config_dir() / "keys"


def _paths(directory: Path) -> tuple[Path, Path, Path]:
    return directory / CHAIN_FILE, directory / KEY_FILE, directory / TRUST_ANCHOR_FILE


def _new_private_key(algorithm: str):
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if algorithm == "es256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ps256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise SigningConfigError(f"unsupported signing algorithm {algorithm!r}; allowed: {', '.join(ALGORITHMS)}")


def _cert_hash(private_key):
    """The digest to sign a certificate with: None for Ed25519, SHA-256 otherwise."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return None
    return hashes.SHA256()


def build_chain(
    algorithm: str = "es256",
    *,
    leaf_name: str = DEV_SIGNER_NAME,
    root_name: str = DEV_ROOT_NAME,
    organization: str = DEV_ORGANIZATION,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    email_protection: bool = True,
    digital_signature: bool = True,
):
    """Create a root CA and a leaf signing certificate; return (leaf_key, leaf_cert, root_key, root_cert).

    The keyword arguments exist so tests can build deliberately broken chains (expired, no EKU) with the
    same code that builds the good one.
    """
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    root_key = _new_private_key(algorithm)
    leaf_key = _new_private_key(algorithm)
    root_subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, root_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )
    leaf_subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, leaf_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root_cert = (
        x509.CertificateBuilder()
        .subject_name(root_subject)
        .issuer_name(root_subject)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(root_ski, critical=False)
        .sign(root_key, _cert_hash(root_key))
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf_subject)
        .issuer_name(root_subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or (now - CLOCK_SKEW))
        .not_valid_after(not_after or (now + LEAF_VALIDITY))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=not digital_signature,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
    )
    eku = [ExtendedKeyUsageOID.EMAIL_PROTECTION] if email_protection else [ExtendedKeyUsageOID.CODE_SIGNING]
    builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    leaf_cert = builder.sign(root_key, _cert_hash(root_key))
    return leaf_key, leaf_cert, root_key, root_cert


def cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(private_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def algorithm_for_key(public_or_private_key) -> str | None:
    """The signing algorithm name AssetMint uses for a key type (P-256 -> es256, RSA -> ps256, ...)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    key = public_or_private_key
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(key.curve.name)
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "ps256"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    return None


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically through a file created with mode 0600 (never wider)."""
    write_atomic(path, data, mode=0o600, durable=True)


def _write_public_file(path: Path, data: bytes) -> None:
    write_atomic(path, data, mode=0o644)


def init_dev_keys(directory: Path | None = None, force: bool = False, algorithm: str = "es256") -> DevKeys:
    """Create the development chain in ``directory`` (default: config dir / keys).

    Refuses (SigningConfigError) when any of the files already exists, unless ``force``.
    """
    algorithm = algorithm.lower()
    if algorithm not in ALGORITHMS:
        raise SigningConfigError(f"unsupported signing algorithm {algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
    directory = Path(directory) if directory is not None else default_keys_dir()
    chain_path, key_path, anchor_path = _paths(directory)
    existing = [p for p in (chain_path, key_path, anchor_path) if p.exists()]
    if existing and not force:
        raise SigningConfigError(
            f"development keys already exist in {directory} ({', '.join(p.name for p in existing)}); "
            "use `assetmint keys init --force` (force=True) to replace them"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SigningConfigError(f"cannot create the keys directory {directory}: {exc}") from exc

    leaf_key, leaf_cert, _root_key, root_cert = build_chain(algorithm)
    try:
        # Key first: a chain without its key is useless, a key without the chain is harmless.
        write_private_file(key_path, key_pem(leaf_key))
        _write_public_file(chain_path, cert_pem(leaf_cert) + cert_pem(root_cert))
        _write_public_file(anchor_path, cert_pem(root_cert))
    except OSError as exc:
        raise SigningConfigError(f"cannot write development keys to {directory}: {exc}") from exc
    return _describe(chain_path, key_path, anchor_path, leaf_cert, algorithm)


def ensure_dev_keys(directory: Path | None = None, algorithm: str = "es256") -> tuple[DevKeys, bool]:
    """Return the development keys, creating them (with ``algorithm``) if none exist.

    The bool says whether they were created now. Existing keys are returned as they are, whatever their
    algorithm; a partial set (some files missing) is an error, not something to paper over.
    """
    directory = Path(directory) if directory is not None else default_keys_dir()
    chain_path, key_path, anchor_path = _paths(directory)
    if not any(p.exists() for p in (chain_path, key_path, anchor_path)):
        return init_dev_keys(directory, algorithm=algorithm), True
    return show_dev_keys(directory), False


def show_dev_keys(directory: Path | None = None) -> DevKeys:
    """Read back the development chain's description; SigningConfigError when it is missing or unreadable."""
    from cryptography import x509

    directory = Path(directory) if directory is not None else default_keys_dir()
    chain_path, key_path, anchor_path = _paths(directory)
    missing = [p.name for p in (chain_path, key_path, anchor_path) if not p.is_file()]
    if missing:
        raise SigningConfigError(
            f"no development signing keys in {directory} (missing {', '.join(missing)}); run `assetmint keys init`"
        )
    try:
        certs = x509.load_pem_x509_certificates(chain_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SigningConfigError(f"cannot read the development chain {chain_path}: {exc}") from exc
    leaf = certs[0]
    return _describe(chain_path, key_path, anchor_path, leaf, algorithm_for_key(leaf.public_key()) or "unknown")


def _describe(chain_path: Path, key_path: Path, anchor_path: Path, leaf, algorithm: str) -> DevKeys:
    from cryptography.hazmat.primitives import hashes

    return DevKeys(
        chain=chain_path,
        key=key_path,
        trust_anchor=anchor_path,
        algorithm=algorithm,
        subject=leaf.subject.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
    )
