"""Registration with a SIP registrar (a PBX, a trunk provider), so calls to an account
reach the bridge: REGISTER, answer the digest challenge, refresh before it expires,
unregister when the bridge closes."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, Field, SecretStr

from .digest import DigestError, authorization, parse_challenge
from .sip_message import SipMessage, header_params, new_branch, new_tag

log = logging.getLogger(__name__)


class RegistrationOptions(BaseModel):
    #: the registrar, as host or host:port (UDP)
    registrar: str
    #: the account: user part of the address of record sip:USER@DOMAIN
    username: str
    password: SecretStr = SecretStr("")
    #: the domain of the address of record (default: the registrar's host)
    domain: str | None = None
    #: the name to authenticate as, when it differs from ``username``
    auth_username: str | None = None
    expires: int = Field(300, ge=30)
    #: after a failed attempt, try again this much later (seconds)
    retry_after: float = Field(30.0, gt=0)


class RegistrationError(Exception):
    """The registrar refused us (bad credentials, a challenge we cannot answer)."""


Request = Callable[[SipMessage, tuple[str, int]], Awaitable[SipMessage]]


class Registrar:
    """Keeps one binding alive at the registrar; :attr:`registered` says whether it is."""

    def __init__(self, options: RegistrationOptions, request: Request,
                 contact: Callable[[tuple[str, int]], str]) -> None:
        self.options = options
        self._request = request
        self._contact = contact  # our host:port as seen from a peer address
        host, _, port = options.registrar.partition(":")
        self._host, self._port = host, int(port or 5060)
        self.address: tuple[str, int] | None = None
        self.domain = options.domain or host
        self.aor = f"sip:{options.username}@{self.domain}"
        self.registered = False
        self.last_error = ""
        self._call_id = f"{new_tag()}{new_tag()}@voiceagent"
        self._tag = new_tag()
        self._cseq = 0

    async def run(self) -> None:
        """Register, then refresh at 80% of the granted time, for as long as it runs."""
        while True:
            try:
                granted = await self.register(self.options.expires)
                delay = max(granted * 0.8, 5.0)
            except (RegistrationError, TimeoutError, OSError) as exc:
                self.registered = False
                self.last_error = str(exc)
                log.warning("registration of %s failed: %s", self.aor, exc)
                delay = self.options.retry_after
            await asyncio.sleep(delay)

    async def unregister(self) -> None:
        if not self.registered:
            return
        try:
            await asyncio.wait_for(self.register(0), 5.0)
        except (RegistrationError, TimeoutError, OSError) as exc:
            log.info("unregistering %s failed: %s", self.aor, exc)

    async def register(self, expires: int) -> int:
        """One REGISTER transaction (with the digest challenge); returns the seconds the
        registrar granted."""
        if self.address is None:
            infos = await asyncio.get_running_loop().getaddrinfo(
                self._host, self._port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
            host, port = infos[0][4][:2]
            self.address = (str(host), int(port))
        address = self.address
        reply = await self._request(self._message(expires), address)
        if reply.status in (401, 407):
            header = "www-authenticate" if reply.status == 401 else "proxy-authenticate"
            try:
                challenge = parse_challenge(reply.get(header) or "")
                credentials = authorization(
                    challenge, method="REGISTER", uri=f"sip:{self.domain}",
                    username=self.options.auth_username or self.options.username,
                    password=self.options.password.get_secret_value())
            except DigestError as exc:
                raise RegistrationError(str(exc)) from exc
            retry = self._message(expires)
            retry.add("Authorization" if reply.status == 401 else "Proxy-Authorization",
                      credentials)
            reply = await self._request(retry, address)
        if reply.status != 200:
            raise RegistrationError(f"registrar answered {reply.status} {reply.reason}")
        self.registered = expires > 0
        self.last_error = ""
        return _granted(reply, expires)

    def _message(self, expires: int) -> SipMessage:
        self._cseq += 1
        assert self.address is not None
        host = self._contact(self.address)
        msg = SipMessage(method="REGISTER", uri=f"sip:{self.domain}")
        msg.add("Via", f"SIP/2.0/UDP {host};branch={new_branch()};rport")
        msg.add("Max-Forwards", "70")
        msg.add("From", f"<{self.aor}>;tag={self._tag}")
        msg.add("To", f"<{self.aor}>")
        msg.add("Call-ID", self._call_id)
        msg.add("CSeq", f"{self._cseq} REGISTER")
        msg.add("Contact", f"<sip:{self.options.username}@{host}>")
        msg.add("Expires", str(expires))
        msg.add("User-Agent", "voiceagent")
        return msg


def _granted(reply: SipMessage, asked: int) -> int:
    for contact in reply.get_all("contact"):
        value = header_params(contact).get("expires", "")
        if value.isdigit():
            return int(value)
    value = reply.get("expires") or ""
    return int(value) if value.isdigit() else asked
