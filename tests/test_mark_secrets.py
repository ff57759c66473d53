"""Watermark MAC secrets: the development secret, rotation, file and environment configuration, refusals."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from cli.main import main
from conftest import write
from policies.model import load_policy
from policies.signing import SigningPolicy
from tasks.core.errors import SigningConfigError
from tasks.provenance.keys import init_dev_keys
from tasks.provenance.mark_secrets import (
    DEV_SECRET_FILE,
    RETIRED_PREFIX,
    MarkSecret,
    fingerprint_of,
    load_mark_secrets,
    rotate_dev_secret,
)

DEV = SigningPolicy()
SECRET = bytes(range(32))


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_development_secret_is_created_once_0600_even_with_a_permissive_umask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = os.umask(0)
    try:
        first = load_mark_secrets(DEV, tmp_path / "keys")
    finally:
        os.umask(old)
    path = tmp_path / "keys" / DEV_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert len(first.current.secret) == 32 and first.retired == ()
    assert bytes.fromhex(path.read_text()) == first.current.secret
    assert f"created a DEVELOPMENT watermark secret in {path}" in capsys.readouterr().err
    assert os.listdir(path.parent) == [DEV_SECRET_FILE]  # no temporary file left behind

    assert load_mark_secrets(DEV, tmp_path / "keys") == first
    assert "created" not in capsys.readouterr().err


def test_the_default_directory_is_the_development_keys_directory(tmp_path: Path) -> None:
    keys = init_dev_keys()  # conftest points ASSETMINT_CONFIG_DIR at tmp_path / "config"
    created = load_mark_secrets(DEV)
    assert (keys.directory / DEV_SECRET_FILE).is_file()
    assert keys.directory == tmp_path / "config" / "keys"
    assert load_mark_secrets(DEV, keys.directory) == created


def test_without_create_a_missing_secret_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(SigningConfigError, match="no development watermark secret in .*rotate-watermark-secret"):
        load_mark_secrets(DEV, tmp_path / "keys", create=False)
    assert not (tmp_path / "keys").exists()


def test_rotation_keeps_the_old_secret_as_retired(tmp_path: Path) -> None:
    first = load_mark_secrets(DEV, tmp_path).current
    second = rotate_dev_secret(tmp_path)
    assert second.current != first and second.retired == (first,)
    retired_file = tmp_path / f"{RETIRED_PREFIX}{first.fingerprint}"
    assert stat.S_IMODE(retired_file.stat().st_mode) == 0o600
    assert load_mark_secrets(DEV, tmp_path) == second

    third = rotate_dev_secret(tmp_path)
    assert third.retired == (second.current, first)
    assert third.all == (third.current, second.current, first)
    assert third.by_fingerprint(first.fingerprint) == first
    assert third.by_fingerprint(first.fingerprint.upper()) == first
    assert third.by_fingerprint("0" * 16) is None
    assert load_mark_secrets(DEV, tmp_path) == third
    assert sorted(os.listdir(tmp_path)) == sorted(
        [DEV_SECRET_FILE, retired_file.name, f"{RETIRED_PREFIX}{second.current.fingerprint}"]
    )


def test_rotating_without_a_secret_creates_one(tmp_path: Path) -> None:
    marks = rotate_dev_secret(tmp_path / "keys")
    assert marks.retired == ()
    assert load_mark_secrets(DEV, tmp_path / "keys", create=False) == marks


def test_a_retired_file_whose_name_lies_is_refused(tmp_path: Path) -> None:
    load_mark_secrets(DEV, tmp_path)
    secret_file(tmp_path / f"{RETIRED_PREFIX}0123456789abcdef", SECRET.hex())
    with pytest.raises(SigningConfigError, match=f"fingerprint {fingerprint_of(SECRET)}, not 0123456789abcdef"):
        load_mark_secrets(DEV, tmp_path)


def test_fingerprints_are_stable_short_and_do_not_reveal_the_secret() -> None:
    secret = MarkSecret.from_bytes(SECRET)
    assert secret.fingerprint == fingerprint_of(SECRET) == MarkSecret.from_bytes(bytes(range(32))).fingerprint
    assert len(secret.fingerprint) == 16 and int(secret.fingerprint, 16) >= 0
    assert secret.fingerprint != fingerprint_of(bytes(range(1, 33)))
    # domain-separated: not a prefix of the plain SHA-256 of the secret, and the secret is not in its repr
    assert not hashlib.sha256(SECRET).hexdigest().startswith(secret.fingerprint)
    assert SECRET.hex() not in repr(secret) and str(SECRET) not in repr(secret)
    # pinned, so a change of the fingerprint scheme (which the ledger stores) is a deliberate one
    assert (
        secret.fingerprint == hashlib.sha256(b"AssetMint watermark secret fingerprint v1\x00" + SECRET).hexdigest()[:16]
    )


def test_a_configured_file_and_retired_files(tmp_path: Path) -> None:
    current = secret_file(tmp_path / "wm.hex", f"  {SECRET.hex()[:32]}\n {SECRET.hex()[32:]} \n")
    old = os.urandom(16)
    retired = secret_file(tmp_path / "old.hex", old.hex().upper())
    policy = SigningPolicy(watermark_secret=str(current), retired_watermark_secrets=[str(retired), str(current)])
    marks = load_mark_secrets(policy, tmp_path / "keys")
    assert marks.current == MarkSecret.from_bytes(SECRET)
    assert marks.retired == (MarkSecret.from_bytes(old),)  # the current one is not listed again
    assert not (tmp_path / "keys").exists()  # no development secret made or read


def test_an_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_WM_SECRET", SECRET.hex() + "\n")
    marks = load_mark_secrets(SigningPolicy(watermark_secret_env="AM_WM_SECRET"), tmp_path / "keys")
    assert marks == load_mark_secrets(SigningPolicy(watermark_secret_env="AM_WM_SECRET"), tmp_path / "keys")
    assert marks.current.secret == SECRET and marks.retired == ()
    assert not (tmp_path / "keys").exists()


def test_a_policy_file_resolves_secret_paths_against_its_folder(tmp_path: Path) -> None:
    secret_file(tmp_path / "wm.hex", SECRET.hex())
    secret_file(tmp_path / "old.hex", bytes(16).hex())
    policy = write(
        tmp_path / "policy.yaml",
        "signing: {watermark_secret: wm.hex, retired_watermark_secrets: [old.hex]}\n",
    )
    signing = load_policy(policy).signing
    assert signing.watermark_secret == str(tmp_path / "wm.hex")
    assert load_mark_secrets(signing).current.secret == SECRET


@pytest.mark.parametrize(
    "text, mode, problem",
    [
        ("", 0o600, "is empty"),
        ("  \n", 0o600, "is empty"),
        ("zz" * 32, 0o600, "is not hex text"),
        ("abc", 0o600, "is not hex text"),
        ("é" * 32, 0o600, "is not hex text"),
        ("00" * 15, 0o600, "holds 15 bytes; a watermark secret needs at least 16"),
        ("00" * 4097, 0o600, "is larger than 4096 bytes"),
        (SECRET.hex(), 0o644, r"can be accessed by group or others \(mode 0644\).*run `chmod 600 .*wm.hex`"),
        (SECRET.hex(), 0o640, r"can be accessed by group or others \(mode 0640\)"),
        (SECRET.hex(), 0o602, r"can be accessed by group or others \(mode 0602\)"),
    ],
)
def test_a_bad_secret_file_is_refused_naming_file_and_problem(
    tmp_path: Path, text: str, mode: int, problem: str
) -> None:
    path = secret_file(tmp_path / "wm.hex", text, mode)
    with pytest.raises(SigningConfigError, match=rf"^watermark secret file {re.escape(str(path))} {problem}") as caught:
        load_mark_secrets(SigningPolicy(watermark_secret=str(path)))
    if mode == 0o600:
        assert "openssl rand -hex 32" in str(caught.value) or "larger" in str(caught.value)
    assert "zz" * 2 not in str(caught.value)  # the text is never quoted


def test_a_missing_unreadable_or_odd_secret_file_is_refused(tmp_path: Path) -> None:
    def refused(path: Path, problem: str) -> None:
        with pytest.raises(SigningConfigError, match=rf"^watermark secret file {re.escape(str(path))} {problem}"):
            load_mark_secrets(SigningPolicy(watermark_secret=str(path)))

    refused(tmp_path / "absent.hex", "does not exist")
    (tmp_path / "folder").mkdir(mode=0o700)
    refused(tmp_path / "folder", "is a directory, not a file")
    os.mkfifo(tmp_path / "fifo", 0o600)
    refused(tmp_path / "fifo", "is not a regular file")
    if os.geteuid() != 0:  # root reads anything
        refused(secret_file(tmp_path / "locked.hex", SECRET.hex(), 0o000), "cannot be read: Permission denied")


def test_a_bad_retired_or_development_secret_is_refused(tmp_path: Path) -> None:
    retired = secret_file(tmp_path / "old.hex", "not a secret")
    with pytest.raises(
        SigningConfigError, match=rf"^retired watermark secret file {re.escape(str(retired))} is not hex text"
    ):
        load_mark_secrets(SigningPolicy(retired_watermark_secrets=[str(retired)]), tmp_path / "keys")
    load_mark_secrets(DEV, tmp_path / "keys")
    path = tmp_path / "keys" / DEV_SECRET_FILE
    path.chmod(0o644)
    with pytest.raises(
        SigningConfigError, match=rf"^development watermark secret file {re.escape(str(path))} .*chmod 600"
    ):
        load_mark_secrets(DEV, tmp_path / "keys")
    with pytest.raises(SigningConfigError, match="chmod 600"):
        rotate_dev_secret(tmp_path / "keys")


@pytest.mark.parametrize(
    "value, problem",
    [
        (None, "is not set"),
        ("", "is empty"),
        ("nothex", "is not hex text"),
        ("ab" * 16 + "\n", None),
        ("ab" * 15, "holds 15 bytes"),
    ],
)
def test_a_bad_environment_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str | None, problem: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("AM_WM_SECRET", raising=False)
    else:
        monkeypatch.setenv("AM_WM_SECRET", value)
    policy = SigningPolicy(watermark_secret_env="AM_WM_SECRET")
    if problem is None:  # 16 bytes is the least accepted
        assert load_mark_secrets(policy).current.secret == bytes.fromhex("ab" * 16)
        return
    with pytest.raises(SigningConfigError, match=f"^watermark secret environment variable AM_WM_SECRET {problem}"):
        load_mark_secrets(policy)


def test_policy_validation() -> None:
    assert DEV.uses_development_watermark_secret
    assert not SigningPolicy(watermark_secret="wm.hex").uses_development_watermark_secret
    assert not SigningPolicy(watermark_secret_env="WM").uses_development_watermark_secret
    with pytest.raises(ValidationError, match="either watermark_secret .* or watermark_secret_env"):
        SigningPolicy(watermark_secret="wm.hex", watermark_secret_env="WM")
    with pytest.raises(ValidationError, match="not an environment variable name"):
        SigningPolicy(watermark_secret_env="WM-SECRET")
    with pytest.raises(ValidationError, match="must be a file path"):
        SigningPolicy(watermark_secret=" ")
    with pytest.raises(ValidationError, match="every entry must be a file path"):
        SigningPolicy(retired_watermark_secrets=["old.hex", ""])
    fields = SigningPolicy.model_fields
    assert all(
        fields[name].description for name in ("watermark_secret", "watermark_secret_env", "retired_watermark_secrets")
    )


def test_cli_rotate_then_show_prints_fingerprints_never_the_secret(capsys: pytest.CaptureFixture[str]) -> None:
    keys = init_dev_keys()
    assert main(["keys", "show"]) == 0
    assert "no DEVELOPMENT watermark secret" in capsys.readouterr().out

    assert main(["keys", "rotate-watermark-secret"]) == 0
    first = load_mark_secrets(DEV, create=False).current
    assert "old: none" in capsys.readouterr().out

    assert main(["keys", "rotate-watermark-secret"]) == 0
    out = capsys.readouterr().out
    second = load_mark_secrets(DEV, create=False).current
    assert f"old: {first.fingerprint}" in out and f"new: {second.fingerprint}" in out
    assert "still verify" in out and f"{RETIRED_PREFIX}{first.fingerprint}" in out

    assert main(["keys", "show"]) == 0
    out = capsys.readouterr().out
    assert f"current: {second.fingerprint}" in out and f"retired: {first.fingerprint}" in out
    for secret in (first, second):
        assert secret.secret.hex() not in out
    assert str(keys.directory) in out


def test_cli_refuses_a_readable_secret_in_one_paragraph(capsys: pytest.CaptureFixture[str]) -> None:
    keys = init_dev_keys()
    load_mark_secrets(DEV)
    capsys.readouterr()
    path = keys.directory / DEV_SECRET_FILE
    path.chmod(0o644)
    for command in ("show", "rotate-watermark-secret"):
        assert main(["keys", command]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: development watermark secret file {path} can be accessed by group or others")
        assert f"run `chmod 600 {path}`" in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_production_signer_with_the_development_secret_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    production = SigningPolicy(certificate_chain="chain.pem", private_key="signer.key")
    with caplog.at_level("WARNING", logger="tasks.provenance.mark_secrets"):
        load_mark_secrets(production, tmp_path)
        assert "DEVELOPMENT watermark secret" in caplog.text and "signing.watermark_secret" in caplog.text
        caplog.clear()
        load_mark_secrets(DEV, tmp_path)
        assert not caplog.text
