"""The client's address, as far as the proxies in front of us can be trusted."""

from __future__ import annotations

from starlette.types import Scope


def client_address(scope: Scope, trusted_hops: int = 0) -> str:
    """The address of whoever sent the request.

    ``trusted_hops`` is the number of proxies in front of this process that append the address
    they saw to X-Forwarded-For (Render's edge is one). Entries left of those were written by the
    client and are ignored, so a client cannot choose its own address. With 0 hops the peer of
    the TCP connection is the client.
    """
    peer = scope["client"][0] if scope.get("client") else "unknown"
    if trusted_hops <= 0:
        return peer
    values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
    hops = [part.strip() for part in ",".join(values).split(",") if part.strip()]
    if not hops:
        return peer
    return hops[-trusted_hops] if len(hops) >= trusted_hops else hops[0]
