"""HTTP digest authentication as SIP uses it (RFC 3261 22.4, RFC 7616 / RFC 8760):
answering a registrar's 401/407 challenge with MD5 or SHA-256, qop=auth or none."""

from __future__ import annotations

import hashlib
import re
import secrets

_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class DigestError(ValueError):
    """A challenge we cannot answer (unknown scheme or algorithm)."""


def parse_challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    return {k.lower(): v.strip('"') for k, v in _PARAM.findall(rest)}


def authorization(challenge: dict[str, str], *, method: str, uri: str, username: str,
                  password: str, nc: int = 1, cnonce: str | None = None) -> str:
    """The Authorization (or Proxy-Authorization) header value answering ``challenge``."""
    algorithm = challenge.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")

    def h(text: str) -> str:
        return _HASHES[algorithm](text.encode()).hexdigest()

    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    fields = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"',
              f'uri="{uri}"', f"algorithm={algorithm}"]
    if "auth" in qops:
        cnonce = cnonce or secrets.token_hex(8)
        count = f"{nc:08x}"
        fields += [f'response="{h(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")}"',
                   "qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    elif qops:
        raise DigestError(f"unsupported qop {challenge['qop']!r} (only auth)")
    else:
        fields.append(f'response="{h(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(fields)
