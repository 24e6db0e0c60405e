"""SIP messages (RFC 3261 section 7): parse what arrives on the wire, build what we send.

Parsing is strict where a mistake could mislead us (start line, Content-Length, the headers
every request needs) and lenient where peers differ harmlessly (header case, compact forms,
folded lines, bare LF line ends).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

#: A UDP datagram cannot be larger; anything claiming more is not a SIP message.
MAX_MESSAGE = 65_535
#: The headers a request must have for us to be able to answer it at all.
REQUIRED = ("via", "from", "to", "call-id", "cseq")

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
           "l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
           "e": "content-encoding", "o": "event", "u": "allow-events", "r": "refer-to"}
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 400: "Bad Request",
           401: "Unauthorized", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
           415: "Unsupported Media Type", 420: "Bad Extension",
           481: "Call/Transaction Does Not Exist", 486: "Busy Here",
           487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
           501: "Not Implemented", 503: "Service Unavailable", 505: "Version Not Supported"}
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
#: ASCII digits only: str.isdigit() also passes "²", which int() refuses.
_DIGITS = re.compile(r"[0-9]{1,10}")
_STATUS = re.compile(r"[1-6][0-9][0-9]")


class SipParseError(ValueError):
    """Not a SIP message we can understand; ``status`` is the response it deserves."""

    def __init__(self, message: str, status: int = 400,
                 partial: SipMessage | None = None) -> None:
        super().__init__(message)
        self.status = status
        #: what was parsed before the error, enough to answer it when it is a request
        #: with the headers a response copies
        self.partial = partial


@dataclass
class SipMessage:
    """A request (``method`` and ``uri`` set) or a response (``status`` set)."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str) -> str | None:
        """The first value of a header (case-insensitive; compact names accepted)."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split (except auth headers)."""
        key = _canonical(name)
        values = [v for k, v in self.headers if _canonical(k) == key]
        if key in ("www-authenticate", "authorization", "proxy-authenticate",
                   "proxy-authorization", "date"):
            return values
        return [part for v in values for part in _split_list(v)]

    def set(self, name: str, value: str) -> None:
        key = _canonical(name)
        self.headers = [(k, v) for k, v in self.headers if _canonical(k) != key]
        self.headers.append((name, value))

    def add(self, name: str, value: str) -> None:
        self.headers.append((name, value))

    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = (self.get("cseq") or "").partition(" ")
        return int(number), method.strip()

    @property
    def branch(self) -> str:
        return header_params(self.get("via") or "").get("branch", "")

    def encode(self) -> bytes:
        first = (f"{self.method} {self.uri} SIP/2.0" if self.is_request
                 else f"SIP/2.0 {self.status} {self.reason or REASONS.get(self.status, '')}")
        lines = [first] + [f"{k}: {v}" for k, v in self.headers
                           if _canonical(k) != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse(data: bytes) -> SipMessage:
    """One datagram as a SIP message; :class:`SipParseError`, and no other exception, for
    anything that is not one (tests/test_fuzz_parsers.py holds it to that)."""
    if len(data) > MAX_MESSAGE:
        raise SipParseError("message too large", 513)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    if not sep:
        raise SipParseError("no blank line after the headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("headers are not UTF-8") from exc
    lines = text.replace("\r\n", "\n").split("\n")
    msg = _start_line(lines[0].strip())
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and msg.headers:  # a folded continuation
            name, value = msg.headers[-1]
            msg.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name.strip()):
            raise SipParseError(f"malformed header line {line[:60]!r}")
        msg.headers.append((name.strip(), value.strip()))
    if msg.is_request:
        missing = [h for h in REQUIRED if msg.get(h) is None]
        if missing:
            raise SipParseError(f"missing header(s): {', '.join(missing)}")
    answerable = msg if msg.is_request else None
    length = msg.get("content-length")
    if length is not None:
        if not _DIGITS.fullmatch(length):
            raise SipParseError(f"bad Content-Length {length!r}", partial=answerable)
        if int(length) > len(body):
            raise SipParseError("body shorter than its Content-Length", partial=answerable)
        body = body[:int(length)]
    msg.body = body
    if msg.is_request:
        try:
            number, method = msg.cseq
        except ValueError as exc:
            raise SipParseError("bad CSeq", partial=answerable) from exc
        if method != msg.method or number < 0:
            raise SipParseError("CSeq method does not match the request", partial=answerable)
    return msg


def _start_line(line: str) -> SipMessage:
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[0] == "SIP/2.0":
        if not _STATUS.fullmatch(parts[1]):
            raise SipParseError(f"bad status line {line[:60]!r}")
        return SipMessage(status=int(parts[1]), reason=parts[2])
    if len(parts) == 3 and _TOKEN.match(parts[0]) and parts[2].startswith("SIP/"):
        if parts[2] != "SIP/2.0":
            raise SipParseError(f"unsupported version {parts[2]!r}", 505)
        return SipMessage(method=parts[0], uri=parts[1])
    raise SipParseError(f"bad start line {line[:60]!r}")


def _canonical(name: str) -> str:
    name = name.strip().lower()
    return COMPACT.get(name, name)


def _split_list(value: str) -> list[str]:
    """Split a comma-separated header value, keeping commas inside quotes and <...>."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        elif ch == "," and not quoted and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def header_params(value: str) -> dict[str, str]:
    """``;name=value`` parameters after the address or sent-by of a header value."""
    rest = value[value.rfind(">") + 1:] if ">" in value else value
    params = {}
    for part in rest.split(";")[1:]:
        name, _, val = part.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return params


def tag_of(value: str) -> str:
    return header_params(value).get("tag", "")


def uri_of(value: str) -> str:
    """The URI in a name-addr (``"Bob" <sip:bob@host>;tag=1``) or addr-spec header value."""
    if "<" in value:  # an unclosed one (malformed) runs to the end
        return value[value.index("<") + 1:].partition(">")[0]
    return value.split(";")[0].strip()


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def response(request: SipMessage, status: int, reason: str = "", *,
             to_tag: str = "", body: bytes = b"", content_type: str = "") -> SipMessage:
    """A response that copies what RFC 3261 8.2.6.2 says to copy from the request."""
    msg = SipMessage(status=status, reason=reason or REASONS.get(status, ""))
    for name in ("Via", "From", "To", "Call-ID", "CSeq", "Record-Route"):
        values = request.get_all(name) if name in ("Via", "Record-Route") else \
            [request.get(name) or ""]
        for value in values:
            if name == "To" and to_tag and not tag_of(value):
                value = f"{value};tag={to_tag}"
            msg.add(name, value)
    if body:
        msg.add("Content-Type", content_type)
        msg.body = body
    return msg
