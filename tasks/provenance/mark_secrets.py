"""Watermark MAC secrets: the keys of the watermark's check bits, where they come from and how they rotate.

The watermark carries an asset key and a truncated MAC over it; without the secret nobody can write a mark that
resolves. The current secret marks and decodes; retired secrets only decode, so assets marked before a rotation
still resolve. A secret is known by its fingerprint (16 hex digits of a domain-separated SHA-256), which can be
logged and stored without revealing it.

Sources: ``signing.watermark_secret`` (a file) or ``signing.watermark_secret_env`` (an environment variable), plus
``signing.retired_watermark_secrets`` (files). Without configuration, the development secret in the development
keys directory (``tasks.provenance.keys.default_keys_dir()`` unless told otherwise):

- ``watermark.secret``: the current secret, created on first use, mode 0600 from the moment it exists.
- ``watermark.secret.retired-<fingerprint>``: secrets that ``rotate_dev_secret`` retired.

A secret file holds one secret as hex text (``openssl rand -hex 32``); it is refused when group or others can
access it, as ssh refuses a private key.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from policies.signing import SigningPolicy
from tasks.core.errors import SigningConfigError
from tasks.core.files import create_only
from tasks.provenance.keys import default_keys_dir, write_private_file

log = logging.getLogger(__name__)

DEV_SECRET_FILE = "watermark.secret"
RETIRED_PREFIX = DEV_SECRET_FILE + ".retired-"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
MAX_FILE_BYTES = 4096
_FINGERPRINT_DOMAIN = b"AssetMint watermark secret fingerprint v1\x00"
_HOW_TO_MAKE = f"write {SECRET_BYTES} random bytes as hex, e.g. `openssl rand -hex {SECRET_BYTES}`"


@dataclass(frozen=True)
class MarkSecret:
    """One watermark MAC secret and its fingerprint (the secret never appears in repr)."""

    secret: bytes = field(repr=False)
    fingerprint: str

    @classmethod
    def from_bytes(cls, secret: bytes) -> MarkSecret:
        """The secret with its fingerprint computed."""
        return cls(secret, fingerprint_of(secret))


@dataclass(frozen=True)
class MarkSecrets:
    """The current secret (marks and decodes) and the retired ones (decode only)."""

    current: MarkSecret
    retired: tuple[MarkSecret, ...] = ()

    @property
    def all(self) -> tuple[MarkSecret, ...]:
        """Every secret that may decode a mark, the current one first."""
        return (self.current, *self.retired)

    def by_fingerprint(self, fingerprint: str) -> MarkSecret | None:
        """The secret with this fingerprint, or None when it is neither current nor retired here."""
        return next((s for s in self.all if s.fingerprint == fingerprint.lower()), None)


def fingerprint_of(secret: bytes) -> str:
    """First 16 hex digits of SHA-256 over a domain-separated prefix and the secret."""
    return hashlib.sha256(_FINGERPRINT_DOMAIN + secret).hexdigest()[:16]


def dev_secret_path(keys_dir: Path | None = None) -> Path:
    """Where the development watermark secret lives."""
    return (Path(keys_dir) if keys_dir is not None else default_keys_dir()) / DEV_SECRET_FILE


def load_mark_secrets(policy: SigningPolicy, keys_dir: Path | None = None, create: bool = True) -> MarkSecrets:
    """The policy's watermark secrets; the development secret (created when ``create``) when none is configured."""
    directory = Path(keys_dir) if keys_dir is not None else default_keys_dir()
    if policy.watermark_secret:
        current = _read_file(Path(policy.watermark_secret).expanduser(), "watermark secret")
    elif policy.watermark_secret_env:
        current = _read_env(policy.watermark_secret_env)
    else:
        current = _dev_current(directory, create)
        if not policy.uses_development_keys:
            log.warning(
                "a production certificate signs but the DEVELOPMENT watermark secret in %s keys the watermark: "
                "set signing.watermark_secret or signing.watermark_secret_env so every machine uses the same secret",
                directory,
            )
    retired = [
        _read_file(Path(path).expanduser(), "retired watermark secret") for path in policy.retired_watermark_secrets
    ]
    if policy.uses_development_watermark_secret:
        retired.extend(_dev_retired(directory))
    return _combine(current, retired)


def rotate_dev_secret(keys_dir: Path | None = None) -> MarkSecrets:
    """Replace the development secret with a new one, keeping the old one as a retired secret."""
    directory = Path(keys_dir) if keys_dir is not None else default_keys_dir()
    path = directory / DEV_SECRET_FILE
    _make_dir(directory)
    try:
        lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise SigningConfigError(f"cannot open the keys directory {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one rotation at a time, so no new secret is replaced unretired
        old = _read_file(path, "development watermark secret") if os.path.lexists(path) else None
        new = MarkSecret.from_bytes(secrets.token_bytes(SECRET_BYTES))
        try:
            if old is not None:
                # Retire first: a crash in between leaves the old secret current and retired, never lost.
                retired_path = directory / f"{RETIRED_PREFIX}{old.fingerprint}"
                if not create_only(retired_path, _hex(old), mode=0o600):
                    _read_file(retired_path, "retired development watermark secret")
            write_private_file(path, _hex(new))
        except OSError as exc:
            raise SigningConfigError(f"cannot rotate the development watermark secret in {directory}: {exc}") from None
    finally:
        os.close(lock)
    return _combine(new, ([old] if old else []) + _dev_retired(directory))  # the one just retired first


def _combine(current: MarkSecret, retired: list[MarkSecret]) -> MarkSecrets:
    seen = {current.fingerprint}
    unique = []
    for secret in retired:
        if secret.fingerprint not in seen:
            seen.add(secret.fingerprint)
            unique.append(secret)
    return MarkSecrets(current, tuple(unique))


def _hex(secret: MarkSecret) -> bytes:
    return secret.secret.hex().encode("ascii") + b"\n"


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SigningConfigError(f"cannot create the keys directory {directory}: {exc.strerror or exc}") from None


def _dev_current(directory: Path, create: bool) -> MarkSecret:
    path = directory / DEV_SECRET_FILE
    if not os.path.lexists(path):
        if not create:
            raise SigningConfigError(
                f"no development watermark secret in {directory}: the first run creates it, "
                "or run `assetmint keys rotate-watermark-secret`"
            )
        _make_dir(directory)
        secret = MarkSecret.from_bytes(secrets.token_bytes(SECRET_BYTES))
        try:
            created = create_only(path, _hex(secret), mode=0o600)
        except OSError as exc:
            raise SigningConfigError(f"cannot create the development watermark secret {path}: {exc}") from None
        if created:
            print(
                f"AssetMint: created a DEVELOPMENT watermark secret in {path} (fingerprint {secret.fingerprint}; "
                "configure signing.watermark_secret for real deployments)",
                file=sys.stderr,
            )
            return secret
    return _read_file(path, "development watermark secret")


def _dev_retired(directory: Path) -> list[MarkSecret]:
    """The retired development secrets, the most recently created first."""
    try:
        paths = [p for p in directory.iterdir() if p.name.startswith(RETIRED_PREFIX)]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SigningConfigError(f"cannot list the keys directory {directory}: {exc.strerror or exc}") from None
    paths.sort(key=lambda p: (-p.lstat().st_mtime, p.name))
    found = []
    for path in paths:
        secret = _read_file(path, "retired development watermark secret")
        named = path.name.removeprefix(RETIRED_PREFIX)
        if named != secret.fingerprint:
            raise SigningConfigError(
                f"retired development watermark secret file {path} holds the secret with fingerprint "
                f"{secret.fingerprint}, not {named}: rename it to {RETIRED_PREFIX}{secret.fingerprint}"
            )
        found.append(secret)
    return found


def _read_file(path: Path, what: str) -> MarkSecret:
    source = f"{what} file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except FileNotFoundError:
        raise SigningConfigError(f"{source} does not exist") from None
    except OSError as exc:
        raise SigningConfigError(f"{source} cannot be read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SigningConfigError(f"{source} is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise SigningConfigError(f"{source} is not a regular file")
        if mode & 0o077:
            raise SigningConfigError(
                f"{source} can be accessed by group or others (mode {stat.S_IMODE(mode):04o}); a secret must be "
                f"private to its owner: run `chmod 600 {path}`"
            )
        data = b""
        while len(data) <= MAX_FILE_BYTES and (chunk := os.read(fd, MAX_FILE_BYTES + 1 - len(data))):
            data += chunk
    except OSError as exc:
        raise SigningConfigError(f"{source} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise SigningConfigError(f"{source} is larger than {MAX_FILE_BYTES} bytes; it must hold one secret as hex text")
    return _parse(data, source)


def _read_env(name: str) -> MarkSecret:
    value = os.environ.get(name)
    if value is None:
        raise SigningConfigError(f"watermark secret environment variable {name} is not set")
    return _parse(value.encode("utf-8"), f"watermark secret environment variable {name}")


def _parse(data: bytes, source: str) -> MarkSecret:
    """One secret from hex text (whitespace tolerated); the error never quotes the text."""
    digits = b"".join(data.split())
    if not digits:
        raise SigningConfigError(f"{source} is empty: {_HOW_TO_MAKE}")
    try:
        secret = bytes.fromhex(digits.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise SigningConfigError(
            f"{source} is not hex text (an even number of the digits 0-9, a-f): {_HOW_TO_MAKE}"
        ) from None
    if len(secret) < MIN_SECRET_BYTES:
        raise SigningConfigError(
            f"{source} holds {len(secret)} bytes; a watermark secret needs at least {MIN_SECRET_BYTES}: {_HOW_TO_MAKE}"
        )
    return MarkSecret.from_bytes(secret)
