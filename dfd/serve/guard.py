"""What keeps pages on other sites away from the local server: Host and Origin checks, security headers.

A page on any web site can make the browser of someone running dfd.serve talk to it, two ways:
  DNS rebinding  the attacker's name (evil.example) is made to resolve to 127.0.0.1; the browser then
                 treats the server as evil.example's own and reads its answers. The request's Host
                 header still says evil.example, so requests for names the server is not known by get 421.
  CSRF           a form or XMLHttpRequest on evil.example posts a file to http://127.0.0.1:8000/v1/predict
                 (a "simple" request: no CORS preflight). The browser says where it came from in Origin
                 (and Sec-Fetch-Site): a POST from another origin gets 403.
Clients that are not browsers (curl, scripts) send no Origin and pass.

Known names: the bound address; for a loopback bind, localhost, 127.0.0.1 and ::1; for a wildcard bind
(0.0.0.0, ::), any IP literal (a browser sends one only when it was pointed at that address, which
rebinding cannot do), this machine's host name and the loopback names; always --allowed_hosts. The port
is not compared: port forwarding may change it, and rebinding changes the name.

Every answer also carries nosniff, X-Frame-Options: DENY (no framing: clickjacking) and the page's
Content-Security-Policy (dfd.serve.page).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """True when an address (or localhost) reaches only this machine."""
    address = _ip(host.strip("[]"))
    return host.lower() == "localhost" or (address is not None and address.is_loopback)


def known_hosts(bind_host: str, allowed_hosts=()) -> frozenset[str]:
    """The host names (lower case, IPv6 without brackets) a request's Host header may carry."""
    names = {bind_host.strip("[]").lower()} | {name.strip().strip("[]").lower() for name in allowed_hosts}
    if is_loopback(bind_host) or bind_host in WILDCARD_ADDRESSES:
        names.update(LOOPBACK_NAMES)
    if bind_host in WILDCARD_ADDRESSES:
        names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
    return frozenset(names - {""})


def _split(netloc: str, scheme: str = "http") -> tuple[str, int | None] | None:
    """(host name in lower case, port) of a Host header value or an Origin's netloc; None if malformed."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.path:
        return None
    return parts.hostname.lower(), port if port is not None else {"http": 80, "https": 443}.get(scheme)


def host_refusal(host_header: str | None, known: frozenset[str], wildcard: bool) -> str | None:
    """Why a Host header is refused, or None when the server is known by that name."""
    if host_header is None:
        return None   # HTTP/1.0 without Host: not a browser, so neither attack
    split = _split(host_header)
    if split is not None and (split[0] in known or (wildcard and _ip(split[0]) is not None)):
        return None
    return (f"this server is not known by the name in the Host header ({host_header!r}); open it by the address "
            "it listens on, or start it with --allowed_hosts=NAME for a name of this machine")


def origin_refusal(headers: dict[str, str]) -> str | None:
    """Why a POST is refused as coming from a page of another site, or None when it is this page's own."""
    refused = ("uploads are accepted only from this server's own page (or from clients that are not "
               "browsers); a page of another site (Origin {}) may not send files here")
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return refused.format(repr(headers.get("origin", site)))
    origin = headers.get("origin")
    if origin is None:
        return None
    parts = urlsplit(origin)
    own = _split(headers.get("host", ""), parts.scheme)
    theirs = _split(parts.netloc, parts.scheme) if parts.scheme in ("http", "https") and not parts.path else None
    return None if theirs is not None and theirs == own else refused.format(repr(origin))


def security_headers(csp: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
            (b"content-security-policy", csp.encode()), (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-resource-policy", b"same-origin")]


class Guard:
    """ASGI middleware: refuses unknown Host names (421) and cross-origin POSTs (403), adds security headers."""

    def __init__(self, app, bind_host: str, allowed_hosts=(), csp: str = "default-src 'none'"):
        self.app = app
        self.known = known_hosts(bind_host, allowed_hosts)
        self.wildcard = bind_host in WILDCARD_ADDRESSES
        self.headers = security_headers(csp)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        refusal = host_refusal(headers.get("host"), self.known, self.wildcard)
        if refusal is not None:
            return await self._refuse(send, 421, refusal)
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            refusal = origin_refusal(headers)
            if refusal is not None:
                return await self._refuse(send, 403, refusal)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + self.headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, send, status: int, error: str) -> None:
        # The body is not read: close the connection rather than leave it for a next request.
        body = json.dumps({"error": error}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")] + self.headers})
        await send({"type": "http.response.body", "body": body})
