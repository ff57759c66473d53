"""Development certificate chain: files, permissions, certificate profile, no silent overwrite."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from tasks.core.errors import SigningConfigError
from tasks.provenance.keys import (
    CHAIN_FILE,
    KEY_FILE,
    TRUST_ANCHOR_FILE,
    ensure_dev_keys,
    init_dev_keys,
    show_dev_keys,
)


def _certs(path):
    return x509.load_pem_x509_certificates(path.read_bytes())


@pytest.mark.parametrize(
    "algorithm, key_type",
    [("es256", ec.EllipticCurvePublicKey), ("ps256", rsa.RSAPublicKey), ("ed25519", ed25519.Ed25519PublicKey)],
)
def test_init_creates_chain_key_and_anchor(tmp_path, algorithm, key_type):
    keys = init_dev_keys(tmp_path / "keys", algorithm=algorithm)

    assert keys.chain == tmp_path / "keys" / CHAIN_FILE
    assert keys.key == tmp_path / "keys" / KEY_FILE
    assert keys.trust_anchor == tmp_path / "keys" / TRUST_ANCHOR_FILE
    assert keys.algorithm == algorithm
    leaf, root = _certs(keys.chain)
    assert _certs(keys.trust_anchor) == [root]
    assert isinstance(leaf.public_key(), key_type)
    if algorithm == "ps256":
        assert leaf.public_key().key_size >= 2048
    assert keys.fingerprint == leaf.fingerprint(hashes.SHA256()).hex()
    assert keys.not_after == leaf.not_valid_after_utc
    assert "DEVELOPMENT" in keys.subject and "untrusted for production" in keys.subject


def test_leaf_and_root_have_the_c2pa_profile(tmp_path):
    keys = init_dev_keys(tmp_path)
    leaf, root = _certs(keys.chain)

    leaf_cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert leaf_cn == "AssetMint DEVELOPMENT signer - untrusted for production"
    assert "untrusted for production" in root.subject.rfc4514_string()
    assert leaf.issuer == root.subject and root.issuer == root.subject
    leaf.verify_directly_issued_by(root)

    ku = leaf.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in list(eku)
    assert not leaf.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca
    aki = leaf.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
    root_ski = root.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
    assert aki.key_identifier == root_ski.digest
    leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)

    assert root.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca
    assert root.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value.key_cert_sign
    assert root.not_valid_after_utc >= leaf.not_valid_after_utc


def test_private_key_is_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        keys = init_dev_keys(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(keys.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.directory.stat().st_mode) & 0o077 == 0
    # no temporary files left behind
    assert sorted(p.name for p in keys.directory.iterdir()) == sorted([CHAIN_FILE, KEY_FILE, TRUST_ANCHOR_FILE])


def test_existing_keys_are_not_overwritten_unless_forced(tmp_path):
    first = init_dev_keys(tmp_path)
    with pytest.raises(SigningConfigError, match="already exist.*--force"):
        init_dev_keys(tmp_path)
    assert show_dev_keys(tmp_path).fingerprint == first.fingerprint

    second = init_dev_keys(tmp_path, force=True, algorithm="ed25519")
    assert second.fingerprint != first.fingerprint
    assert show_dev_keys(tmp_path) == second
    assert stat.S_IMODE(second.key.stat().st_mode) == 0o600


def test_show_reads_back_what_init_wrote(tmp_path):
    created = init_dev_keys(tmp_path, algorithm="ps256")
    assert show_dev_keys(tmp_path) == created


def test_show_without_keys_says_how_to_create_them(tmp_path):
    with pytest.raises(SigningConfigError, match=r"run `assetmint keys init`"):
        show_dev_keys(tmp_path / "nothing-here")
    init_dev_keys(tmp_path)
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(SigningConfigError, match=rf"missing {KEY_FILE}.*assetmint keys init"):
        show_dev_keys(tmp_path)


def test_default_directory_is_the_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSETMINT_CONFIG_DIR", str(tmp_path / "cfg"))
    keys = init_dev_keys()
    assert keys.directory == tmp_path / "cfg" / "keys"
    assert show_dev_keys() == keys


def test_ensure_creates_once(tmp_path):
    keys, created = ensure_dev_keys(tmp_path, algorithm="ed25519")
    assert created and keys.algorithm == "ed25519"
    again, created_again = ensure_dev_keys(tmp_path)
    assert not created_again and again == keys


def test_unsupported_algorithm_is_rejected(tmp_path):
    with pytest.raises(SigningConfigError, match="unsupported signing algorithm 'rs256'.*es256"):
        init_dev_keys(tmp_path, algorithm="rs256")
    assert not any(tmp_path.iterdir())
