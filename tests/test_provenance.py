"""Signing policy, signer checks, manifest content, sign -> read back -> validate with real certificates."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from pydantic import ValidationError

from policies.signing import SigningPolicy
from tasks.core.errors import ProvenanceError, SigningConfigError
from tasks.provenance.credentials import (
    AssetFacts,
    ValidationReport,
    WatermarkFacts,
    build_manifest_definition,
    load_signer,
    read_and_validate,
    sign_and_validate,
    sign_asset,
)
from tasks.provenance.keys import build_chain, cert_pem, key_pem

MIMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
PROMPT = "confidential spring campaign: a red bicycle leaning on a lighthouse at dawn"
MARKER = "jumbf-flip-target-0123456789"
WATERMARK = WatermarkFacts(
    algorithm="com.assetmint.imwatermark.dwtDctSvd", method="dwtDctSvd", payload_hex="9F3A00C4E1B27D55", key="k7Q2x"
)


# ------------------------------------------------------------------------------------------------ helpers


def image_bytes(mime: str, size: int = 256) -> bytes:
    img = Image.new("RGB", (size, size))
    img.putdata([((x * 3) % 256, (y * 5) % 256, ((x ^ y) * 7) % 256) for y in range(size) for x in range(size)])
    buf = io.BytesIO()
    img.save(buf, MIMES[mime], **({"quality": 90} if mime != "image/png" else {}))
    return buf.getvalue()


def asset(mime: str = "image/png", **generation) -> AssetFacts:
    return AssetFacts(
        asset_id="a-0001",
        model_name="tiny-sd-test",
        prompt=PROMPT,
        negative_prompt="blurry, watermark text",
        mime=mime,
        generation={
            "seed": 42,
            "steps": 4,
            "clip": {"model": "ViT-B-32", "score": 0.3125, "rank": 1},
            "marker": MARKER,
            **generation,
        },
    )


def write_chain(directory, leaf_key, leaf_cert, root_cert, name="c"):
    directory.mkdir(parents=True, exist_ok=True)
    chain = directory / f"{name}-chain.pem"
    key = directory / f"{name}.key"
    anchor = directory / f"{name}-root.pem"
    chain.write_bytes(cert_pem(leaf_cert) + cert_pem(root_cert))
    key.write_bytes(key_pem(leaf_key))
    anchor.write_bytes(cert_pem(root_cert))
    return chain, key, anchor


def image_data_offset(data: bytes, mime: str) -> int:
    """An offset in the middle of the compressed pixel data (never inside the manifest)."""
    if mime == "image/png":
        pos = 8
        while pos < len(data):
            length, kind = struct.unpack(">I4s", data[pos : pos + 8])
            if kind == b"IDAT":
                return pos + 8 + length // 2
            pos += 12 + length
    elif mime == "image/jpeg":
        sos = data.rfind(b"\xff\xda")
        eoi = data.rfind(b"\xff\xd9")
        assert 0 < sos < eoi
        offset = (sos + eoi) // 2
        while data[offset - 1] == 0xFF or data[offset] in (0x00, 0xFF):  # stay clear of markers and stuffing
            offset += 1
        return offset
    else:
        pos = 12
        while pos < len(data):
            kind, length = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
            if kind in (b"VP8 ", b"VP8L"):
                return pos + 8 + length // 2
            pos += 8 + length + (length & 1)
    raise AssertionError("no image data found")


def flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01 if out[offset] not in (0xFE, 0xFF) else 0x02
    return bytes(out)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """A real root + leaf chain per algorithm, as files."""
    base = tmp_path_factory.mktemp("chains")
    out = {}
    for algorithm in ("es256", "ps256", "ed25519"):
        leaf_key, leaf_cert, _root_key, root_cert = build_chain(algorithm)
        out[algorithm] = write_chain(base, leaf_key, leaf_cert, root_cert, name=algorithm)
    return out


def file_policy(chains, algorithm="es256", **extra) -> SigningPolicy:
    chain, key, anchor = chains[algorithm]
    return SigningPolicy(
        algorithm=algorithm, certificate_chain=str(chain), private_key=str(key), trust_anchors=[str(anchor)], **extra
    )


@pytest.fixture(scope="module")
def signers(chains):
    handles = {alg: load_signer(file_policy(chains, alg)) for alg in chains}
    yield handles
    for handle in handles.values():
        handle.close()


@pytest.fixture(scope="module")
def signed_png(chains, signers):
    policy = file_policy(chains)
    definition = build_manifest_definition(asset(), policy, WATERMARK)
    signed, report, digest = sign_and_validate(image_bytes("image/png"), "image/png", definition, signers["es256"])
    return signed, report, digest


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("algorithm", ["es256", "ps256", "ed25519"])
@pytest.mark.parametrize("mime", list(MIMES))
def test_round_trip_is_trusted(chains, signers, algorithm, mime):
    source = image_bytes(mime)
    policy = file_policy(chains, algorithm)
    definition = build_manifest_definition(asset(mime), policy, WATERMARK)

    signed, report, digest = sign_and_validate(source, mime, definition, signers[algorithm])

    assert report.state == "Trusted", report.status_codes
    assert report.status_codes == []
    assert digest == hashlib.sha256(signed).hexdigest()
    assert report.signer == signers[algorithm].common_name
    assert report.claim_generator.startswith("AssetMint/")
    assert report.active_manifest_label.startswith("urn:c2pa:")
    created = report.actions[0]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    assert created["softwareAgent"]["name"] == "AssetMint"
    assert "tiny-sd-test" in json.dumps(created)
    assert [a["action"] for a in report.actions] == ["c2pa.created", "c2pa.watermarked"]
    assert report.generation_assertion["seed"] == 42
    assert report.generation_assertion["asset_id"] == "a-0001"
    # signing adds the manifest and leaves the pixels alone
    with Image.open(io.BytesIO(source)) as before, Image.open(io.BytesIO(signed)) as after:
        assert before.format == after.format
        assert before.convert("RGB").tobytes() == after.convert("RGB").tobytes()


def test_manifest_store_json_and_actions_v2(signed_png):
    _signed, report, _digest = signed_png
    manifest = report.manifest_store_json["manifests"][report.active_manifest_label]
    labels = [a["label"] for a in manifest["assertions"]]
    assert "c2pa.actions.v2" in labels
    assert manifest["claim_generator_info"][0]["name"] == "AssetMint"
    assert manifest["title"] == "a-0001.png"


def test_development_keys_sign_trusted_and_are_labelled(tmp_path, capsys):
    policy = SigningPolicy()
    with load_signer(policy, dev_keys_dir=tmp_path / "keys") as handle:
        assert handle.is_development
        assert "DEVELOPMENT" in handle.common_name and "untrusted for production" in handle.common_name
        assert str(tmp_path / "keys" / "root-ca.pem") in handle.trust_anchors
        assert "created DEVELOPMENT signing keys" in capsys.readouterr().err
        definition = build_manifest_definition(asset(), policy, None)
        _signed, report, _ = sign_and_validate(image_bytes("image/png"), "image/png", definition, handle)
    assert report.state == "Trusted"
    assert "untrusted for production" in report.signer
    with load_signer(policy, dev_keys_dir=tmp_path / "keys") as again:  # reused, not recreated
        assert again.fingerprint == handle.fingerprint
    assert capsys.readouterr().err == ""


def test_env_sources(chains, monkeypatch):
    chain, key, anchor = chains["es256"]
    monkeypatch.setenv("AM_TEST_CHAIN", chain.read_text())
    monkeypatch.setenv("AM_TEST_KEY", key.read_text())
    policy = SigningPolicy(
        certificate_chain_env="AM_TEST_CHAIN", private_key_env="AM_TEST_KEY", trust_anchors=[str(anchor)]
    )
    with load_signer(policy) as handle:
        assert not handle.is_development and handle.key_source == "environment variable AM_TEST_KEY"
        _s, report, _d = sign_and_validate(
            image_bytes("image/jpeg"),
            "image/jpeg",
            build_manifest_definition(asset("image/jpeg"), policy, None),
            handle,
        )
    assert report.state == "Trusted"
    monkeypatch.delenv("AM_TEST_KEY")
    with pytest.raises(SigningConfigError, match="environment variable AM_TEST_KEY is not set"):
        load_signer(policy)


CALLBACK_MODULE = textwrap.dedent(
    """
    import os
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    CALLS = []

    def make_signer():
        # stands in for a KMS client: returns DER ECDSA signatures, as KMS APIs do
        with open(os.environ["AM_FAKE_KMS_KEY"], "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), None)

        calls = []

        def sign(data: bytes) -> bytes:
            CALLS.append(len(data))
            calls.append(len(data))
            if os.environ.get("AM_FAKE_KMS_DOWN") and len(calls) > 1:
                raise RuntimeError("KMS unavailable")
            return key.sign(data, ec.ECDSA(hashes.SHA256()))

        return sign

    def not_a_factory():
        return 42
    """
)


@pytest.fixture
def fake_kms(tmp_path, monkeypatch):
    (tmp_path / "am_fake_kms.py").write_text(CALLBACK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys

    sys.modules.pop("am_fake_kms", None)
    importlib.invalidate_caches()
    yield
    sys.modules.pop("am_fake_kms", None)


def test_callback_signer(chains, fake_kms, monkeypatch):
    chain, key, anchor = chains["es256"]
    monkeypatch.setenv("AM_FAKE_KMS_KEY", str(key))
    policy = SigningPolicy(
        certificate_chain=str(chain), callback="am_fake_kms:make_signer", trust_anchors=[str(anchor)]
    )
    with load_signer(policy) as handle:
        assert handle.key_source == "callback am_fake_kms:make_signer"
        _s, report, _d = sign_and_validate(
            image_bytes("image/png"), "image/png", build_manifest_definition(asset(), policy, WATERMARK), handle
        )
    assert report.state == "Trusted"
    import am_fake_kms

    assert len(am_fake_kms.CALLS) == 2  # the load-time check, then the claim


def test_callback_signer_problems(chains, fake_kms, monkeypatch):
    chain, key, anchor = chains["es256"]
    policy = SigningPolicy(
        certificate_chain=str(chain), callback="am_fake_kms:make_signer", trust_anchors=[str(anchor)]
    )

    stranger = chains["es256"][0].parent / "stranger.key"  # a valid P-256 key, but not the leaf's
    stranger.write_bytes(key_pem(build_chain("es256")[0]))
    monkeypatch.setenv("AM_FAKE_KMS_KEY", str(stranger))
    with pytest.raises(SigningConfigError, match="callback am_fake_kms:make_signer does not produce es256 signatures"):
        load_signer(policy)

    monkeypatch.setenv("AM_FAKE_KMS_KEY", str(key))
    monkeypatch.setenv("AM_FAKE_KMS_DOWN", "1")
    with load_signer(policy) as handle:
        with pytest.raises(SigningConfigError, match="failed to sign: KMS unavailable"):
            sign_asset(image_bytes("image/png"), "image/png", build_manifest_definition(asset(), policy, None), handle)

    bad = SigningPolicy(certificate_chain=str(chain), callback="am_fake_kms:not_a_factory")
    with pytest.raises(SigningConfigError, match="must return a callable"):
        load_signer(bad)
    missing = SigningPolicy(certificate_chain=str(chain), callback="am_no_such_module:make")
    with pytest.raises(SigningConfigError, match="cannot import module 'am_no_such_module'"):
        load_signer(missing)


# ------------------------------------------------------------------------------------------------ tampering


@pytest.mark.parametrize("mime", list(MIMES))
def test_flipped_pixel_byte_is_invalid(chains, signers, mime):
    definition = build_manifest_definition(asset(mime), file_policy(chains), WATERMARK)
    signed, _report, _ = sign_and_validate(image_bytes(mime), mime, definition, signers["es256"])
    offset = image_data_offset(signed, mime)
    assert MARKER.encode() not in signed[offset - 64 : offset + 64]

    report = read_and_validate(flip(signed, offset), mime, signers["es256"].trust_anchors)

    assert report.state == "Invalid"
    assert "assertion.dataHash.mismatch" in report.status_codes


@pytest.mark.parametrize("mime", list(MIMES))
def test_flipped_manifest_byte_is_invalid(chains, signers, mime):
    definition = build_manifest_definition(asset(mime), file_policy(chains), WATERMARK)
    signed, _report, _ = sign_and_validate(image_bytes(mime), mime, definition, signers["es256"])
    offset = signed.index(MARKER.encode())  # inside the generation assertion, inside the JUMBF

    report = read_and_validate(flip(signed, offset), mime, signers["es256"].trust_anchors)

    assert report.state == "Invalid"
    assert "assertion.hashedURI.mismatch" in report.status_codes


def test_root_not_in_trust_anchors_is_valid_but_untrusted(chains, signed_png):
    signed, _report, _ = signed_png
    for anchors in ([], [str(chains["ps256"][2])]):  # none, or an unrelated root
        report = read_and_validate(signed, "image/png", anchors)
        assert report.state == "Valid"
        assert report.status_codes == ["signingCredential.untrusted"]
        assert not report.is_trusted and report.has_manifest
        assert report.signer == "AssetMint DEVELOPMENT signer - untrusted for production"


def test_sign_and_validate_requires_trust_by_default(chains):
    chain, key, _anchor = chains["es256"]
    policy = SigningPolicy(certificate_chain=str(chain), private_key=str(key))  # no trust anchors
    definition = build_manifest_definition(asset(), policy, None)
    with load_signer(policy) as handle:
        with pytest.raises(ProvenanceError, match="state Valid.*signingCredential.untrusted.*trust_anchors"):
            sign_and_validate(image_bytes("image/png"), "image/png", definition, handle)
        _signed, report, _ = sign_and_validate(
            image_bytes("image/png"), "image/png", definition, handle, require_trusted=False
        )
    assert report.state == "Valid"


def test_no_manifest_and_unreadable_bytes(signers):
    plain = image_bytes("image/png")
    assert read_and_validate(plain, "image/png", signers["es256"].trust_anchors) == ValidationReport(state="NoManifest")
    assert read_and_validate(image_bytes("image/jpeg"), "image/jpeg", []).state == "NoManifest"
    with pytest.raises(ProvenanceError, match="cannot read the Content Credentials"):
        read_and_validate(b"definitely not an image" * 8, "image/png", [])
    with pytest.raises(ProvenanceError, match="empty"):
        read_and_validate(b"", "image/png", [])


@pytest.mark.parametrize("mime", list(MIMES))
def test_truncated_signed_asset(signers, chains, mime):
    definition = build_manifest_definition(asset(mime), file_policy(chains), None)
    signed = sign_asset(image_bytes(mime), mime, definition, signers["es256"])
    anchors = signers["es256"].trust_anchors
    # cut inside the manifest: the container no longer parses -> typed error, not a library exception
    with pytest.raises(ProvenanceError, match=f"cannot read the Content Credentials of the {mime} asset"):
        read_and_validate(signed[: signed.index(MARKER.encode())], mime, anchors)
    # one byte short at the end: PNG's chunk structure breaks (typed error); JPEG reads as a hash mismatch;
    # WebP does either, depending on whether the last RIFF chunk ends in a pad byte
    try:
        report = read_and_validate(signed[:-1], mime, anchors)
    except ProvenanceError as exc:
        assert mime != "image/jpeg" and "could not be parsed" in str(exc)
    else:
        assert mime != "image/png"
        assert (report.state, report.status_codes) == ("Invalid", ["assertion.dataHash.mismatch"])


# ------------------------------------------------------------------------------------------------ manifest content


def test_prompt_text_only_as_digest_by_default(chains, signers, signed_png):
    signed, report, _ = signed_png
    assert PROMPT.encode() not in signed
    assert PROMPT not in json.dumps(report.manifest_store_json)
    assert "blurry, watermark text" not in json.dumps(report.manifest_store_json)
    generation = report.generation_assertion
    assert generation["prompt_sha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert "prompt" not in generation and "negative_prompt" not in generation
    assert "negative_prompt_sha256" in generation


def test_prompt_text_included_when_allowed(chains, signers):
    policy = file_policy(chains, include_prompt_text=True)
    definition = build_manifest_definition(asset(), policy, None)
    signed, report, _ = sign_and_validate(image_bytes("image/png"), "image/png", definition, signers["es256"])
    assert PROMPT.encode() in signed
    assert report.generation_assertion["prompt"] == PROMPT
    assert report.generation_assertion["prompt_sha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()


def test_prompt_leaking_through_generation_data_is_refused(chains):
    policy = file_policy(chains)
    # an explicit "prompt" key is replaced by the digest ...
    definition = build_manifest_definition(asset(prompt=PROMPT), policy, None)
    assert PROMPT not in json.dumps(definition)
    # ... but the prompt anywhere else is an error, not a silent leak
    with pytest.raises(
        ProvenanceError, match=r"prompt text appears in the manifest at \$\.assertions\[2\]\.data\.notes"
    ):
        build_manifest_definition(asset(notes=f"from brief: {PROMPT}"), policy, None)


@pytest.mark.parametrize(
    "use, constraint", [("notAllowed", None), ("allowed", None), ("constrained", "licensed partners only")]
)
def test_training_mining_entries_follow_policy(chains, signers, use, constraint):
    policy = file_policy(chains, training_mining=use, training_mining_constraint=constraint)
    definition = build_manifest_definition(asset(), policy, None)
    _signed, report, _ = sign_and_validate(image_bytes("image/png"), "image/png", definition, signers["es256"])
    expected = {"use": use, **({"constraint_info": constraint} if constraint else {})}
    assert report.training_mining == {
        "entries": {
            "cawg.ai_training": expected,
            "cawg.ai_generative_training": expected,
            "cawg.ai_inference": expected,
            "cawg.data_mining": expected,
        }
    }


def test_soft_binding_carries_the_watermark_payload(signed_png):
    _signed, report, _ = signed_png
    assert report.soft_binding["alg"] == "com.assetmint.imwatermark.dwtDctSvd"
    assert report.soft_binding["blocks"] == [{"scope": {}, "value": "9f3a00c4e1b27d55"}]
    assert report.generation_assertion["watermark"] == {
        "algorithm": "com.assetmint.imwatermark.dwtDctSvd",
        "method": "dwtDctSvd",
        "payload_hex": "9f3a00c4e1b27d55",
        "key": "k7Q2x",
    }


def test_without_watermark_there_is_no_soft_binding(chains):
    definition = build_manifest_definition(asset(), file_policy(chains), None)
    labels = [a["label"] for a in definition["assertions"]]
    assert "c2pa.soft-binding" not in labels
    assert [a["action"] for a in definition["assertions"][0]["data"]["actions"]] == ["c2pa.created"]
    with pytest.raises(ProvenanceError, match="not hexadecimal"):
        build_manifest_definition(asset(), file_policy(chains), WatermarkFacts("x.y", "dwtDct", "zz", "k"))


def test_thumbnail_follows_policy(chains):
    policy = file_policy(chains, thumbnail=True)
    with load_signer(policy) as handle:
        _s, report, _ = sign_and_validate(
            image_bytes("image/png"), "image/png", build_manifest_definition(asset(), policy, None), handle
        )
    manifest = report.manifest_store_json["manifests"][report.active_manifest_label]
    assert manifest["thumbnail"]["format"].startswith("image/")


def test_no_thumbnail_by_default(signed_png):
    _signed, report, _ = signed_png
    assert "thumbnail" not in report.manifest_store_json["manifests"][report.active_manifest_label]


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_key_file(chains, tmp_path):
    chain, _key, _anchor = chains["es256"]
    policy = SigningPolicy(certificate_chain=str(chain), private_key=str(tmp_path / "nope.key"))
    with pytest.raises(SigningConfigError, match=r"private key file .*nope\.key does not exist"):
        load_signer(policy)


def test_missing_chain_and_anchor_files(chains, tmp_path):
    _chain, key, anchor = chains["es256"]
    with pytest.raises(SigningConfigError, match=r"certificate chain file .*absent\.pem does not exist"):
        load_signer(SigningPolicy(certificate_chain=str(tmp_path / "absent.pem"), private_key=str(key)))
    chain = chains["es256"][0]
    with pytest.raises(SigningConfigError, match=r"trust anchor file .*gone\.pem does not exist"):
        load_signer(
            SigningPolicy(
                certificate_chain=str(chain), private_key=str(key), trust_anchors=[str(tmp_path / "gone.pem")]
            )
        )


def test_key_not_matching_certificate(chains):
    chain, _key, _anchor = chains["es256"]
    other_key = chains["es256"][0].parent / "other.key"
    other_key.write_bytes(key_pem(build_chain("es256")[0]))
    with pytest.raises(
        SigningConfigError, match=r"private key in file .*other\.key does not match the leaf certificate"
    ):
        load_signer(SigningPolicy(certificate_chain=str(chain), private_key=str(other_key)))


def test_expired_and_not_yet_valid_certificates(tmp_path):
    now = datetime.now(UTC)
    chain, key, _ = write_chain(
        tmp_path,
        *_pick(build_chain("es256", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))),
        name="expired",
    )
    with pytest.raises(SigningConfigError, match=r"leaf certificate in file .*expired-chain\.pem expired on"):
        load_signer(SigningPolicy(certificate_chain=str(chain), private_key=str(key)))
    chain, key, _ = write_chain(
        tmp_path,
        *_pick(build_chain("es256", not_before=now + timedelta(days=1), not_after=now + timedelta(days=30))),
        name="future",
    )
    with pytest.raises(SigningConfigError, match=r"future-chain\.pem is not yet valid"):
        load_signer(SigningPolicy(certificate_chain=str(chain), private_key=str(key)))


def _pick(chain_parts):
    leaf_key, leaf_cert, _root_key, root_cert = chain_parts
    return leaf_key, leaf_cert, root_cert


def test_certificate_without_email_protection_or_digital_signature(tmp_path):
    chain, key, _ = write_chain(tmp_path, *_pick(build_chain("es256", email_protection=False)), name="noeku")
    with pytest.raises(SigningConfigError, match=r"noeku-chain\.pem lacks extended key usage emailProtection"):
        load_signer(SigningPolicy(certificate_chain=str(chain), private_key=str(key)))
    chain, key, _ = write_chain(tmp_path, *_pick(build_chain("es256", digital_signature=False)), name="noku")
    with pytest.raises(SigningConfigError, match=r"noku-chain\.pem lacks KeyUsage digitalSignature"):
        load_signer(SigningPolicy(certificate_chain=str(chain), private_key=str(key)))


def test_algorithm_not_matching_key_type(chains):
    chain, key, _anchor = chains["ed25519"]
    with pytest.raises(
        SigningConfigError, match="algorithm es256 needs an EC P-256 key but the certificate has an Ed25519 key"
    ):
        load_signer(SigningPolicy(algorithm="es256", certificate_chain=str(chain), private_key=str(key)))


def test_self_signed_and_misordered_chains(chains, tmp_path):
    chain, key, anchor = chains["es256"]
    leaf_pem, root_pem = chain.read_bytes().split(b"-----END CERTIFICATE-----\n")[:2]
    reversed_chain = tmp_path / "reversed.pem"
    reversed_chain.write_bytes(root_pem + b"-----END CERTIFICATE-----\n" + leaf_pem + b"-----END CERTIFICATE-----\n")
    with pytest.raises(SigningConfigError, match="self-signed"):
        load_signer(SigningPolicy(certificate_chain=str(anchor), private_key=str(key)))
    with pytest.raises(SigningConfigError, match="self-signed|out of order"):
        load_signer(SigningPolicy(certificate_chain=str(reversed_chain), private_key=str(key)))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(SigningConfigError, match=r"garbage\.pem is not a PEM certificate chain"):
        load_signer(SigningPolicy(certificate_chain=str(garbage), private_key=str(key)))


def test_unsupported_or_mismatched_mime(chains, signers):
    definition = build_manifest_definition(asset(), file_policy(chains), None)
    with pytest.raises(
        ProvenanceError, match="unsupported image format 'image/gif'.*image/png, image/jpeg, image/webp"
    ):
        sign_asset(b"GIF89a....", "image/gif", definition, signers["es256"])
    with pytest.raises(ProvenanceError, match="the image bytes are image/png, not image/jpeg"):
        sign_asset(image_bytes("image/png"), "image/jpeg", definition, signers["es256"])
    with pytest.raises(ProvenanceError, match="built for image/png, but the asset is signed as image/jpeg"):
        sign_asset(image_bytes("image/jpeg"), "image/jpeg", definition, signers["es256"])
    with pytest.raises(ProvenanceError, match="unsupported image format 'image/tiff'"):
        build_manifest_definition(asset("image/tiff"), file_policy(chains), None)


# ------------------------------------------------------------------------------------------------ policy model


def test_policy_defaults_are_development_and_private():
    policy = SigningPolicy()
    assert policy.uses_development_keys
    assert policy.algorithm == "es256" and policy.training_mining == "notAllowed"
    assert policy.include_prompt_text is False and policy.thumbnail is False and policy.tsa_url is None
    assert all(f.description for f in SigningPolicy.model_fields.values())


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"certificate_chain": "c.pem", "certificate_chain_env": "C", "private_key": "k"},
            "either certificate_chain .* not both",
        ),
        (
            {"certificate_chain": "c.pem", "private_key": "k", "private_key_env": "K"},
            "only one of .*private_key, private_key_env",
        ),
        ({"certificate_chain": "c.pem", "private_key": "k", "callback": "m:f"}, "only one of .*private_key, callback"),
        ({"private_key": "k.pem"}, "private_key needs the certificate chain"),
        ({"callback": "kms:signer"}, "callback needs the certificate chain"),
        ({"certificate_chain": "c.pem"}, "a certificate chain needs its key"),
        ({"certificate_chain": "c.pem", "callback": "not a reference"}, "must look like 'package.module:function'"),
        ({"certificate_chain_env": "1BAD", "private_key_env": "K"}, "not an environment variable name"),
        ({"tsa_url": "ftp://tsa"}, "http:// or https://"),
        ({"training_mining_constraint": "x"}, "only when training_mining is 'constrained'"),
        ({"algorithm": "rs256"}, "es256"),
        ({"output_format": "png"}, "Extra inputs are not permitted"),
    ],
)
def test_policy_rejects_bad_combinations(fields, message):
    with pytest.raises(ValidationError, match=message):
        SigningPolicy(**fields)
