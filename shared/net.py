"""The client's address, as far as the proxies in front of us can be trusted."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    """Which proxies in front of this process may tell us the client's address (X-Forwarded-For).

    Two ways to say it, for the two positions a service can be in:
    - ``hops``: the number of proxies that append the address they saw (Render's edge in front of
      the gateway is one). Entries left of those were written by the client and are ignored.
    - ``networks``: the addresses proxies connect from (the gateway, seen by a service on the
      private network). The chain is read right to left while the sender is such a proxy.
    With neither, the peer of the TCP connection is the client.
    """

    hops: int = 0
    networks: tuple[Network, ...] = field(default=())

    @classmethod
    def from_networks(cls, networks: Iterable[str]) -> TrustedProxies:
        return cls(networks=tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def is_proxy(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


def forwarded_chain(scope: Scope) -> list[str]:
    values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
    return [part.strip() for part in ",".join(values).split(",") if part.strip()]


def client_address(scope: Scope, trusted: TrustedProxies | None = None) -> str:
    """The address of whoever sent the request; a client cannot choose its own address."""
    peer = scope["client"][0] if scope.get("client") else "unknown"
    if trusted is None or (trusted.hops <= 0 and not trusted.networks):
        return peer
    hops = forwarded_chain(scope)
    if trusted.hops > 0:
        if not hops:
            return peer
        return hops[-trusted.hops] if len(hops) >= trusted.hops else hops[0]
    current = peer
    if not trusted.is_proxy(current):
        return current
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return current  # garbage in the chain: stop at the last address we can vouch for
        current = hop
        if not trusted.is_proxy(hop):
            return hop
    return current
