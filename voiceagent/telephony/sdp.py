"""SDP offer/answer for a phone call's audio (RFC 4566, RFC 3264): G.711 at 8 kHz, with
RFC 4733 telephone-events, RFC 3389 comfort noise and RFC 5761 RTP/RTCP multiplexing when
the caller offers them."""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass

from .media import CODECS, Codec
from .rtp import COMFORT_NOISE


#: A port or payload type: ASCII digits (str.isdigit() also passes "²", which int() refuses).
_NUMBER = re.compile(r"[0-9]{1,5}")


class SDPError(ValueError):
    """The offer cannot be answered; ``status`` is the SIP response it deserves
    (400 malformed, 488 nothing acceptable in it)."""

    def __init__(self, message: str, status: int = 488) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class MediaLine:
    media: str
    port: int
    proto: str
    formats: list[str]
    address: str
    rtpmap: dict[str, str]  # payload type -> "PCMU/8000"
    direction: str = "sendrecv"
    rtcp_mux: bool = False


@dataclass
class AudioOffer:
    """What we take from an offer: where to send, which codec, the DTMF and comfort-noise
    payload types, whether RTCP shares the RTP port."""

    address: str
    port: int
    codec: Codec
    payload_type: int
    dtmf_payload_type: int | None
    media: list[MediaLine]  # every m-line, for an answer that mirrors them
    audio_index: int
    direction: str
    comfort_noise_payload_type: int | None = None
    rtcp_mux: bool = False


def parse_offer(sdp: str) -> AudioOffer:
    """The first audio stream we can take; :class:`SDPError` says why there is none."""
    lines = [line.strip() for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SDPError("not an SDP session description", 400)
    session_address, media, current = "", [], None
    for line in lines[1:]:
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1:
            raise SDPError(f"malformed SDP line {line[:60]!r}", 400)
        if kind == "c":
            address = _connection_address(value)
            if current is None:
                session_address = address
            else:
                current.address = address
        elif kind == "m":
            current = _media_line(value, session_address)
            media.append(current)
        elif kind == "a" and current is not None:
            name, _, arg = value.partition(":")
            if name == "rtpmap":
                pt, _, encoding = arg.partition(" ")
                current.rtpmap[pt.strip()] = encoding.strip()
            elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                current.direction = name
            elif name == "rtcp-mux":
                current.rtcp_mux = True
    audio = [i for i, m in enumerate(media) if m.media == "audio" and m.port != 0]
    if not audio:
        raise SDPError("the offer has no audio stream")
    reasons = []
    for index in audio:
        m = media[index]
        if m.proto != "RTP/AVP":
            reasons.append(f"transport {m.proto} (only RTP/AVP: no SRTP, no WebRTC)")
            continue
        if not m.address:
            raise SDPError("the offer has no connection address (c=)", 400)
        choice = _choose_codec(m)
        if choice is None:
            offered = ", ".join(m.rtpmap.get(f, f) for f in m.formats)
            reasons.append(f"codecs {offered} (we take PCMU or PCMA at 8 kHz)")
            continue
        payload_type, codec = choice
        dtmf = next((int(f) for f in m.formats if m.rtpmap.get(f, "").lower()
                     == "telephone-event/8000"), None)
        comfort_noise = next((int(f) for f in m.formats if f.isdigit() and m.rtpmap.get(
            f, "CN/8000" if f == str(COMFORT_NOISE) else "").upper() == "CN/8000"), None)
        return AudioOffer(m.address, m.port, codec, payload_type, dtmf, media, index,
                          m.direction, comfort_noise, m.rtcp_mux)
    raise SDPError("no acceptable audio: " + "; ".join(reasons))


def _media_line(value: str, address: str) -> MediaLine:
    """``m=media port[/count] proto formats``; an audio line's formats are RTP payload types
    (0-127), which the answer and every RTP packet carry."""
    parts = value.split()
    port = parts[1].split("/")[0] if len(parts) >= 4 else ""
    if not _NUMBER.fullmatch(port) or int(port) > 65535:
        raise SDPError(f"malformed m-line m={value[:60]!r}", 400)
    if parts[0] == "audio" and not all(_NUMBER.fullmatch(f) and int(f) < 128
                                       for f in parts[3:]):
        raise SDPError(f"payload types must be numbers 0-127: m={value[:60]!r}", 400)
    return MediaLine(parts[0], int(port), parts[2], parts[3:], address, {})


def _connection_address(value: str) -> str:
    """An IP address: a host name would need a DNS lookup, which blocks, on every call."""
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SDPError(f"malformed connection line c={value[:60]!r}", 400)
    address = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SDPError(f"the connection address must be an IP address: c={value[:60]!r}",
                       400) from None
    return address


def _choose_codec(m: MediaLine) -> tuple[int, Codec] | None:
    for fmt in m.formats:  # numbers: _media_line checked them
        name = m.rtpmap.get(fmt, "")
        if name:
            encoding, _, rate = name.partition("/")
            codec = CODECS.get(encoding.upper())
            if codec is not None and rate.split("/")[0] == "8000":
                return int(fmt), codec
        else:  # a static payload type with no rtpmap
            codec = next((c for c in CODECS.values() if c.payload_type == int(fmt)), None)
            if codec is not None:
                return int(fmt), codec
    return None


_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
                     "inactive": "inactive"}


def build_answer(offer: AudioOffer, address: str, port: int, session_id: int | None = None,
                 version: int = 1, rtcp_port: int | None = None) -> str:
    """Our answer: the chosen codec (and telephone-event, comfort noise, rtcp-mux, as
    offered) on the audio line, every other offered stream refused with port 0, as RFC 3264
    requires. ``rtcp_port`` other than ``port + 1`` is announced (``a=rtcp``, RFC 3605)."""
    sid = session_id if session_id is not None else secrets.randbelow(2**31)
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=voiceagent {sid} {version} IN {family} {address}", "s=voiceagent",
             f"c=IN {family} {address}", "t=0 0"]
    for i, m in enumerate(offer.media):
        if i != offer.audio_index:
            lines.append(f"m={m.media} 0 {m.proto} {' '.join(m.formats)}")
            continue
        formats = [offer.payload_type]
        for extra in (offer.dtmf_payload_type, offer.comfort_noise_payload_type):
            if extra is not None:
                formats.append(extra)
        lines.append(f"m=audio {port} RTP/AVP {' '.join(map(str, formats))}")
        lines.append(f"a=rtpmap:{offer.payload_type} {offer.codec.name}/8000")
        if offer.dtmf_payload_type is not None:
            lines += [f"a=rtpmap:{offer.dtmf_payload_type} telephone-event/8000",
                      f"a=fmtp:{offer.dtmf_payload_type} 0-15"]
        if offer.comfort_noise_payload_type is not None:
            lines.append(f"a=rtpmap:{offer.comfort_noise_payload_type} CN/8000")
        if offer.rtcp_mux:
            lines.append("a=rtcp-mux")
        elif rtcp_port is not None and rtcp_port != port + 1:
            lines.append(f"a=rtcp:{rtcp_port}")
        lines += ["a=ptime:20", f"a={_ANSWER_DIRECTION.get(offer.direction, 'sendrecv')}"]
    return "\r\n".join(lines) + "\r\n"
