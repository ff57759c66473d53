"""The soft-binding resolution API answers what the audit finds, on an asset produced by the real batch flow."""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cli.main import main
from conftest import FUZZ, bomb_png, picture, serve_on_loopback, write
from tasks.storage.ledger import Ledger

MANIFEST = """\
campaign: {id: sba, name: Soft binding}
defaults: {model: embedded:tiny-sd, width: 256, height: 256, steps: 2, candidates: 1, keep_top_k: 1, base_seed: 7}
prompts:
  - {id: vase, prompt: a glass vase}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[dict[str, Any]]:
    from fastapi.testclient import TestClient

    from policies.model import load_policy
    from tasks.web.soft_binding_api import create_app

    root = tmp_path_factory.mktemp("sba")
    policy_path = write(root / "p.yaml", "publish:\n  auto_publish: true\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ASSETMINT_CACHE_DIR", str(model_cache))
        patch.setenv("ASSETMINT_CONFIG_DIR", str(root / "config"))
        patch.setenv("ASSETMINT_WORK_DIR", str(root / "work"))
        assert main(["run", str(write(root / "m.yaml", MANIFEST)), "--policy", str(policy_path)]) == 0
        policy = load_policy(policy_path)
        ledger = Ledger.open(policy.ledger_url())
        asset = ledger.assets(ledger.runs()[0].run_id)[0]
        published = root / "work" / "published" / str(asset.published["key"])  # type: ignore[index]
        with TestClient(create_app(policy, max_body_bytes=2_000_000)) as client:
            yield {
                "client": client,
                "asset": asset,
                "published": published,
                "policy": policy,
                "ledger": ledger,
                "config": root / "config",
            }


ALG = "com.assetmint.spreadTile.1"


def _stripped(path: Path) -> bytes:
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, "JPEG", quality=90, subsampling=0)
    return out.getvalue()


def test_by_binding_finds_the_published_manifest(served: dict[str, Any]) -> None:
    client, asset = served["client"], served["asset"]
    value = base64.b64encode(bytes.fromhex(asset.payload_hex)).decode()
    expected = {"matches": [{"manifestId": asset.manifest_label, "similarityScore": 100}]}
    assert client.get("/matches/byBinding", params={"alg": ALG, "value": value}).json() == expected
    assert client.get("/matches/byBinding", params={"alg": ALG, "value": asset.payload_hex}).json() == expected
    assert client.post("/matches/byBinding", json={"alg": ALG, "value": value}).json() == expected
    unknown = base64.b64encode(bytes(8)).decode()
    assert client.get("/matches/byBinding", params={"alg": ALG, "value": unknown}).json() == {"matches": []}
    assert client.get("/matches/byBinding", params={"alg": "org.other.wm", "value": value}).status_code == 400
    assert client.get("/matches/byBinding", params={"alg": ALG, "value": "!!"}).status_code == 400
    algs = client.get("/services/supportedAlgorithms").json()["watermarks"]
    assert {"alg": ALG} in algs


def test_by_content_agrees_with_the_audit(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.inspection.audit import AuditResult, audit_bytes, make_context

    monkeypatch.setenv("ASSETMINT_CONFIG_DIR", str(served["config"]))  # the watermark secret the run created
    client, asset = served["client"], served["asset"]
    stripped = _stripped(served["published"])
    response = client.post("/matches/byContent", content=stripped, headers={"content-type": "image/jpeg"})
    assert response.json() == {"matches": [{"manifestId": asset.manifest_label, "similarityScore": 100}]}
    audited = audit_bytes(stripped, make_context(served["policy"], served["ledger"]), AuditResult("t", "x", ""))
    assert audited.verdict == "recovered"
    assert audited.evidence["recovered"]["manifest_label"] == response.json()["matches"][0]["manifestId"]
    foreign = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 200, 30)).save(foreign, "PNG")
    assert client.post("/matches/byContent", content=foreign.getvalue()).json() == {"matches": []}
    assert client.post("/matches/byContent", content=b"plain text").status_code == 415
    assert client.post("/matches/byContent", content=b"\x89PNG\r\n\x1a\n" + bytes(3_000_000)).status_code == 413


def test_by_content_does_not_match_a_mark_on_other_pixels(served: dict[str, Any]) -> None:
    from tasks.inspection.audit import AuditResult, audit_bytes, make_context
    from tasks.provenance import watermark

    client, asset = served["client"], served["asset"]
    forged = io.BytesIO()  # the asset's key written into someone else's pixels
    watermark.embed(picture(7, (300, 300)), asset.asset_key, "dwtDctSvd").save(forged, "PNG")
    response = client.post("/matches/byContent", content=forged.getvalue(), headers={"content-type": "image/png"})
    assert response.status_code == 200 and response.json() == {"matches": []}
    audited = audit_bytes(
        forged.getvalue(), make_context(served["policy"], served["ledger"]), AuditResult("t", "x", "")
    )
    assert audited.verdict == "mark_mismatch" and audited.evidence["watermark"]["key"] == asset.asset_key


def test_manifest_store_bytes_read_back_with_c2pa(served: dict[str, Any]) -> None:
    import c2pa

    client, asset = served["client"], served["asset"]
    response = client.get(f"/manifests/{asset.manifest_label}")
    assert response.status_code == 200 and response.headers["content-type"] == "application/c2pa"
    with c2pa.Reader("application/c2pa", io.BytesIO(response.content)) as reader:
        assert json.loads(reader.json())["active_manifest"] == asset.manifest_label
    original = served["published"].read_bytes()
    with c2pa.Reader("image/png", io.BytesIO(original), manifest_data=response.content) as reader:
        store = json.loads(reader.json())
    assert "assertion.dataHash.mismatch" not in json.dumps(store.get("validation_status") or [])
    manifest = store["manifests"][asset.manifest_label]
    soft = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.soft-binding"))
    assert soft["data"]["blocks"][0]["value"] == asset.payload_hex
    assert client.get("/manifests/urn:c2pa:00000000-0000-0000-0000-000000000000").status_code == 404


def test_read_only(served: dict[str, Any]) -> None:
    client, asset = served["client"], served["asset"]
    assert client.delete(f"/manifests/{asset.manifest_label}").status_code == 405
    assert client.put(f"/manifests/{asset.manifest_label}", content=b"x").status_code == 405


def _refused(response: Any, status: int, *words: str) -> None:
    """A JSON refusal with `status` whose one-paragraph detail names every word."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert isinstance(detail, str) and all(word in detail for word in words), detail


def test_max_results_is_bounded(served: dict[str, Any]) -> None:
    from tasks.web.soft_binding_api import MAX_RESULTS

    client, asset = served["client"], served["asset"]
    query = {"alg": ALG, "value": asset.payload_hex}
    for bad in (0, -5, MAX_RESULTS + 1, 10**30):
        _refused(client.get("/matches/byBinding", params={**query, "maxResults": bad}), 400, f"1 to {MAX_RESULTS}")
        url = f"/matches/byBinding?maxResults={bad}"
        _refused(client.post(url, json=query), 400, "maxResults", f"1 to {MAX_RESULTS}")
        _refused(client.post(f"/matches/byContent?maxResults={bad}", content=b"x"), 400, f"1 to {MAX_RESULTS}")
    _refused(client.get("/matches/byBinding", params={**query, "maxResults": "ten"}), 400, "maxResults", "'ten'")
    for good in (1, MAX_RESULTS):
        found = client.get("/matches/byBinding", params={**query, "maxResults": good}).json()["matches"]
        assert [m["manifestId"] for m in found] == [asset.manifest_label]


class _Answer:
    """An HTTP answer read off a plain socket connection (httpx refuses URLs over 64 KiB before sending them)."""

    def __init__(self, base: str, method: str, target: str, body: bytes | None = None) -> None:
        import http.client
        from urllib.parse import urlsplit

        connection = http.client.HTTPConnection(str(urlsplit(base).netloc), timeout=60)
        try:
            headers = {"content-type": "application/json"} if body is not None else {}
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            self.status_code, self.text = response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.text)


def test_over_long_values_get_an_answer_over_a_real_socket(served: dict[str, Any]) -> None:
    """A million-character value once reset the connection (h11's 16 KiB head limit); now it is a 414 in words."""
    from urllib.parse import urlencode

    from tasks.web.soft_binding_api import MAX_NAME_CHARS, MAX_VALUE_CHARS

    def get(path: str, **query: str) -> _Answer:
        return _Answer(base, "GET", f"{path}?{urlencode(query)}" if query else path)

    with serve_on_loopback(served["client"].app) as base:
        huge = "A" * 1_000_000
        _refused(get("/matches/byBinding", alg=ALG, value=huge), 414, str(MAX_VALUE_CHARS), "1000000 characters")
        _refused(get("/matches/byBinding", alg=ALG, value="A" * (MAX_VALUE_CHARS + 1)), 414, "at most")
        body = json.dumps({"alg": ALG, "value": "A" * (MAX_VALUE_CHARS + 1)}).encode()
        _refused(_Answer(base, "POST", "/matches/byBinding", body), 400, str(MAX_VALUE_CHARS))
        _refused(get("/matches/byBinding", alg=huge, value="AA"), 400, "alg", str(MAX_NAME_CHARS))
        _refused(get("/manifests/" + "u" * 500_000), 400, "manifestId", str(MAX_NAME_CHARS))
        _refused(get("/manifests/urn:c2pa:x%00y"), 400, "manifestId", "control character")
        _refused(get("/matches/byBinding", alg=ALG, value="AA\x00AA"), 400, "not a spreadTile")
        asset = served["asset"]
        found = get("/matches/byBinding", alg=ALG, value=str(asset.payload_hex)).json()
        assert found == {"matches": [{"manifestId": asset.manifest_label, "similarityScore": 100}]}  # still serving


def test_query_bodies_are_bounded_and_typed(served: dict[str, Any]) -> None:
    from tasks.web.soft_binding_api import MAX_QUERY_BODY_BYTES

    client = served["client"]
    _refused(client.post("/matches/byBinding", json={"alg": ALG, "value": "A" * 10_000}), 413, "request body")
    _refused(client.post("/matches/byBinding", json=[ALG, "AA"]), 400, "body")
    _refused(client.post("/matches/byBinding", json={"alg": 5, "value": "AA"}), 400, "string fields")
    deep = client.post("/matches/byBinding", content=b"[" * (MAX_QUERY_BODY_BYTES - 1), headers=JSON)
    assert 400 <= deep.status_code < 500 and deep.json()["detail"]
    _refused(client.post("/matches/byBinding", content=b"{not json", headers=JSON), 400, "body")


JSON = {"content-type": "application/json"}


def test_uploads_are_bounded_in_size_type_and_pixels(served: dict[str, Any]) -> None:
    from tasks.inspection.engine import MAX_PIXELS

    client = served["client"]  # its app caps uploads at 2,000,000 bytes

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while the body is read
        yield b"\x89PNG\r\n\x1a\n"
        for _ in range(40):
            yield bytes(100_000)

    _refused(client.post("/matches/byContent", content=chunks()), 413, "2000000 bytes")
    _refused(client.post("/matches/byContent", content=b"GIF89a" + bytes(100)), 415, "PNG, JPEG or WebP")
    _refused(client.post("/matches/byContent", content=b"\x89PNG\r\n\x1a\n" + bytes(50)), 415, "cannot be decoded")
    _refused(client.post("/matches/byContent", content=bomb_png()), 413, "10000000000 pixels", str(MAX_PIXELS))
    _refused(client.post("/matches/byContent?alg=" + "x" * 5000, content=bomb_png()), 400, "alg")


HOSTILE_TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "\x00", "-1", "0", "101", "1e9", "99999999999999999999", "x" * 5000, "../../etc", "%00"]),
)
IMAGE_BYTES = st.one_of(
    st.binary(max_size=2000),
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a"]).flatmap(
        lambda head: st.binary(max_size=500).map(lambda tail: head + tail)
    ),
)


@FUZZ
@given(
    route=st.sampled_from(["get-binding", "post-binding", "content", "manifest", "algorithms"]),
    query=st.dictionaries(st.sampled_from(["alg", "value", "maxResults", "hintAlg", "x"]), HOSTILE_TEXT, max_size=4),
    body=st.one_of(st.none(), st.dictionaries(st.text(max_size=10), HOSTILE_TEXT, max_size=4), IMAGE_BYTES),
)
def test_every_request_gets_an_answer_that_is_not_a_server_error(
    served: dict[str, Any], route: str, query: dict[str, str], body: Any
) -> None:
    """Whatever a client sends, the API answers: 2xx, or a 4xx with a short JSON detail; never a 5xx or a reset."""
    client = served["client"]
    if route == "get-binding":
        response = client.get("/matches/byBinding", params=query)
    elif route == "post-binding":
        response = client.post("/matches/byBinding", params=query, json=body if isinstance(body, dict) else query)
    elif route == "content":
        data = body if isinstance(body, bytes) else b""
        response = client.post("/matches/byContent", params=query, content=data)
    elif route == "manifest":
        response = client.get(f"/manifests/{urllib.parse.quote(query.get('value', 'x'), safe='')}")
    else:
        response = client.get("/services/supportedAlgorithms", params=query)
    assert response.status_code < 500, (route, query, response.text[:300])
    if response.status_code >= 400:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and 0 < len(detail) < 600, detail
