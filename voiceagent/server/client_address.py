"""Who a request came from, for per-client limits.

Directly connected clients are known by their socket's address. Behind a reverse proxy every
request comes from the proxy, so the proxy's ``X-Forwarded-For`` is believed, but only from
the proxies named as trusted: anyone else could write any address there and slip past the
limits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers

from ..errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddresses:
    """``trusted_proxies``: addresses or networks (``10.0.0.0/8``) of the reverse proxies in
    front of the server."""

    def __init__(self, trusted_proxies: Sequence[str] = ()) -> None:
        self.trusted: list[IPNetwork] = []
        for proxy in trusted_proxies:
            try:
                self.trusted.append(ipaddress.ip_network(proxy.strip(), strict=False))
            except ValueError as exc:
                raise ConfigError(f"trusted proxy {proxy!r} is not an IP address or network: "
                                  f"{exc}") from exc

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def of(self, peer: str | None, headers: Headers) -> str:
        """The client's address: the socket's peer, or, when that is a trusted proxy, the
        right-most ``X-Forwarded-For`` hop that is not one (each proxy appends the address it
        saw, so the hops to the left of the first untrusted one are the client's to forge)."""
        address = peer or "unknown"
        if not self.trusted or not self.trusts(address):
            return address
        hops = [hop.strip() for value in headers.getlist("x-forwarded-for")
                for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = hop
            if not self.trusts(hop):
                break
        return address
