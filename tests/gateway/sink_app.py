"""A bare ASGI upstream for the gateway's streaming tests, run as a real process by uvicorn.

It stands where the documents service would, on the same prefix:
- POST /api/v1/documents/sink     reads the body chunk by chunk; answers its size and SHA-256
- GET  /api/v1/documents/blob?n=N streams N bytes in 64 KiB chunks
- GET  /api/v1/documents/sse      one event, then waits for POST /api/v1/documents/release, then one more
- GET  /api/v1/documents/echo-id  answers the request headers it received
- GET  /api/v1/documents/inflight how many sink requests are being read now
- GET  /api/v1/documents/moved    307 to its own absolute URL (Location, Content-Location and Link
                                  name its own address) with CORS headers of its own
- GET  /health                    pass
- WebSocket /api/v1/documents/ws/echo  sends every message back as it came (text as text, binary as
  binary); "headers" answers the handshake's headers as JSON, "close:<code>:<reason>" closes with
  that code and reason; how the client closed it is kept for GET /api/v1/documents/ws/last-close
- WebSocket anywhere else             refused at the handshake (403)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from urllib.parse import parse_qs

released = asyncio.Event()
inflight = 0
last_close: dict = {}


async def _json(send, body: dict, status: int = 200) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif path == "/health" or path == "/live":
        await _json(send, {"status": "pass"})
    elif path == "/api/v1/documents/sink":
        global inflight
        digest, size, more = hashlib.sha256(), 0, True
        inflight += 1
        try:
            while more:
                message = await receive()
                chunk = message.get("body", b"")
                digest.update(chunk)
                size += len(chunk)
                more = message.get("more_body", False)
        finally:
            inflight -= 1
        await _json(send, {"bytes": size, "sha256": digest.hexdigest()})
    elif path == "/api/v1/documents/inflight":
        await _json(send, {"inflight": inflight})
    elif path == "/api/v1/documents/blob":
        n = int(parse_qs(scope["query_string"].decode()).get("n", ["0"])[0])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(n).encode())],
            }
        )
        chunk = b"\xab" * 65536
        sent = 0
        while sent < n:
            part = chunk[: min(65536, n - sent)]
            sent += len(part)
            await send({"type": "http.response.body", "body": part, "more_body": sent < n})
    elif path == "/api/v1/documents/sse":
        released.clear()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"event: first\ndata: 1\n\n", "more_body": True})
        await asyncio.wait_for(released.wait(), timeout=30)
        await send({"type": "http.response.body", "body": b"event: second\ndata: 2\n\n", "more_body": False})
    elif path == "/api/v1/documents/release":
        released.set()
        await _json(send, {"released": True})
    elif path == "/api/v1/documents/moved":
        own = "http://" + dict(scope["headers"])[b"host"].decode()
        headers = [
            (b"location", f"{own}/api/v1/documents/blob?n=1".encode()),
            (b"content-location", f"{own}/api/v1/documents/moved".encode()),
            (b"link", f'<{own}/api/v1/documents/blob>; rel="next", <https://example.com/terms>; rel="terms"'.encode()),
            (b"access-control-allow-origin", b"*"),
            (b"content-type", b"application/json"),
        ]
        await send({"type": "http.response.start", "status": 307, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"moved": true}'})
    elif path == "/api/v1/documents/ws/last-close":
        await _json(send, last_close)
    elif path == "/api/v1/documents/set-cookie":
        headers = [(b"content-type", b"application/json"), (b"set-cookie", b"sink-session=one-client; Path=/")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})
    elif path == "/api/v1/documents/echo-id":
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        await _json(send, headers)
    else:
        await _json(send, {"status": 404}, status=404)


async def _websocket(scope, receive, send) -> None:
    await receive()  # websocket.connect
    if scope["path"] != "/api/v1/documents/ws/echo":
        await send({"type": "websocket.close", "code": 1008})
        return
    last_close.clear()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            last_close.update(code=message.get("code"), reason=message.get("reason", ""))
            return
        text = message.get("text")
        if text == "headers":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            await send({"type": "websocket.send", "text": json.dumps(headers)})
        elif text is not None and text.startswith("close:"):
            _, code, reason = text.split(":", 2)
            await send({"type": "websocket.close", "code": int(code), "reason": reason})
            return
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
