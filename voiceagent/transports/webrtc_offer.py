"""What a browser's SDP offer must hold before aiortc sees it.

aiortc's SDP parser trusts its input: a line it cannot split raises ``AssertionError`` with
no message, an offer with no ``a=setup`` gets through and fails later with an
``AttributeError``, one with no fingerprint is accepted and can never connect.
:func:`check_offer` reads every line aiortc reads, with the grammar of the RFCs (8866 SDP,
8839 ICE, 8122 fingerprints, 8842 setup, 8843 BUNDLE), and says in one line what is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

#: Codecs aiortc decodes, by lower-case encoding name, with their RTP clock rate.
AUDIO_CODECS = {"opus": 48000, "g722": 8000, "pcmu": 8000, "pcma": 8000}
#: Digest sizes of the fingerprint hash functions (RFC 8122); aiortc checks the sha-2 ones.
FINGERPRINT_BYTES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64,
                     "md5": 16, "md2": 16}
CHECKED_FINGERPRINTS = ("sha-256", "sha-384", "sha-512")
#: Payload types RTP cannot use: 72-76 would be taken for RTCP (RFC 5761).
FORBIDDEN_PAYLOAD_TYPES = range(72, 77)

_TOKEN = r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+"
_ICE_CHARS = r"[A-Za-z0-9+/]"
#: The attributes aiortc parses, with the grammar their values must follow.
ATTRIBUTES = {name: re.compile(pattern) for name, pattern in {
    "candidate": r"\S+ [0-9]{1,3} (?i:udp|tcp) [0-9]{1,10} \S+ [0-9]{1,5} "
                 r"typ (?:host|srflx|prflx|relay)(?: \S+ \S+)*",
    "extmap": r"[0-9]{1,5}(?:/(?:sendrecv|sendonly|recvonly|inactive))? \S+",
    "fingerprint": r"(?i:sha-1|sha-224|sha-256|sha-384|sha-512|md5|md2) "
                   r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*",
    "fmtp": r"[0-9]{1,3} \S.*",
    "group": _TOKEN + r"(?: " + _TOKEN + r")*",
    "ice-pwd": _ICE_CHARS + "{22,256}",
    "ice-ufrag": _ICE_CHARS + "{4,256}",
    "max-message-size": r"[0-9]{1,10}",
    "mid": _TOKEN,
    "msid-semantic": r" ?" + _TOKEN + r"(?: \S+)*",
    "rtcp": r"[0-9]{1,5}(?: IN IP[46] \S+)?",
    "rtcp-fb": r"(?:\*|[0-9]{1,3}) \S+(?: \S+)*",
    "rtpmap": r"[0-9]{1,3} [^\s/]+/[0-9]{1,6}(?:/[0-9]{1,2})?",
    "sctp-port": r"[0-9]{1,5}",
    "sctpmap": r"[0-9]{1,5} \S.*",
    "setup": r"actpass|active|passive",
    "ssrc": r"[0-9]{1,10} [^\s:]+:.*",
    "ssrc-group": _TOKEN + r"(?: [0-9]{1,10})+",
}.items()}
_M_LINE = re.compile(r"([a-z]+) ([0-9]{1,5}) ([A-Z/]+) (\S+(?: \S+)*)")
_C_LINE = re.compile(r"IN (IP4|IP6) (\S+)")
#: A number as aiortc's int() takes it; str.isdigit() would also pass "²", which int() refuses.
_NUMBER = re.compile(r"[0-9]{1,10}")
#: A browser's mDNS host name (RFC 8839 names a UUID; any ASCII DNS label is taken).
_MDNS_NAME = re.compile(r"(?:[0-9A-Za-z-]{1,63}\.){1,4}local")
#: SDP text: any character but NUL, CR and LF (RFC 8866 5); other controls are junk here, and
#: aiortc would split lines at some of them (str.splitlines).
_LINE = re.compile("([a-z])=([^\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]*)")


class OfferError(ValueError):
    """The browser's offer cannot be answered (the message says why); ``status`` is the
    HTTP status it deserves: 400 malformed, 422 well formed but with nothing to listen to."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Section:
    """The attributes of the session part or of one m-line, as aiortc will read them."""

    kind: str = ""
    port: int = 0
    proto: str = ""
    formats: list[str] = field(default_factory=list)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)  # attributes with no value

    def first(self, name: str, session: _Section) -> str | None:
        values = self.attributes.get(name) or session.attributes.get(name)
        return values[0] if values else None


def check_offer(sdp: str) -> None:
    """Raise :class:`OfferError` unless aiortc can take ``sdp`` and answer it with audio."""
    session, media = _sections(sdp)
    if not any(m.kind == "audio" and m.port != 0 for m in media):
        raise OfferError("the offer has no audio m-line: add a microphone track", 422)
    mids = [m.attributes["mid"][0] for m in media if "mid" in m.attributes]
    if len(set(mids)) != len(mids):
        raise OfferError("two m-lines share an a=mid")
    for group in session.attributes.get("group", []):
        semantic, *items = group.split()
        if semantic == "BUNDLE" and not set(items) <= set(mids):
            raise OfferError(f"a=group:BUNDLE names an a=mid no m-line has: {group[:60]!r}")
    for index, m in enumerate(media, 1):
        _check_transport(m, session, f"m-line {index} ({m.kind})")
    if not any(m.kind == "audio" and m.port != 0 and _takes_audio(m) for m in media):
        raise OfferError("the audio m-line offers no codec we take (Opus, G722, PCMU or PCMA)")


def _sections(sdp: str) -> tuple[_Section, list[_Section]]:
    lines = sdp.split("\n")
    if lines and not lines[-1].strip("\r"):
        lines.pop()  # the final line end
    if not lines or lines[0].rstrip("\r") != "v=0":
        raise OfferError("not an SDP session description: the first line must be v=0")
    session, media = _Section(), []
    current = session
    for number, raw in enumerate(lines[1:], 2):
        line = raw[:-1] if raw.endswith("\r") else raw
        match = _LINE.fullmatch(line)
        if match is None:
            raise OfferError(f"SDP line {number} is not type=value: {line[:60]!r}")
        kind, value = match.groups()
        if kind == "m":
            current = _media_section(value, number)
            media.append(current)
        elif kind == "c":
            address = _C_LINE.fullmatch(value)
            if address is None or not _is_ip_address(address.group(2)):
                raise OfferError(f"SDP line {number}: c= must be 'IN IP4|IP6 address': "
                                 f"{line[:60]!r}")
        elif kind == "v":
            raise OfferError(f"SDP line {number}: a second v= line")
        elif kind == "a":
            name, colon, arg = value.partition(":")
            pattern = ATTRIBUTES.get(name)
            if not colon:
                if pattern is not None:
                    raise OfferError(f"SDP line {number}: a={name} needs a value")
                current.flags.add(name)
                continue
            if pattern is not None and not pattern.fullmatch(arg):
                raise OfferError(f"SDP line {number}: malformed a={name}: {line[:80]!r}")
            current.attributes.setdefault(name, []).append(arg)
    if not media:
        raise OfferError("the offer has no m-line")
    return session, media


def _media_section(value: str, number: int) -> _Section:
    match = _M_LINE.fullmatch(value)
    if match is None:
        raise OfferError(f"SDP line {number}: m= must be 'media port proto formats': "
                         f"{value[:60]!r}")
    kind, port, proto, formats = match.groups()
    m = _Section(kind, int(port), proto, formats.split())
    if m.port > 65535:
        raise OfferError(f"SDP line {number}: port {m.port} out of range")
    if kind in ("audio", "video") and not all(
            _NUMBER.fullmatch(f) and int(f) < 128 and int(f) not in FORBIDDEN_PAYLOAD_TYPES
            for f in m.formats):
        raise OfferError(f"SDP line {number}: payload types must be numbers below 128 "
                         f"(not 72-76): {value[:60]!r}")
    return m


def _check_transport(m: _Section, session: _Section, where: str) -> None:
    """ICE credentials, a DTLS fingerprint and role, and what aiortc needs per media kind."""
    if m.first("ice-ufrag", session) is None or m.first("ice-pwd", session) is None:
        raise OfferError(f"{where} lacks a=ice-ufrag or a=ice-pwd")
    fingerprints = m.attributes.get("fingerprint", []) + session.attributes.get("fingerprint", [])
    if not fingerprints:
        raise OfferError(f"{where} has no a=fingerprint (DTLS cannot be verified)")
    for fingerprint in fingerprints:
        algorithm, value = fingerprint.split()
        if len(value.split(":")) != FINGERPRINT_BYTES[algorithm.lower()]:
            raise OfferError(f"{where}: the {algorithm} fingerprint has the wrong length")
    if not any(f.split()[0].lower() in CHECKED_FINGERPRINTS for f in fingerprints):
        raise OfferError(f"{where} has no sha-256, sha-384 or sha-512 a=fingerprint")
    if m.first("setup", session) is None:
        raise OfferError(f"{where} has no a=setup (actpass, active or passive)")
    for candidate in m.attributes.get("candidate", []):
        _check_candidate(candidate, where)
    if m.kind in ("audio", "video"):
        if "rtcp-mux" not in m.flags:
            raise OfferError(f"{where} has no a=rtcp-mux (WebRTC multiplexes RTCP)")
        payload_types = set(m.formats)
        mapped = {value.split()[0] for value in m.attributes.get("rtpmap", [])}
        for name in ("rtpmap", "fmtp"):
            for value in m.attributes.get(name, []):
                pt = value.split()[0]
                if pt not in payload_types or (name == "fmtp" and pt not in mapped):
                    raise OfferError(f"{where}: a={name}:{pt} for a payload type with no "
                                     f"{'rtpmap' if name == 'fmtp' else 'place on the m-line'}")
                if name == "fmtp":
                    _check_fmtp(value, where)
    elif m.kind == "application":
        if m.proto == "UDP/DTLS/SCTP" and "sctp-port" not in m.attributes:
            raise OfferError(f"{where} has no a=sctp-port")
        if m.proto == "DTLS/SCTP" and not _NUMBER.fullmatch(m.formats[0]):
            raise OfferError(f"{where}: a DTLS/SCTP m-line names its SCTP port")
        if m.proto not in ("UDP/DTLS/SCTP", "DTLS/SCTP"):
            raise OfferError(f"{where}: data channels need UDP/DTLS/SCTP, not {m.proto[:20]}")


def _check_candidate(candidate: str, where: str) -> None:
    """Addresses must be IP literals or mDNS ``.local`` names (what browsers send): any
    other name would make the server look it up in DNS on a stranger's behalf."""
    bits = candidate.split()
    if not 1 <= int(bits[1]) <= 256 or int(bits[5]) > 65535:
        raise OfferError(f"{where}: a=candidate component or port out of range")
    extensions = dict(zip(bits[8::2], bits[9::2]))
    for address in (bits[4], extensions.get("raddr")):
        if address is not None and not _is_candidate_address(address):
            raise OfferError(f"{where}: candidate address {address[:60]!r} is neither an IP "
                             "address nor an mDNS .local name")
    port = extensions.get("rport")
    if port is not None and not (_NUMBER.fullmatch(port) and int(port) <= 65535):
        raise OfferError(f"{where}: candidate rport {port[:20]!r} is not a port")


def _is_candidate_address(address: str) -> bool:
    return bool(_MDNS_NAME.fullmatch(address)) or _is_ip_address(address)


def _is_ip_address(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


#: fmtp parameters aiortc reads as integers.
_INTEGER_FMTP = ("apt", "max-fr", "max-fs", "maxplaybackrate", "minptime", "stereo",
                 "useinbandfec")


def _check_fmtp(value: str, where: str) -> None:
    for parameter in value.split(" ", 1)[1].split(";"):
        name, eq, number = parameter.partition("=")
        if eq and name in _INTEGER_FMTP and not re.fullmatch(r"-?[0-9]{1,10}", number):
            raise OfferError(f"{where}: fmtp {name}={number[:20]!r} is not a number")


def _takes_audio(m: _Section) -> bool:
    for value in m.attributes.get("rtpmap", []):
        encoding = value.split()[1].split("/")
        if AUDIO_CODECS.get(encoding[0].lower()) == int(encoding[1]):
            return True
    return False
