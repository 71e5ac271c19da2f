"""Which web pages and host names may reach the server: the Origin and Host checks.

A server without a key on 127.0.0.1 is still reachable from the browser of the person running it, so any
web page they open could send it requests. Three checks keep web pages out:

- ``Origin``: a request that carries one (browsers send it on every cross-origin request, and on every
  POST) is refused with 403 unless the origin is allowed: the ``--cors-origins`` list ("*": any), and browser
  extension origins (``chrome-extension://``, ``moz-extension://``, ``safari-web-extension://``). Extension
  origins are allowed by default, so the covertune extension works out of the box; once ``--cors-origins``
  names one extension origin (``chrome-extension://ID``, the id its options page shows) only the extension
  origins listed are. Requests without an Origin (curl, scripts, other programs) are not affected.
- ``Host``: DNS rebinding points an attacker's name at 127.0.0.1 so that their page becomes same-origin with
  the server; its requests then carry the attacker's name in ``Host``. Only loopback names and addresses
  (``localhost``, 127.0.0.0/8, ``::1``), the bound address and the names given with ``--allowed-hosts``
  ("*": any) are served; others get 403.
- ``Content-Type``: the JSON routes accept only ``application/json`` (415 otherwise, checked in
  ``covertune.serve.common.read_json``), which a page can send cross-origin only after a CORS preflight.
"""

from __future__ import annotations

import ipaddress
import logging
import re

from starlette.types import ASGIApp, Receive, Scope, Send

from covertune.serve.errors import APIError

log = logging.getLogger(__name__)

EXTENSION_SCHEMES = ("chrome-extension", "moz-extension", "safari-web-extension")
EXTENSION_ORIGINS = r"(chrome-extension|moz-extension|safari-web-extension)://[A-Za-z0-9._-]+"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_extension(origin: str) -> bool:
    return origin.split("://", 1)[0] in EXTENSION_SCHEMES


def cors_settings(cors_origins) -> dict:
    """CORSMiddleware's allow_origins / allow_origin_regex for ``--cors-origins``: extension origins by
    regular expression unless one is pinned by name."""
    origins = [o.rstrip("/") for o in cors_origins]
    pinned = any(is_extension(o) for o in origins)
    return {"allow_origins": origins, "allow_origin_regex": None if pinned else EXTENSION_ORIGINS}


def origin_allowed(origin: str, cors_origins) -> bool:
    settings = cors_settings(cors_origins)
    if "*" in settings["allow_origins"] or origin in settings["allow_origins"]:
        return True
    regex = settings["allow_origin_regex"]
    return bool(regex and re.fullmatch(regex, origin))


def host_name(host: str) -> str:
    """The name or address of a Host header, without its port ("[::1]:8000" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, bound: str, allowed_hosts) -> bool:
    name = host_name(host)
    allowed = {host_name(h) for h in allowed_hosts}
    if "*" in allowed or is_loopback(name) or name in allowed:
        return True
    return bound not in WILDCARD_HOSTS and name == host_name(bound)


class OriginHostMiddleware:
    """403 for a request from a web origin or to a host name the server does not allow (see the module
    docstring); outermost, so nothing else runs for such a request."""

    def __init__(self, app: ASGIApp, cors_origins=(), bound: str = "127.0.0.1", allowed_hosts=()):
        self.app, self.cors_origins, self.bound, self.allowed_hosts = app, list(cors_origins), bound, list(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin", b"").decode("latin-1")
        err = None
        if host and not host_allowed(host, self.bound, self.allowed_hosts):
            err = APIError(403, f"host name {host_name(host)!r} is not served here (a DNS rebinding guard); start the "
                           "server with --allowed-hosts NAME to serve it")
        elif origin and not origin_allowed(origin, self.cors_origins):
            err = APIError(403, f"requests from the web origin {origin!r} are refused; start the server with "
                           f"--cors-origins {origin} to allow that page")
        if err is None:
            return await self.app(scope, receive, send)
        log.info("403 %s %s: %s", scope["method"], scope["path"], err.message)
        await err.response(scope["path"].startswith("/api/"))(scope, receive, send)
