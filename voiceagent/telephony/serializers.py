"""Media-stream framings: how a cloud telephony provider wraps a call's audio in WebSocket
text messages.

A :class:`MediaStreamSerializer` turns one provider's messages into the few things a call
needs (:class:`StreamStart`, :class:`StreamMedia`, :class:`StreamDTMF`, :class:`StreamMark`,
:class:`StreamStop`) and builds the messages that go back: audio, a playout mark, a flush of
the audio the provider has buffered. The wire messages are pydantic models, so a malformed one
is refused with the reason. Another provider (Telnyx, Plivo) is one more subclass, listed in
:data:`SERIALIZERS` under the name its WebSocket route uses.
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal
from xml.sax.saxutils import quoteattr

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel


class MessageError(ValueError):
    """A message that breaks the protocol. ``close_code`` (RFC 6455 7.4.1) says why when the
    stream cannot go on: 1003 unsupported data, 1007 malformed, 1008 against the protocol,
    1009 too big."""

    def __init__(self, message: str, close_code: int = 1007) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True)
class MediaFormat:
    #: a codec name of :data:`voiceagent.telephony.media.CODECS` ("PCMU"), or the provider's
    #: own term for an encoding this framework does not speak
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class StreamStart:
    stream_id: str
    call_id: str
    media_format: MediaFormat
    #: what the call's set-up passed along (Twilio: the ``<Parameter>`` elements)
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamMedia:
    payload: bytes  # encoded audio, as the media format says


@dataclass(frozen=True)
class StreamDTMF:
    digit: str


@dataclass(frozen=True)
class StreamMark:
    """The provider played (or cleared) the audio sent before the mark of this name."""

    name: str


@dataclass(frozen=True)
class StreamStop:
    """The provider ended the stream (the call hung up, or the stream was stopped)."""


Inbound = StreamStart | StreamMedia | StreamDTMF | StreamMark | StreamStop


class MediaStreamSerializer(ABC):
    name: ClassVar[str]

    @abstractmethod
    def parse(self, text: str) -> Inbound | None:
        """One text message from the provider; None for one that means nothing to the call
        (a handshake). Raises :class:`MessageError`."""

    @abstractmethod
    def media(self, stream_id: str, payload: bytes) -> str:
        """Encoded audio to play to the caller."""

    @abstractmethod
    def mark(self, stream_id: str, name: str) -> str:
        """A mark after the audio sent so far; the provider echoes it once that has played."""

    @abstractmethod
    def clear(self, stream_id: str) -> str:
        """Drop the audio the provider has buffered but not played yet (a barge-in)."""


def load_object(text: str) -> dict[str, Any]:
    """A message's JSON object, or :class:`MessageError`."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise MessageError(f"not JSON: {exc}") from exc
    except RecursionError as exc:  # "[[[[...": deeper than the parser's stack
        raise MessageError("not JSON: nested too deeply") from exc
    if not isinstance(message, dict):
        raise MessageError("expected a JSON object")
    return message


def decode_base64(payload: str) -> bytes:
    """A media payload's bytes, or :class:`MessageError`."""
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII characters
        raise MessageError(f"media payload is not base64: {exc}") from exc


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


# -- Twilio Media Streams (www.twilio.com/docs/voice/media-streams/websocket-messages) -------


class _TwilioWire(BaseModel):
    """Twilio's JSON: camelCase names, unknown fields ignored (Twilio adds some over time)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class TwilioMediaFormat(_TwilioWire):
    encoding: str  # "audio/x-mulaw"
    sample_rate: int  # 8000
    channels: int  # 1


class TwilioStartInfo(_TwilioWire):
    stream_sid: str
    call_sid: str
    account_sid: str = ""
    tracks: list[str] = Field(default_factory=list)
    media_format: TwilioMediaFormat
    custom_parameters: dict[str, str] = Field(default_factory=dict)


class TwilioMediaInfo(_TwilioWire):
    payload: str  # base64
    track: str = "inbound"
    chunk: str = ""
    timestamp: str = ""


class TwilioDigit(_TwilioWire):
    digit: str = Field(pattern=r"^[0-9*#A-D]$")
    track: str = "inbound_track"


class TwilioMarkInfo(_TwilioWire):
    name: str


class TwilioStopInfo(_TwilioWire):
    account_sid: str = ""
    call_sid: str = ""


class TwilioConnected(_TwilioWire):
    event: Literal["connected"]
    protocol: str = ""
    version: str = ""


class _TwilioStreamMessage(_TwilioWire):
    """What every message about a stream carries besides its event."""

    sequence_number: str = ""
    stream_sid: str = ""


class TwilioStart(_TwilioStreamMessage):
    event: Literal["start"]
    start: TwilioStartInfo


class TwilioMedia(_TwilioStreamMessage):
    """Both ways: the caller's audio in, the agent's out (``media.payload`` alone)."""

    event: Literal["media"]
    media: TwilioMediaInfo


class TwilioDTMF(_TwilioStreamMessage):
    event: Literal["dtmf"]
    dtmf: TwilioDigit


class TwilioMark(_TwilioStreamMessage):
    """Both ways: sent after audio, echoed by Twilio once that audio has played."""

    event: Literal["mark"]
    mark: TwilioMarkInfo


class TwilioStop(_TwilioStreamMessage):
    event: Literal["stop"]
    stop: TwilioStopInfo = Field(default_factory=TwilioStopInfo)


class TwilioClear(_TwilioWire):
    event: Literal["clear"]
    stream_sid: str


_TWILIO_INBOUND: TypeAdapter[Any] = TypeAdapter(Annotated[
    TwilioConnected | TwilioStart | TwilioMedia | TwilioDTMF | TwilioMark | TwilioStop,
    Field(discriminator="event")])
#: Twilio's encoding names, as :data:`voiceagent.telephony.media.CODECS` names them.
_TWILIO_ENCODINGS = {"audio/x-mulaw": "PCMU"}


class TwilioSerializer(MediaStreamSerializer):
    """Twilio's bidirectional Media Streams (``<Connect><Stream>``): 8 kHz mu-law, base64."""

    name = "twilio"

    def parse(self, text: str) -> Inbound | None:
        message = load_object(text)
        try:
            wire = _TWILIO_INBOUND.validate_python(message)
        except ValidationError as exc:
            kind = exc.errors()[0]["type"]
            if kind == "union_tag_invalid":
                raise MessageError(f"unknown event {message.get('event')!r}", 1008) from exc
            if kind == "union_tag_not_found":
                raise MessageError("the message has no 'event'", 1008) from exc
            raise MessageError(f"malformed {message['event']} message: {_describe(exc)}") from exc
        match wire:
            case TwilioStart(start=info):
                fmt = info.media_format
                return StreamStart(
                    stream_id=info.stream_sid, call_id=info.call_sid,
                    media_format=MediaFormat(_TWILIO_ENCODINGS.get(fmt.encoding, fmt.encoding),
                                             fmt.sample_rate, fmt.channels),
                    parameters=info.custom_parameters)
            case TwilioMedia(media=media):
                # Only the caller: a <Start><Stream track="both_tracks"> would also send
                # what the caller hears, the agent's own voice.
                if media.track != "inbound":
                    return None
                return StreamMedia(decode_base64(media.payload))
            case TwilioDTMF(dtmf=dtmf):
                return StreamDTMF(dtmf.digit)
            case TwilioMark(mark=mark):
                return StreamMark(mark.name)
            case TwilioStop():
                return StreamStop()
        return None  # connected: the handshake before start

    def media(self, stream_id: str, payload: bytes) -> str:
        return _dump(TwilioMedia(event="media", stream_sid=stream_id, media=TwilioMediaInfo(
            payload=base64.b64encode(payload).decode("ascii"))))

    def mark(self, stream_id: str, name: str) -> str:
        return _dump(TwilioMark(event="mark", stream_sid=stream_id,
                                mark=TwilioMarkInfo(name=name)))

    def clear(self, stream_id: str) -> str:
        return _dump(TwilioClear(event="clear", stream_sid=stream_id))


def _dump(wire: _TwilioWire) -> str:
    """Outbound messages carry only what Twilio reads: no empty sequence numbers or tracks."""
    return wire.model_dump_json(by_alias=True, exclude_defaults=True)


def twiml_connect_stream(url: str, parameters: Mapping[str, str]) -> str:
    """The TwiML that answers a call by streaming it, both ways, to ``url`` (a wss:// URL);
    each parameter reaches the stream's ``start`` as a custom parameter."""
    params = "".join(f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>"
                     for k, v in parameters.items())
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Connect><Stream url={quoteattr(url)}>{params}</Stream></Connect>"
            "</Response>")


#: Serializers by provider name: the ``{provider}`` of the server's media-stream route.
SERIALIZERS: dict[str, type[MediaStreamSerializer]] = {s.name: s for s in (TwilioSerializer,)}
