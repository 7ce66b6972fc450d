"""WebSockets through the gateway: an upgrade under a service's prefix is passed through to it.

Towards the client the socket is Starlette's, towards the service aiohttp's (the proxy's client, on
the service's own connection pool). What a proxied request passes, a socket passes too:
- at the handshake, refused with a problem+json answer: an ``Origin`` the CORS settings do not allow
  (403; a client that sends no Origin is not a browser and is not asked), the per-address rate limit
  (429, counted like an HTTP request), the service refusing the upgrade (its status) or being down
  (503);
- with the edge token check on, the first message must be a JSON text message with the caller's
  access token or API key in ``"token"`` (browsers cannot set headers on a WebSocket, and a token
  never goes in a URL): the gateway checks it as it checks an HTTP request's
  (``TokenVerifier.authenticate``: a key resolved, not revoked, with the scope of the path, ``llm``
  under ``/api/v1/llm``) before it connects to the service, takes one of the account's slots for
  long-lived requests (``slots.StreamSlots``, as uploads and event streams do) and passes the
  message on unchanged. A missing or invalid token or key closes the socket with 4401, a key
  without the scope 4403, no slot left 4429; the service is never contacted. Subprotocols are then
  not negotiated.

Then messages pass both ways as they come, text as text and binary as binary, in order. A close from
either side reaches the other with its code and reason; a side that vanishes without a close frame
is reported as 1001 (the client went away) to the service and 1014 (bad gateway) to the client. A
socket on which no message passed either way for WEBSOCKET_IDLE_SECONDS is closed with 4408 (as HTTP
408) to the client and 1001 to the service. A client message larger than MAX_BODY_BYTES closes the
socket with 1009.

Close codes the gateway chooses itself are 4000 + the HTTP status the same refusal has over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect

from shared.context import request_id_var
from shared.errors import ProblemError, problem_response
from shared.metrics import UPSTREAM_ERRORS
from shared.net import client_address
from ultrai_gateway.deps import Gateway
from ultrai_gateway.edge import DOT_SEGMENT, has_dot_segment
from ultrai_gateway.proxy import Upstream, upstream_url
from ultrai_gateway.settings import GatewaySettings
from ultrai_gateway.slots import Slot

log = logging.getLogger("ultrai_gateway.websocket")

# Request headers not passed on: hop-by-hop, the handshake's own (aiohttp writes its own), and
# those the gateway sets itself.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "upgrade",
        "host",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "proxy-authorization",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
    }
)
# What a service may send in one message (the final event of an orchestration carries every answer).
MAX_SERVICE_MESSAGE_BYTES = 16 * 1024 * 1024
CLOSE_TIMEOUT_SECONDS = 5.0
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# RFC 6455 §7.4: codes an endpoint may put in a close frame.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
GOING_AWAY = 1001
TOO_BIG = 1009
BAD_GATEWAY = 1014
IDLE = 4408


def close_code(status: int) -> int:
    """The close code standing for an HTTP status: 4000 + the status."""
    return 4000 + status if 400 <= status < 600 else 4500


def sendable(code: int | None, instead: int) -> int:
    """``code`` when a close frame may carry it, else ``instead`` (1005 and 1006 only ever describe
    a close that had no code or no frame)."""
    if code is not None and (code in _SENDABLE or 3000 <= code <= 4999):
        return code
    return 1000 if code == 1005 else instead


def short_reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    data = text.encode()
    if len(data) <= 123:
        return text
    return data[:120].decode(errors="ignore") + "..."


def origin_allowed(settings: GatewaySettings, origin: str | None) -> bool:
    """The CORS rule (``cors.py``): a listed origin, or one the regex matches in full. No Origin:
    not a browser, so no other site's page can be acting with the user's credentials."""
    if origin is None:
        return True
    if origin in settings.cors_origins:
        return True
    return bool(settings.cors_origin_regex and re.fullmatch(settings.cors_origin_regex, origin))


def add_websocket_routes(router: APIRouter, routes: dict[str, tuple[str, ...]], gateway: Gateway) -> None:
    """A WebSocket route under every prefix of the route table (service name -> its prefixes); the
    HTTP routes on the same paths never see a WebSocket scope, nor these an HTTP one."""
    for name, prefixes in routes.items():
        endpoint = websocket_endpoint(gateway, name)
        for prefix in prefixes:
            router.add_websocket_route(prefix + "/{path:path}", endpoint, name=f"websocket_{name}_{prefix}")


@dataclass
class End:
    """How a relay ended: which side, with what code and reason."""

    side: str  # "client" | "service" | "idle" | "too_big"
    code: int | None = None
    reason: str = ""


def websocket_endpoint(gateway: Gateway, name: str) -> Callable[[WebSocket], Awaitable[None]]:
    async def endpoint(websocket: WebSocket) -> None:
        await PassThrough(gateway, gateway.upstreams[name], websocket).run()

    return endpoint


class PassThrough:
    """One client socket and its socket to the service."""

    def __init__(self, gateway: Gateway, upstream: Upstream, websocket: WebSocket) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.upstream = upstream
        self.client = websocket
        self.service: aiohttp.ClientWebSocketResponse | None = None
        self.slot: Slot | None = None
        self.last_message = 0.0
        incoming = websocket.headers.get("x-request-id")
        self.request_id = incoming if incoming and _VALID_ID.match(incoming) else uuid.uuid4().hex

    async def run(self) -> None:
        request_id_var.set(self.request_id)
        try:
            if not await self._handshake():
                return
            await self._relay()
        finally:
            if self.service is not None and not self.service.closed:
                with contextlib.suppress(Exception):
                    await self.service.close(code=GOING_AWAY)
            if self.slot is not None:
                await self.gateway.slots.release(self.slot)

    # ---- before the first relayed message ------------------------------------------------------
    async def _handshake(self) -> bool:
        """Checks, the client accepted, the service connected (and the token's first message passed
        on): True when the relay may start; otherwise the client has been answered."""
        if not origin_allowed(self.settings, self.client.headers.get("origin")):
            await self._deny(ProblemError(403, "Cross-origin WebSocket refused: the origin is not allowed."))
            return False
        if has_dot_segment(self.client.scope["path"]):  # as for HTTP (routes.proxy_endpoint)
            await self._deny(ProblemError(400, DOT_SEGMENT))
            return False
        try:
            await self.gateway.check_rate(self.client)
        except ProblemError as exc:
            await self._deny(exc)
            return False
        if not self.settings.edge_auth:
            connected = await self._connect(self.client.scope.get("subprotocols") or [])
            if isinstance(connected, ProblemError):
                await self._deny(connected)
                return False
            await self.client.accept(subprotocol=connected.protocol)
            return True
        # The token comes in the first message: accepted first, connected once it is verified.
        await self.client.accept()
        first = await self._first_message()
        if first is None:
            return False
        connected = await self._connect([])
        if isinstance(connected, ProblemError):
            await self._close_client(close_code(connected.status), connected.detail or "")
            return False
        await connected.send_str(first)
        return True

    async def _first_message(self) -> str | None:
        """The first message, once its token is verified and a slot taken; None when the client has
        been closed instead."""
        try:
            async with asyncio.timeout(self.settings.websocket_idle_seconds):
                message = await self.client.receive()
        except TimeoutError:
            await self._close_client(IDLE, "No first message in time.")
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if len(text or message.get("bytes") or b"") > self.settings.max_body_bytes:
            await self._close_client(TOO_BIG, self._too_big())
            return None
        token = None
        if text is not None:
            with contextlib.suppress(ValueError):
                body = json.loads(text)
                token = body.get("token") if isinstance(body, dict) else None
        try:
            if not isinstance(token, str) or not token:
                raise ProblemError(401, "The first message must carry a valid access token in 'token'.")
            # As the edge check of an HTTP request: an access token, or an API key with its scope.
            principal = await self.gateway.verifier.authenticate(token, self.client)
            self.slot = await self.gateway.slots.take(str(principal.user_id))
        except ProblemError as exc:
            await self._close_client(close_code(exc.status), exc.detail or exc.title)
            return None
        return text

    async def _connect(self, protocols: list[str]) -> aiohttp.ClientWebSocketResponse | ProblemError:
        upstream = self.upstream
        try:
            self.service = await upstream.session.ws_connect(
                upstream_url(upstream, self.client.scope),
                headers=self._headers(),
                protocols=protocols,
                autoclose=True,
                autoping=True,
                max_msg_size=MAX_SERVICE_MESSAGE_BYTES,
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_SECONDS),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if 400 <= exc.status < 500:
                return ProblemError(exc.status, f"The {upstream.name} service refused the WebSocket.")
            return self._failed(exc, 502, "did not accept the WebSocket")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.ServerDisconnectedError) as exc:
            return self._failed(exc, 503, "is unavailable; try again shortly")
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            return self._failed(exc, 504, "did not answer in time")
        except (aiohttp.ClientError, OSError) as exc:
            return self._failed(exc, 502, "broke off the WebSocket handshake")
        return self.service

    def _failed(self, exc: BaseException, status: int, what: str) -> ProblemError:
        UPSTREAM_ERRORS.labels("gateway", self.upstream.name, type(exc).__name__).inc()
        log.warning("websocket to %s failed: %s", self.upstream.name, type(exc).__name__)
        headers = {"Retry-After": "5"} if status == 503 else None
        return ProblemError(status, f"The {self.upstream.name} service {what}.", headers=headers)

    def _headers(self) -> list[tuple[str, str]]:
        scope = self.client.scope
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1") not in _NOT_FORWARDED
        ]
        headers.append(("X-Forwarded-For", client_address(scope, self.upstream.trusted)))
        headers.append(("X-Forwarded-Proto", "https" if scope.get("scheme") == "wss" else "http"))
        headers.append(("X-Request-ID", self.request_id))
        host = self.client.headers.get("host")
        if host:
            headers.append(("X-Forwarded-Host", host))
        return headers

    async def _deny(self, exc: ProblemError) -> None:
        """Refuse the handshake with the problem's status and body (a bare 403 from a server that
        cannot send an answer to a WebSocket handshake)."""
        response = problem_response(exc.status, exc.detail, title=exc.title, headers=exc.headers, extra=exc.extra)
        if "websocket.http.response" in self.client.scope.get("extensions", {}):
            await self.client.send_denial_response(response)
        else:
            await self.client.close(1008)

    # ---- the relay -----------------------------------------------------------------------------
    async def _relay(self) -> None:
        service = self.service
        assert service is not None
        loop = asyncio.get_running_loop()
        self.last_message = loop.time()
        pumps = [
            asyncio.create_task(self._client_to_service(service)),
            asyncio.create_task(self._service_to_client(service)),
            asyncio.create_task(self._idle()),
        ]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        end = next(iter(done)).result()
        if end.side == "client":
            reason = end.reason if end.code not in (None, 1005, 1006) else "The client went away."
            await self._close_service(sendable(end.code, GOING_AWAY), reason)
        elif end.side == "service":
            reason = end.reason if end.code not in (None, 1005, 1006) else "The service connection broke."
            await self._close_client(sendable(end.code, BAD_GATEWAY), reason)
        elif end.side == "idle":
            idle = f"No message for {self.settings.websocket_idle_seconds:g} s."
            await self._close_service(GOING_AWAY, idle)
            await self._close_client(IDLE, idle)
        else:
            await self._close_service(GOING_AWAY, "The client sent too large a message.")
            await self._close_client(TOO_BIG, self._too_big())

    async def _client_to_service(self, service: aiohttp.ClientWebSocketResponse) -> End:
        limit = self.settings.max_body_bytes
        loop = asyncio.get_running_loop()
        while True:
            message = await self.client.receive()
            if message["type"] == "websocket.disconnect":
                return End("client", message.get("code"), message.get("reason") or "")
            self.last_message = loop.time()
            text, data = message.get("text"), message.get("bytes")
            try:
                if text is not None:
                    if len(text) > limit:
                        return End("too_big")
                    await service.send_str(text)
                else:
                    if len(data or b"") > limit:
                        return End("too_big")
                    await service.send_bytes(data or b"")
            except (aiohttp.ClientError, OSError):
                return End("service", 1006)

    async def _service_to_client(self, service: aiohttp.ClientWebSocketResponse) -> End:
        loop = asyncio.get_running_loop()
        while True:
            message = await service.receive()
            if message.type is aiohttp.WSMsgType.CLOSE:
                return End("service", message.data, message.extra or "")
            if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                return End("service", 1006)  # CLOSED, CLOSING or ERROR: no close frame came
            self.last_message = loop.time()
            try:
                if message.type is aiohttp.WSMsgType.TEXT:
                    await self.client.send_text(message.data)
                else:
                    await self.client.send_bytes(message.data)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return End("client", 1006)

    async def _idle(self) -> End:
        loop = asyncio.get_running_loop()
        idle = self.settings.websocket_idle_seconds
        while True:
            left = self.last_message + idle - loop.time()
            if left <= 0:
                return End("idle")
            await asyncio.sleep(left)

    def _too_big(self) -> str:
        return f"A message is larger than the limit of {self.settings.max_body_bytes} bytes."

    async def _close_client(self, code: int, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.client.close(code, short_reason(reason))

    async def _close_service(self, code: int, reason: str) -> None:
        if self.service is not None and not self.service.closed:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await self.service.close(code=code, message=short_reason(reason).encode())
