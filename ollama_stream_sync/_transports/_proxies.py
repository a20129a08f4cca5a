"""Which proxy, if any, the environment names for one URL, as httpx reads it.

httpx ignores ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY`` whenever
a transport is given, and ours always is: so we read them here the way httpx
does (the same variables, upper and lower case, the same ``NO_PROXY`` forms),
for the one server a transport talks to. A loopback server is always direct.
"""

from __future__ import annotations

import ipaddress
import urllib.request

import httpx

from ._base import is_loopback


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
