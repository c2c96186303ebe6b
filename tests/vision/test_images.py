"""Reading request images: data URLs, opt-in http(s) fetching with limits, no private hosts."""

from __future__ import annotations

import base64
import http.server
import io
import ipaddress
import os
import threading
import time
from typing import ClassVar

import pytest
from PIL import Image

from mlx_server.vision.images import ImageError, ImagePolicy, check_image, load_image


def png(color=(255, 0, 0), size=(40, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def noise_png(side: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, media="image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


def test_data_url():
    img = load_image(data_url(png()), ImagePolicy())
    assert (img.format, img.size, len(img.digest)) == ("PNG", (40, 30), 64)
    assert load_image(data_url(png()), ImagePolicy()).digest == img.digest
    assert load_image(data_url(png((0, 0, 255))), ImagePolicy()).digest != img.digest
    assert load_image(data_url(png(fmt="JPEG"), "image/jpeg"), ImagePolicy()).format == "JPEG"


@pytest.mark.parametrize("url, message", [
    ("data:image/png;base64,not*base64", "base64"),
    ("data:image/png," + "abc", "base64-encoded"),
    ("data:text/plain;base64,aGVsbG8=", "image/*"),
    ("data:image/png;base64", "Malformed"),
    (data_url(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10), "could not be decoded"),
    (data_url(png(fmt="TIFF"), "image/tiff"), "Unsupported image format TIFF"),
    ("ftp://example.com/a.png", "data: URLs"),
    ("file:///etc/passwd", "data: URLs"),
    ("https://example.com/a.png", "does not fetch image URLs"),
])
def test_bad_images_are_clear_errors(url, message):
    with pytest.raises(ImageError, match=message):
        load_image(url, ImagePolicy())


def test_size_limit():
    with pytest.raises(ImageError, match="limit"):
        load_image(data_url(noise_png()), ImagePolicy(max_bytes=500))
    with pytest.raises(ImageError, match="too large"):
        check_image(png(size=(9000, 8000), fmt="PNG"), 10**9)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254",
                                  "[::1]", "192.168.0.1"])
def test_private_addresses_are_refused(host):
    with pytest.raises(ImageError, match="private or local"):
        load_image(f"http://{host}/x.png", ImagePolicy(allow_urls=True, timeout_s=1))


# ---------------------------------------------------------------- fetching (a local server)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}

    def do_GET(self):
        status, headers, body, delay = self.routes[self.path]
        time.sleep(delay)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client stopped reading at its limit
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    _Handler.routes = {
        "/ok.png": (200, {"Content-Type": "image/png"}, png(), 0),
        "/page": (200, {"Content-Type": "text/html"}, b"<html>", 0),
        "/big.png": (200, {"Content-Type": "image/png"}, noise_png(), 0),
        "/slow.png": (200, {"Content-Type": "image/png"}, png(), 2.0),
        "/missing.png": (404, {"Content-Type": "text/plain"}, b"no", 0),
        "/hop": (302, {"Location": "/ok.png"}, b"", 0),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/x.png"}, b"", 0),
    }
    yield base
    srv.shutdown()


# Loopback is allowed only here, so the fetch path itself can be tested offline.
LOCAL = ImagePolicy(allow_urls=True, max_bytes=4096, timeout_s=1.0,
                    address_allowed=lambda ip: ip.is_global or ip == ipaddress.ip_address(
                        "127.0.0.1"))


def test_fetch_and_redirect(site):
    assert load_image(site + "/ok.png", LOCAL).digest == load_image(data_url(png()), LOCAL).digest
    assert load_image(site + "/hop", LOCAL).format == "PNG"


@pytest.mark.parametrize("path, message", [
    ("/page", "not an image"), ("/big.png", "limit"), ("/slow.png", "longer than 1s"),
    ("/missing.png", "HTTP 404"), ("/to-metadata", "private or local"),
])
def test_fetch_limits(site, path, message):
    with pytest.raises(ImageError, match=message):
        load_image(site + path, LOCAL)
