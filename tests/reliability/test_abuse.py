"""Abuse on the real server over HTTP: API-key bypasses, paths in the `model` field, header
and log injection, oversized headers, SSRF through image URLs. Every refusal must carry
the right status and leave a line in the server's log."""

from __future__ import annotations

import base64
import http.server
import inspect
import io
import json
import socket
import threading
from typing import ClassVar

import httpx
import pytest
from e2e.conftest import start_server

from mlx_server.server import middleware

from .fault_helpers import keep_log, wait_for_log

pytestmark = pytest.mark.e2e

KEY = "abuse-secret-0123456789"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = start_server(tmp_path_factory, "--api-key", KEY, "--log-format", "json",
                     "--log-level", "debug", "--ctx-size", "1024", "--max-slots", "2")
    yield s
    s.stop()
    keep_log(s, "abuse")


def _raw(port: int, request: bytes) -> bytes:
    """Send bytes exactly as given (clients refuse to send some of them) and read the reply."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                out += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # refused mid-send: the server answered (maybe) and closed
    return out


def _status(reply: bytes) -> int:
    """The reply's status; 0 when the server closed without one reaching us."""
    return int(reply.split(b" ", 2)[1]) if reply else 0


def _access_line(srv, request_id: str) -> dict:
    line = wait_for_log(srv.log_path, f'"request_id": "{request_id}"')
    return json.loads(line)


# ------------------------------------------------------------------------------- API keys

@pytest.mark.parametrize("headers, url", [
    ({}, "/v1/models"),
    ({"authorization": "Bearer wrong"}, "/v1/models"),
    ({"authorization": f"Bearer {KEY[:-1]}"}, "/v1/models"),  # a prefix of the key
    ({"authorization": f"Bearer {KEY}x"}, "/v1/models"),  # the key plus more
    ({"authorization": f"Bearer {KEY.upper()}"}, "/v1/models"),
    ({"authorization": KEY}, "/v1/models"),  # no scheme
    ({"authorization": f"Basic {base64.b64encode(KEY.encode()).decode()}"}, "/v1/models"),
    ({"authorization": f"Bearer{KEY}"}, "/v1/models"),
    ({"authorization": f"Bearer {KEY} {KEY}"}, "/v1/models"),
    ({"authorization": "Bearer"}, "/v1/models"),
    ({"x-api-key": ""}, "/v1/models"),
    ({}, f"/v1/models?api_key={KEY}"),  # keys in query strings leak into logs: never taken
    ({}, f"/v1/models?key={KEY}"),
    ({}, "/slots"),
    ({}, "/tokenize"),
    ({}, "/v1/completions"),
])
def test_requests_without_the_key_are_refused(srv, headers, url):
    method = "POST" if url in ("/tokenize", "/v1/completions") else "GET"
    r = httpx.request(method, srv.base + url, headers=headers, timeout=30,
                      json={"prompt": "hi", "content": "hi", "max_tokens": 1})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "invalid_api_key"
    logged = _access_line(srv, r.headers["x-request-id"])
    assert logged["status"] == 401 and KEY not in json.dumps(logged)


@pytest.mark.parametrize("headers", [
    {"authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"},
    {"authorization": f"BEARER   {KEY}"}, {"x-api-key": KEY},
])
def test_the_key_is_accepted_in_its_forms(srv, headers):
    r = httpx.get(srv.base + "/v1/models", headers=headers, timeout=30)
    assert r.status_code == 200, r.text


def test_health_is_public_and_raw_paths_do_not_bypass(srv):
    assert httpx.get(srv.base + "/health", timeout=10).status_code == 200
    # Dot segments and doubled slashes reach the app verbatim: not /health, so a key is due.
    for path in (b"/health/../v1/models", b"/health/%2e%2e/v1/models", b"//v1/models",
                 b"/v1/models/"):
        reply = _raw(srv.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(reply) == 401, (path, reply[:200])


def test_keys_are_compared_in_constant_time():
    """Timing statistics would be flaky on a shared CI box; instead pin the mechanism:
    digests of equal length compared with hmac.compare_digest against every key."""
    src = inspect.getsource(middleware.APIKeyMiddleware)
    assert "hmac.compare_digest" in src
    assert "token ==" not in src and "== token" not in src and " in self.keys" not in src
    mw = middleware.APIKeyMiddleware(None, ("k1", "a-much-longer-second-key"))
    assert {len(k) for k in mw.keys} == {32}


# ----------------------------------------------------------------- paths in the model field

@pytest.mark.parametrize("model", ["../../etc/passwd", "/etc/passwd", "~/.ssh/id_rsa",
                                   "file:///etc/passwd", "..\\..\\windows\\win.ini"])
def test_model_paths_load_nothing(srv, model):
    """Requests name no model to load: the served model answers (llama-server's behaviour)
    and the path is never touched; the model lookup endpoint says 404."""
    r = httpx.post(srv.base + "/v1/completions", headers=AUTH, timeout=120,
                   json={"model": model, "prompt": "Hi", "max_tokens": 1})
    assert r.status_code == 200, r.text
    served = httpx.get(srv.base + "/v1/models", headers=AUTH, timeout=10).json()["data"]
    assert r.json()["model"] == served[0]["id"] and len(served) == 1
    quoted = model.replace("/", "%2F")
    r = httpx.get(f"{srv.base}/v1/models/{quoted}", headers=AUTH, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert _access_line(srv, r.headers["x-request-id"])["status"] == 404
    assert not any("root:" in line for line in srv.log_path.read_text().splitlines())


# ------------------------------------------------------------ header and log injection

@pytest.mark.parametrize("given", ["a b", "x" * 129, "id;drop", "<script>", "a%0d%0aSet-Cookie:x=1", "a/../b"])
def test_unsafe_request_ids_are_replaced(srv, given):
    r = httpx.get(srv.base + "/v1/models", headers={**AUTH, "x-request-id": given}, timeout=10)
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert rid != given and len(rid) == 32 and rid.isalnum()
    assert _access_line(srv, rid)["status"] == 200


def test_crlf_in_a_request_id_never_reaches_a_response(srv):
    """A bare CR inside a header value is a protocol error: 400 before the app sees it."""
    reply = _raw(srv.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                 + KEY.encode() + b"\r\nX-Request-Id: abc\rSet-Cookie: evil=1\r\n\r\n")
    assert _status(reply) == 400 and b"evil" not in reply
    wait_for_log(srv.log_path, "Invalid HTTP request")


def test_a_safe_request_id_is_kept(srv):
    r = httpx.get(srv.base + "/v1/models", headers={**AUTH, "x-request-id": "trace-42.a:b"},
                  timeout=10)
    assert r.headers["x-request-id"] == "trace-42.a:b"


def test_newlines_in_prompts_and_paths_keep_json_logs_one_record_per_line(srv):
    forged = '\n{"level": "error", "msg": "FORGED", "logger": "x"}\r\n'
    r = httpx.post(srv.base + "/v1/chat/completions", headers=AUTH, timeout=120, json={
        "messages": [{"role": "user", "content": forged}], "max_tokens": 2,
        "model": forged, "stop": [forged]})
    assert r.status_code == 200, r.text
    reply = _raw(srv.port, b"GET /v1/models/a%0d%0a%7B%22msg%22:%22FORGED%22%7D HTTP/1.1\r\n"
                 b"Host: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n")
    assert _status(reply) == 404
    _access_line(srv, r.headers["x-request-id"])
    records = [json.loads(line) for line in srv.log_path.read_text().splitlines()
               if line.strip()]  # each line must parse on its own
    assert not any(rec.get("msg") == "FORGED" for rec in records)


def test_text_logs_escape_control_characters(tmp_path):
    """The text format (the default) gets a client's path in its access lines."""
    import logging

    from mlx_server.logs import TextFormatter

    record = logging.LogRecord("mlx_server.access", logging.INFO, __file__, 1,
                               "GET %s 404", ("/v1/models/a\r\nINFO forged\u2028",), None)
    line = TextFormatter("%(levelname)s %(message)s").format(record)
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    assert "\\x0d\\x0a" in line


# ---------------------------------------------------------------------- oversized headers

@pytest.mark.parametrize("headers", [
    b"X-Big: " + b"a" * 40 * 1024 + b"\r\n",
    b"".join(b"X-H%d: v\r\n" % i for i in range(400)),
    b"X-Huge: " + b"a" * 4 * 1024 * 1024 + b"\r\n",  # h11 gives up while it arrives
])
def test_oversized_headers_are_refused(srv, headers):
    """431 in the OpenAI error shape (before the key is checked), or uvicorn's own 400
    when the head overflows h11's buffer while still arriving; either is logged."""
    reply = _raw(srv.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    status = _status(reply)
    assert status in (0, 400, 431), reply[:300]  # 0: closed mid-send, the reply lost
    if status == 431:
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "request_header_fields_too_large"
        rid = reply.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
        assert _access_line(srv, rid)["status"] == 431
        wait_for_log(srv.log_path, "refused a request with")
    else:
        wait_for_log(srv.log_path, "Invalid HTTP request")
    assert httpx.get(srv.base + "/health", timeout=10).status_code == 200


def test_headers_under_the_limits_pass(srv):
    headers = {**AUTH, **{f"x-h{i}": "v" * 50 for i in range(100)}}
    assert httpx.get(srv.base + "/v1/models", headers=headers, timeout=10).status_code == 200


# --------------------------------------------------------------------- SSRF (image URLs)

def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


class _Site(http.server.BaseHTTPRequestHandler):
    """A loopback web server: a real image, and redirects. Every hit is counted."""

    hits: ClassVar[list[str]] = []
    redirect_to: ClassVar[str] = ""

    def do_GET(self):
        self.hits.append(self.path)
        if self.path.startswith("/hop"):
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.end_headers()
            return
        body = _png()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    pytest.importorskip("mlx_vlm", reason="vision needs the 'vision' extra")
    from tiny_vlm import build_gemma3_vlm

    path = build_gemma3_vlm(tmp_path_factory.mktemp("vlm") / "tiny-gemma3-vlm")
    s = start_server(tmp_path_factory, "-m", str(path), "--allow-image-urls",
                     "--log-format", "json")
    yield s
    s.stop()
    keep_log(s, "abuse-vlm")


def _ask_image(base: str, url: str) -> httpx.Response:
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": url}}]
    return httpx.post(base + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": content}], "max_tokens": 1})


SSRF_HOSTS = ["127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
              "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0.0.0.0", "[::]",
              "[64:ff9b::7f00:1]", "[2002:7f00:1::]"]
PRIVATE = ["10.0.0.1", "192.168.1.1", "172.16.0.1", "169.254.169.254", "100.64.0.1",
           "[fd00::1]", "[fe80::1]"]


@pytest.mark.parametrize("host", SSRF_HOSTS + PRIVATE)
def test_image_urls_to_internal_addresses_are_refused(vlm, site, host):
    """The loopback hosts all name `site`, which serves a real image: only the address
    check stands between the request and a successful fetch."""
    before = len(_Site.hits)
    port = f":{site}" if host in SSRF_HOSTS else ""
    r = _ask_image(vlm.base, f"http://{host}{port}/ok.png")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_image" and "private or local" in err["message"], err
    assert len(_Site.hits) == before  # never connected
    line = json.loads(wait_for_log(vlm.log_path, f"{host}{port}/ok.png"))
    assert line["event"] == "image_refused"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/x",
                                 "ftp://127.0.0.1/x.png", "http:///x.png"])
def test_other_schemes_are_refused(vlm, url):
    r = _ask_image(vlm.base, url)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image", r.text
    wait_for_log(vlm.log_path, url)


def test_redirects_are_checked_at_every_hop(site):
    """Unit level (a public server cannot exist offline): a policy that trusts only
    127.0.0.1 fetches from `site`, which redirects elsewhere on loopback or to metadata."""
    import ipaddress

    from mlx_server.vision.images import ImageError, ImagePolicy, load_image

    trusted = ipaddress.ip_address("127.0.0.1")
    policy = ImagePolicy(allow_urls=True, timeout_s=5,
                         address_allowed=lambda ip: ip == trusted)
    _Site.redirect_to = f"http://127.0.0.1:{site}/ok.png"
    assert load_image(f"http://127.0.0.1:{site}/hop", policy).format == "PNG"
    for target in (f"http://127.0.0.2:{site}/ok.png", f"http://[::1]:{site}/ok.png",
                   "http://169.254.169.254/latest/meta-data/"):
        _Site.redirect_to = target
        before = len(_Site.hits)
        with pytest.raises(ImageError, match="private or local"):
            load_image(f"http://127.0.0.1:{site}/hop", policy)
        assert _Site.hits[before:] == ["/hop"], target  # the target was never contacted


def test_the_address_connected_to_is_the_one_checked(site):
    """DNS rebinding: a name that resolves to an allowed address when checked and to a
    private one when connecting. Simulated by a policy that allows an address once: the
    check at connect time, on the address actually used, must refuse."""
    from mlx_server.vision.images import ImageError, ImagePolicy, load_image

    calls = []

    def once(ip):
        calls.append(ip)
        return len(calls) == 1

    with pytest.raises(ImageError, match="private or local"):
        load_image(f"http://127.0.0.1:{site}/ok.png",
                   ImagePolicy(allow_urls=True, timeout_s=5, address_allowed=once))
    assert len(calls) >= 2
