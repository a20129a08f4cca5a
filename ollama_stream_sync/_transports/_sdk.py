"""From a host URL to the SDK client that reaches it: checks, transport, proxies.

httpx ignores the ``*_PROXY`` variables whenever a transport is given, and ours
always is: ``env_proxy`` reads them as httpx does. A loopback server is direct.
"""

from __future__ import annotations

import inspect
import ipaddress
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import ollama

from ._base import is_loopback
from ._compat import sdk_http_client
from ._httpx import CancellableTransport

_TRANSPORT_KWARGS = ("verify", "cert", "http1", "http2", "limits", "socket_options")
_HTTPX_KWARGS = frozenset(inspect.signature(httpx.Client).parameters) - {"base_url"}
_API_PATHS = ("/api", "/v1")


def check_host_url(url: object) -> None:
    """Reject a host URL that cannot name an Ollama server, naming ``host``.

    ``http://h:11434/api`` would send ``POST /api/api/chat`` (its 404 looks like
    a missing model); a scheme or port typo would fail later as a network error.
    A reverse proxy's path prefix is kept.
    """
    if not isinstance(url, str):
        raise TypeError(f"a host must be a URL string, not {type(url).__name__}")
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"host {url!r} must start with http:// or https://")
    try:
        parts.port  # noqa: B018  # urllib checks the port when it is read
    except ValueError as exc:
        raise ValueError(f"host {url!r} has a port that is not a number") from exc
    path = parts.path.rstrip("/")
    for api in _API_PATHS:
        if path == api or path.endswith(api) or f"{api}/" in f"{path}/":
            base = url[: url.rfind(api)].rstrip("/")
            raise ValueError(
                f"host {url!r} includes the API path {api!r}: give the server's "
                f"base URL, e.g. {base!r} (this client adds /api/chat)"
            )


def check_client_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Name the argument a typo or a misplaced setting is, here, not in httpx."""
    if "timeout" in kwargs:
        raise TypeError(
            "StreamingClient takes no timeout=: streams use connect_timeout=, "
            "first_token_timeout= (the model loading), read_timeout= (silence "
            "between chunks) and deadline= (the whole call)"
        )
    for key in kwargs.keys() - _HTTPX_KWARGS:
        raise TypeError(f"StreamingClient got an unexpected keyword argument {key!r}")


def make_sdk(
    host: str | None,
    kwargs: dict[str, Any],
    connect_timeout: float | None,
    proxy: str | httpx.Proxy | None,
) -> ollama.Client:
    """The SDK client for one host, streaming through a ``CancellableTransport``
    (direct, or through the explicit or the environment's proxy)."""
    kwargs["timeout"] = httpx.Timeout(None, connect=connect_timeout)
    if "transport" in kwargs:
        return ollama.Client(host, proxy=proxy, **kwargs)
    options = {k: kwargs.pop(k) for k in _TRANSPORT_KWARGS if k in kwargs}
    options["trust_env"] = kwargs.get("trust_env", True)
    plain = CancellableTransport(tls=False, **options)  # http needs no CA store
    sdk = ollama.Client(host, transport=plain, **kwargs)
    url = sdk_http_client(sdk).base_url
    if proxy is None and options["trust_env"]:
        proxy = env_proxy(url)
    if proxy is None and url.scheme == "http":
        return sdk
    sdk.close()  # type: ignore[no-untyped-call]  # untyped SDK
    return ollama.Client(
        host, transport=CancellableTransport(proxy=proxy, **options), **kwargs
    )


def env_proxy(url: httpx.URL) -> str | None:
    """The proxy URL the environment names for ``url``, or ``None`` (direct)."""
    if is_loopback(url.host):
        return None
    found = urllib.request.getproxies()
    for entry in (e.strip() for e in found.get("no", "").split(",")):
        if entry == "*" or (entry and _bypasses(entry, url)):
            return None
    proxy = found.get(url.scheme) or found.get("all")
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypasses(entry: str, url: httpx.URL) -> bool:
    """Whether one ``NO_PROXY`` entry covers ``url``: a host and its subdomains
    (``example.com``), only subdomains (``.example.com``), an IP or a network
    (``10.0.0.0/8``), each with an optional ``:port``; or a ``scheme://host``."""
    if "://" in entry:
        scheme, _, entry = entry.partition("://")
        if scheme not in ("all", url.scheme):
            return False
    host, port = entry, None
    if entry.count(":") == 1 or entry.startswith("["):
        host, _, port_text = entry.rpartition(":")
        port = int(port_text) if port_text.isdigit() else None
        host = host or entry
    default = {"http": 80, "https": 443}.get(url.scheme)
    if port is not None and port != (url.port or default):
        return False
    host = host.strip("[]").lower()
    target = url.host.lower()
    try:
        return ipaddress.ip_address(target) in ipaddress.ip_network(host, strict=False)
    except ValueError:
        pass
    if host.startswith("."):
        return target.endswith(host)
    return target == host or target.endswith("." + host.lstrip("*"))
