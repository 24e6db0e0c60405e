"""Who may start a call: the inbound admission checks of the SIP bridge, applied to every
new INVITE (not to retransmissions or requests inside a call), in this order:

1. the allow-list of networks (the PBX or trunk addresses): others get ``403 Forbidden``,
   the response RFC 3261 21.4.4 gives for a request the server understood but will not
   serve, whoever the caller is (authenticating would not help);
2. a per-source rate limit (one token bucket per IP address, :mod:`voiceagent.ratelimit`):
   beyond it ``503 Service Unavailable`` with ``Retry-After`` (RFC 3261 21.5.4), so a
   proxy tries another server and a phone tries again later;
3. the digest challenge, when credentials are configured: ``401 Unauthorized`` with
   ``WWW-Authenticate`` (RFC 3261 22.2) until the INVITE carries a right answer.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from pydantic import BaseModel, Field

from ..ratelimit import RateLimitOptions, SourceRateLimiter
from .digest import DigestChallenger
from .sip_message import SipMessage


class InboundAuth(BaseModel):
    """Credentials inbound INVITEs must prove (HTTP digest, qop=auth)."""

    username: str = Field(min_length=1)
    password: str = Field(min_length=1, repr=False)
    realm: str = "voiceagent"
    algorithm: Literal["MD5", "SHA-256"] = "MD5"
    #: seconds a nonce is accepted; older ones are answered with a fresh (stale) challenge
    nonce_ttl: float = Field(300.0, gt=0)


@dataclass
class Refusal:
    """The final response a refused INVITE gets."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)


class Admission:
    """The checks, configured by :class:`~voiceagent.telephony.sip_server.SipOptions`."""

    def __init__(self, *, allow_from: Sequence[IPv4Network | IPv6Network] = (),
                 rate_limit: RateLimitOptions | None = None,
                 auth: InboundAuth | None = None) -> None:
        self.allow_from = list(allow_from)
        self._limiter = SourceRateLimiter(rate_limit) if rate_limit else None
        self._challenger = DigestChallenger(
            auth.username, auth.password, realm=auth.realm, algorithm=auth.algorithm,
            nonce_ttl=auth.nonce_ttl) if auth else None

    def allowed(self, host: str) -> bool:
        """Whether ``host`` is on the allow-list (everyone is when the list is empty)."""
        if not self.allow_from:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow_from)

    def check(self, invite: SipMessage, host: str) -> Refusal | None:
        """None when the INVITE from ``host`` may start a call, else how to refuse it."""
        if not self.allowed(host):
            return Refusal(403, "Forbidden (source not allowed)")
        if self._limiter is not None and not self._limiter.allow(host):
            wait = max(1, math.ceil(self._limiter.retry_after(host)))
            return Refusal(503, "Service Unavailable (too many calls from this address)",
                           [("Retry-After", str(wait))])
        if self._challenger is not None:
            verdict = self._challenger.verify(invite.get("authorization"), invite.method)
            if verdict != "ok":
                return Refusal(401, "Unauthorized", [
                    ("WWW-Authenticate", self._challenger.challenge(stale=verdict == "stale"))])
        return None
