"""ICE configuration for the WebRTC transport: STUN/TURN servers and host addresses.

A TURN server is given as one URL with its credentials, ``turn:USER:PASS@HOST:PORT``
(``turns:`` for TLS, ``?transport=tcp`` kept), which :func:`parse_ice_server` splits into the
standard ``RTCIceServer`` fields.

aioice offers its host candidates on every interface except loopback, and has no option for
which. :func:`restrict_host_addresses` makes a peer connection offer exactly the addresses
given (e.g. ``127.0.0.1`` for a browser on the same machine, or the one public interface of a
server) by giving its ICE connections :class:`HostAddressConnection`'s candidate gathering.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast
from urllib.parse import unquote

from aioice import Candidate, Connection
from aiortc import RTCIceServer, RTCPeerConnection

from ..errors import ConfigError


def parse_ice_server(url: str) -> RTCIceServer:
    """``stun:HOST[:PORT]`` or ``turn[s]:[USER:PASS@]HOST[:PORT][?transport=udp|tcp]``."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in ("stun", "stuns", "turn", "turns") or not rest:
        raise ConfigError(f"ICE server {url!r}: expected stun:HOST[:PORT] or "
                          "turn:USER:PASS@HOST[:PORT]")
    creds, at, host = rest.rpartition("@")
    if not at:
        return RTCIceServer(urls=url)
    user, colon, password = creds.partition(":")
    if not colon or not user:
        raise ConfigError(f"ICE server {url!r}: credentials must look like USER:PASS@")
    return RTCIceServer(urls=f"{scheme}:{host}", username=unquote(user),
                        credential=unquote(password))


class HostAddressConnection(Connection):
    """An aioice connection whose host candidates are ``host_addresses`` when set."""

    host_addresses: Sequence[str] = ()

    async def get_component_candidates(self, component: int, addresses: list[str],
                                       timeout: int = 5) -> list[Candidate]:
        chosen = list(self.host_addresses) if self.host_addresses else addresses
        return await super().get_component_candidates(component, chosen, timeout)


def restrict_host_addresses(pc: RTCPeerConnection, addresses: Iterable[str]) -> None:
    """Offer host candidates only on ``addresses``; call before ``setLocalDescription``
    (which gathers). aiortc has no public hook for this: its gatherers' aioice connections
    are switched to the subclass above, which changes nothing else about them."""
    addresses = list(addresses)
    if not addresses:
        return
    transports = {t.sender.transport for t in pc.getTransceivers() if t.sender.transport}
    if pc.sctp is not None:
        transports.add(pc.sctp.transport)
    for dtls in transports:
        connection = dtls.transport.iceGatherer._connection
        connection.__class__ = HostAddressConnection
        cast(HostAddressConnection, connection).host_addresses = addresses
