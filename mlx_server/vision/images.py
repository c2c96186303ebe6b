"""Images from chat requests: `data:` URLs, and public http(s) URLs when allowed.

Everything here is bytes and Pillow (no mlx, no HTTP framework): an image is read with
size, type and time limits, opened once to prove it decodes, and identified by the
SHA-256 of its bytes, which keys the engine's image-feature cache and the prefix cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP"}
MAX_PIXELS = 64 * 1024 * 1024  # decompression bombs: refuse before decoding
_REDIRECTS = 3


class ImageError(ValueError):
    """The image cannot be used; the message is meant for the client."""


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from and how big they may be."""

    allow_urls: bool = False
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    # Whether a resolved address may be fetched from; tests widen it to loopback.
    address_allowed: Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool] = (
        lambda ip: public_address(ip))


@dataclass(frozen=True)
class ImageData:
    """The bytes of one image, checked to decode, and their SHA-256."""

    data: bytes
    digest: str
    format: str
    size: tuple[int, int]


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable, judging an IPv4 address carried inside IPv6 (mapped, 6to4, Teredo,
    NAT64) by that IPv4 address: `is_global` alone passes 64:ff9b::7f00:1, which a NAT64
    gateway turns into 127.0.0.1."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is None and any(ip in net for net in _NAT64):
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return inner.is_global
    return ip.is_global


def load_image(url: str, policy: ImagePolicy) -> ImageData:
    """Read an `image_url.url`: a data URL, or an http(s) URL if the policy allows."""
    if url.startswith("data:"):
        return check_image(_from_data_url(url, policy.max_bytes), policy.max_bytes)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageError("Image URLs must be data: URLs (or http(s) URLs where the server "
                         "allows them).")
    if not policy.allow_urls:
        raise ImageError("This server does not fetch image URLs; send the image inline as a "
                         "data: URL (the server's --allow-image-urls enables fetching).")
    return check_image(_fetch(url, policy), policy.max_bytes)


def check_image(data: bytes, max_bytes: int) -> ImageData:
    """Prove that `data` is one image of a supported format and size."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > max_bytes:
        raise ImageError(f"The image is {len(data)} bytes; the limit is {max_bytes}.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, size = img.format or "", img.size
            if fmt not in FORMATS:
                raise ImageError(f"Unsupported image format {fmt or 'unknown'}; use one of "
                                 f"{', '.join(sorted(FORMATS))}.")
            if size[0] * size[1] > MAX_PIXELS:
                raise ImageError(f"The image is {size[0]}x{size[1]} pixels; too large.")
            img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"The image could not be decoded ({type(e).__name__}).") from e
    return ImageData(data, hashlib.sha256(data).hexdigest(), fmt, size)


def _from_data_url(url: str, max_bytes: int) -> bytes:
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise ImageError("Malformed data URL: no ',' before the data.")
    parts = header.split(";")
    if not parts[0].lower().startswith("image/"):
        raise ImageError(f"The data URL's media type must be image/*, not '{parts[0]}'.")
    if "base64" not in (p.lower() for p in parts[1:]):
        raise ImageError("Image data URLs must be base64-encoded (data:image/png;base64,...).")
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise ImageError(f"The image is larger than the limit of {max_bytes} bytes.")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError("The data URL is not valid base64.") from e


def _check_host(url: str, policy: ImagePolicy) -> None:
    """Refuse hosts that resolve to private, loopback, link-local or reserved addresses."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ImageError("The image URL has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise ImageError("The image URL has an invalid port.") from e
    _allowed_addresses(parts.hostname, port, policy)


def _allowed_addresses(host: str, port: int, policy: ImagePolicy) -> list[str]:
    """`host`'s addresses, all of which the policy must allow (else an ImageError)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise ImageError(f"Cannot resolve the image URL's host '{host}'.") from e
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])  # drop an IPv6 zone id
        if not policy.address_allowed(ip):
            raise ImageError("Image URLs may not point at private or local addresses.")
        addresses.append(str(ip))
    return addresses


def _checked_client(policy: ImagePolicy):
    """An httpx client that connects only to addresses it has just checked.

    Checking a host and then letting httpx resolve it again would let DNS answer
    differently the second time (rebinding); resolving inside the connection makes the
    checked address the one used. TLS still verifies the URL's host name. Environment
    proxies are ignored: through a proxy the check would say nothing.
    """
    import httpcore
    import httpx

    class CheckedBackend(httpcore.SyncBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None,
                        socket_options=None):
            address = _allowed_addresses(host, port, policy)[0]
            return super().connect_tcp(address, port, timeout, local_address, socket_options)

    transport = httpx.HTTPTransport(trust_env=False)
    # httpx offers no public hook for the network backend; its pool takes one.
    transport._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(),
                                              network_backend=CheckedBackend())
    return httpx.Client(timeout=policy.timeout_s, follow_redirects=False, trust_env=False,
                        transport=transport)


def _fetch(url: str, policy: ImagePolicy) -> bytes:
    import httpx

    deadline = time.monotonic() + policy.timeout_s  # httpx's timeouts are per read, not total
    try:
        with _checked_client(policy) as client:
            for _ in range(_REDIRECTS + 1):
                _check_host(url, policy)  # every hop: a redirect must not lead inside
                with client.stream("GET", url) as r:
                    if r.is_redirect and "location" in r.headers:
                        url = str(r.url.join(r.headers["location"]))
                        continue
                    return _read(r, policy, deadline)
    except httpx.TimeoutException as e:
        raise ImageError(f"Fetching the image took longer than {policy.timeout_s:g}s.") from e
    except httpx.HTTPError as e:
        raise ImageError(f"Fetching the image failed ({type(e).__name__}).") from e
    raise ImageError("The image URL redirected too many times.")


def _read(r, policy: ImagePolicy, deadline: float) -> bytes:
    max_bytes = policy.max_bytes
    if r.status_code != 200:
        raise ImageError(f"Fetching the image got HTTP {r.status_code}.")
    ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
    if not ctype.startswith("image/"):
        raise ImageError(f"The image URL served '{ctype or 'no content type'}', not an image.")
    if int(r.headers.get("content-length") or 0) > max_bytes:
        raise ImageError(f"The image is larger than the limit of {max_bytes} bytes.")
    body = bytearray()
    for chunk in r.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise ImageError(f"The image is larger than the limit of {max_bytes} bytes.")
        if time.monotonic() > deadline:
            raise ImageError(f"Fetching the image took longer than {policy.timeout_s:g}s.")
    return bytes(body)
