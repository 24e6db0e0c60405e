"""HTTP digest authentication as SIP uses it (RFC 3261 22.4, RFC 7616 / RFC 8760), both ways:
answering a registrar's 401/407 challenge (:func:`authorization`), and challenging inbound
INVITEs ourselves (:class:`DigestChallenger`). MD5 or SHA-256, qop=auth or none."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import Literal

_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class DigestError(ValueError):
    """A challenge we cannot answer (unknown scheme or algorithm)."""


def parse_challenge(header: str) -> dict[str, str]:
    """The parameters of a ``Digest ...`` header value (a challenge or its answer)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    return {k.lower(): v.strip('"') for k, v in _PARAM.findall(rest)}


def _response(algorithm: str, *, username: str, realm: str, password: str, method: str,
              uri: str, nonce: str, qop: str = "", nc: str = "", cnonce: str = "") -> str:
    """The ``response`` value RFC 7616 3.4.1 defines (RFC 2069 form without qop)."""
    def h(text: str) -> str:
        return _HASHES[algorithm](text.encode()).hexdigest()

    ha1, ha2 = h(f"{username}:{realm}:{password}"), h(f"{method}:{uri}")
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")


def authorization(challenge: dict[str, str], *, method: str, uri: str, username: str,
                  password: str, nc: int = 1, cnonce: str | None = None) -> str:
    """The Authorization (or Proxy-Authorization) header value answering ``challenge``."""
    algorithm = challenge.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    fields = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"',
              f'uri="{uri}"', f"algorithm={algorithm}"]
    common = {"username": username, "realm": realm, "password": password, "method": method,
              "uri": uri, "nonce": nonce}
    if "auth" in qops:
        cnonce = cnonce or secrets.token_hex(8)
        count = f"{nc:08x}"
        digest = _response(algorithm, **common, qop="auth", nc=count, cnonce=cnonce)
        fields += [f'response="{digest}"', "qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    elif qops:
        raise DigestError(f"unsupported qop {challenge['qop']!r} (only auth)")
    else:
        fields.append(f'response="{_response(algorithm, **common)}"')
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(fields)


Verdict = Literal["ok", "stale", "denied"]


class DigestChallenger:
    """The server side: challenges (``WWW-Authenticate`` values) and the check of their
    answers, for one user name and password.

    A nonce carries its own issue time and an HMAC of it under a per-process key, so nothing
    is stored per challenge (a flood of INVITEs cannot grow memory) and a nonce older than
    ``nonce_ttl`` is refused as stale (the client retries with the fresh one, RFC 7616
    3.3). Within its lifetime a nonce may be reused: replay is bounded by the lifetime.
    """

    def __init__(self, username: str, password: str, *, realm: str = "voiceagent",
                 algorithm: str = "MD5", nonce_ttl: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        if algorithm not in _HASHES:
            raise DigestError(f"unsupported digest algorithm {algorithm!r}")
        self.username, self.realm, self.algorithm = username, realm, algorithm
        self.nonce_ttl = nonce_ttl
        self._password = password
        self._clock = clock
        self._key = secrets.token_bytes(32)

    def challenge(self, *, stale: bool = False) -> str:
        issued = f"{int(self._clock() * 1000):x}"
        nonce = f"{issued}.{self._sign(issued)}"
        return (f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={self.algorithm}, '
                f'qop="auth"' + (", stale=true" if stale else ""))

    def verify(self, header: str | None, method: str) -> Verdict:
        """``ok`` for a right answer to one of our live nonces; ``stale`` for a right
        answer to an expired one; ``denied`` for anything else (none, wrong, forged)."""
        if not header:
            return "denied"
        try:
            answer = parse_challenge(header)
        except DigestError:
            return "denied"
        issued, _, signature = answer.get("nonce", "").partition(".")
        if (answer.get("username") != self.username or answer.get("realm") != self.realm
                or answer.get("algorithm", "MD5").upper() != self.algorithm
                or not hmac.compare_digest(signature, self._sign(issued))):
            return "denied"
        qop = answer.get("qop", "")
        if qop not in ("", "auth"):
            return "denied"
        expected = _response(self.algorithm, username=self.username, realm=self.realm,
                             password=self._password, method=method,
                             uri=answer.get("uri", ""), nonce=answer["nonce"], qop=qop,
                             nc=answer.get("nc", ""), cnonce=answer.get("cnonce", ""))
        if not hmac.compare_digest(expected, answer.get("response", "")):
            return "denied"
        age = self._clock() - int(issued, 16) / 1000
        return "ok" if 0 <= age <= self.nonce_ttl else "stale"

    def _sign(self, issued: str) -> str:
        return hmac.new(self._key, issued.encode(), hashlib.sha256).hexdigest()[:32]
