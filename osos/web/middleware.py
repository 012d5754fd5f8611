"""Pure ASGI middleware at the edge of the web app: who the client is, and how much of a body it may send.

Both run before FastAPI sees a request (HES-6 "validate everything received"):

* :class:`ClientAddress` decides the client address itself. uvicorn runs with ``proxy_headers=False`` (its default
  trusts ``X-Forwarded-For`` from loopback, so anyone on the host could pick an address per request and dodge login
  throttling); here ``X-Forwarded-For`` / ``X-Forwarded-Proto`` count only when the TCP peer is one of
  ``Settings.trusted_proxies``.
* :class:`BodyLimit` answers 413 for a body over ``Settings.max_body_bytes`` before it is read whole: at once from
  ``Content-Length``, and by counting the chunks of a streamed (chunked) body, stopping at the limit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from osos.config import IPNetwork

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> str | None:
    """All values of one header joined by commas (RFC 9110 list semantics), or None."""
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]
    return ", ".join(values) if values else None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:1234"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    """Sets ``scope["client"]`` from ``X-Forwarded-For`` only behind a trusted proxy.

    The chain is read from the right (the hop our proxy added) leftwards; trusted proxies are skipped and the first
    address that is not one is the client, so a client cannot prepend a forged address to get past throttling."""

    def __init__(self, app: ASGIApp, trusted: tuple[IPNetwork, ...]) -> None:
        self.app = app
        self.trusted = trusted

    def _is_trusted(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return ip is not None and any(ip.version == net.version and ip in net for net in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted:
            peer = scope.get("client")
            if peer and self._is_trusted(_ip(str(peer[0]))):
                scope = self._resolve(scope, str(peer[0]))
        await self.app(scope, receive, send)

    def _resolve(self, scope: Scope, peer: str) -> Scope:
        forwarded = _header(scope, b"x-forwarded-for")
        if not forwarded:
            return scope
        client = peer
        for hop in reversed([h for h in forwarded.split(",") if h.strip()]):
            ip = _ip(hop)
            if ip is None:  # garbage in the chain: stop at the last address we could trust
                break
            client = str(ip)
            if not self._is_trusted(ip):
                break
        scope = dict(scope)
        scope["client"] = (client, 0)
        proto = _header(scope, b"x-forwarded-proto")
        if proto:
            last = proto.split(",")[-1].strip().lower()
            if last in ("http", "https"):
                scope["scheme"] = last if scope["type"] == "http" else {"http": "ws", "https": "wss"}[last]
        return scope


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the limit (the middleware turns it into 413)."""


class BodyLimit:
    """413 for request bodies over ``max_bytes``, without reading them whole (HES-6)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, send: Send) -> None:
        text = f"request body larger than {self.max_bytes} bytes"
        if str(scope.get("path", "")).startswith("/api/"):
            body, ctype = json.dumps({"detail": text}).encode(), b"application/json"
        else:
            body, ctype = text.encode(), b"text/plain; charset=utf-8"
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                too_long = int(declared.split(",")[0].strip()) > self.max_bytes
            except ValueError:
                too_long = False  # the server refuses a malformed length itself
            if too_long:
                await self._refuse(scope, send)
                return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(f"more than {self.max_bytes} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app makes of the aborted body (FastAPI: 400), the answer is our 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started:
            await self._refuse(scope, send)
