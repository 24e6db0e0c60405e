"""OpenTelemetry traces of every session: what each call did, and when.

::

    voiceagent.session
    ├─ voiceagent.turn            (a user turn: first speech -> its reply played or cut)
    │  ├─ vad.speech              (each stretch of user speech)
    │  ├─ stt.decode              (each recogniser decode: push, pause, finish)
    │  ├─ end_of_turn             (end of speech -> the endpointer's decision)
    │  └─ voiceagent.reply        (announced -> played out or interrupted)
    │     ├─ llm.generate         (event: first_token)
    │     ├─ tool.call
    │     ├─ tts.synthesize       (one per chunk; event: first_audio)
    │     └─ playout              (first audio heard -> last, or the cut)
    └─ voiceagent.reply           (said from code: a greeting, a notice)

The tracer only listens (a :class:`~voiceagent.observer.SessionObserver`): the session's
events and system frames say everything. Span times are the session clock's timestamps made
absolute with the session's start (``SessionClock.epoch``), so a trace agrees with the
metrics events to the millisecond. Importing this module needs ``opentelemetry-sdk``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, Status, StatusCode

from ..deps import require
from ..events import (
    BargeInEvent,
    ErrorEvent,
    Event,
    MetricsEvent,
    SessionStateEvent,
    StageEvent,
    ToolCallEvent,
    UserTurnEvent,
)
from ..frames import (
    EndOfTurnFrame,
    InterruptionFrame,
    PlayoutFinishedFrame,
    PlayoutStartedFrame,
    ReplyStartedFrame,
    SystemFrame,
    UserSpeakingFrame,
    UserTurnStartedFrame,
)

if TYPE_CHECKING:
    from ..session import AgentSession

#: spans of the stages, by the stage events' names
STAGE_SPANS = {"stt": "stt.decode", "llm": "llm.generate", "tts": "tts.synthesize"}
FIRST_EVENTS = {"llm": "first_token", "tts": "first_audio"}


def provider_from_environment() -> TracerProvider:
    """A tracer provider configured the OpenTelemetry way: ``OTEL_SERVICE_NAME`` (default
    ``voiceagent``) and ``OTEL_RESOURCE_ATTRIBUTES`` name the service;
    ``OTEL_TRACES_EXPORTER`` is ``otlp`` (the default: the OTLP/HTTP exporter, configured by
    the ``OTEL_EXPORTER_OTLP_*`` variables) or ``console``."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                 "voiceagent")})
    provider = TracerProvider(resource=resource)
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip() or "otlp"
    exporter: SpanExporter
    if kind == "console":
        exporter = ConsoleSpanExporter()
    elif kind == "otlp":
        otlp = require("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                       "opentelemetry-exporter-otlp-proto-http", "otel")
        exporter = otlp.OTLPSpanExporter()
    else:
        from ..errors import ConfigError

        raise ConfigError(f"OTEL_TRACES_EXPORTER={kind!r} is not supported: otlp or console")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class SessionTracer:
    """Traces every session it is attached to (``Agent(observers=[SessionTracer(...)])``)."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._tracer = (provider or trace.get_tracer_provider()).get_tracer("voiceagent")

    def attach(self, session: AgentSession) -> None:
        _SessionTrace(self._tracer, session)


class _SessionTrace:
    """The spans of one session, opened and closed as its events and frames arrive."""

    def __init__(self, tracer: trace.Tracer, session: AgentSession) -> None:
        self._tracer = tracer
        self._session = session
        self._root: Span | None = None
        self._turns: dict[int, Span] = {}
        self._turn_ends: dict[int, float] = {}  # the end-of-turn decision, for a dropped turn
        self._answered: set[int] = set()  # turns with a reply
        self._answers: dict[int, int] = {}  # reply -> the turn it answers
        self._replies: dict[int, Span] = {}
        #: every turn's and reply's span, ended or not: a stage that reports after its reply
        #: was cut (the cancelled generation) still belongs to it
        self._spans: dict[tuple[str, int], Span] = {}
        self._playouts: dict[int, Span] = {}
        self._speech_start: float | None = None
        self._last_turn: int | None = None
        self._interruption = ""  # the reason of the last interruption
        session.events.subscribe(self._on_event)
        session.graph.observe(self._on_frame)

    # -- helpers --------------------------------------------------------------------------

    def _ns(self, ts: float) -> int:
        return int((self._session.runtime.clock.epoch + ts) * 1e9)

    def _start(self, name: str, ts: float, parent: Span | None, **attributes: Any) -> Span:
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self._tracer.start_span(name, context, start_time=self._ns(ts),
                                       attributes=_clean(attributes))

    def _backend(self, kind: str) -> dict[str, str]:
        spec = self._session.agent.backends.get(kind)
        name = spec if isinstance(spec, str) else type(spec).__name__
        model = self._session.agent.backend_options.get(kind, {}).get("model")
        return {"voiceagent.backend": name, **({"voiceagent.model": str(model)} if model else {})}

    def _parent_of_turn(self, turn_id: int) -> Span | None:
        return self._spans.get(("turn", turn_id), self._root)

    def _parent_of_reply(self, reply_id: int) -> Span | None:
        return self._spans.get(("reply", reply_id)) or self._parent_of_turn(reply_id)

    def _end_turn(self, turn_id: int, ts: float) -> None:
        span = self._turns.pop(turn_id, None)
        if span is not None:
            span.end(end_time=self._ns(ts))

    # -- from the graph -------------------------------------------------------------------

    def _on_frame(self, frame: SystemFrame) -> None:
        if self._root is None:
            return  # not started (or already ended)
        ts = frame.ts
        if isinstance(frame, UserTurnStartedFrame):
            for turn_id in [t for t in self._turns if t not in self._answered]:
                self._end_turn(turn_id, self._turn_ends.get(turn_id, ts))  # dropped: no words
            span = self._start("voiceagent.turn", ts, self._root,
                               **{"voiceagent.turn.id": frame.turn_id})
            self._turns[frame.turn_id] = self._spans["turn", frame.turn_id] = span
            self._last_turn = frame.turn_id
        elif isinstance(frame, UserSpeakingFrame):
            if frame.speaking:
                self._speech_start = ts
            elif self._speech_start is not None:
                parent = self._parent_of_turn(self._last_turn or 0)
                self._start("vad.speech", self._speech_start, parent,
                            **self._backend("vad")).end(end_time=self._ns(ts))
                self._speech_start = None
        elif isinstance(frame, EndOfTurnFrame):
            self._turn_ends[frame.turn_id] = ts
            self._start("end_of_turn", frame.speech_end_ts, self._parent_of_turn(frame.turn_id),
                        **{"voiceagent.turn.id": frame.turn_id,
                           "voiceagent.endpointing.mode":
                               self._session.agent.options.endpointing.mode}
                        ).end(end_time=self._ns(ts))
        elif isinstance(frame, ReplyStartedFrame):
            turn = frame.turn_id
            if turn is None and frame.source == "turn":
                turn = frame.reply_id
            if turn is not None:
                self._answered.add(turn)
                self._answers[frame.reply_id] = turn
            parent = self._turns.get(turn, self._root) if turn is not None else self._root
            span = self._start("voiceagent.reply", ts, parent, **{
                "voiceagent.reply.id": frame.reply_id, "voiceagent.reply.source": frame.source,
                "voiceagent.reply.interruptible": frame.interruptible,
                "voiceagent.turn.id": turn})
            self._replies[frame.reply_id] = self._spans["reply", frame.reply_id] = span
        elif isinstance(frame, PlayoutStartedFrame) and frame.reply_id in self._replies:
            self._playouts[frame.reply_id] = self._start(
                "playout", ts, self._replies[frame.reply_id],
                **{"voiceagent.transport": getattr(self._session.input, "transport", "")})
        elif isinstance(frame, InterruptionFrame):
            self._interruption = frame.reason
        elif isinstance(frame, PlayoutFinishedFrame):
            self._finish_reply(frame)

    def _finish_reply(self, frame: PlayoutFinishedFrame) -> None:
        end = self._ns(frame.ts)
        attributes = {"voiceagent.reply.interrupted": frame.interrupted,
                      "voiceagent.reply.heard_words": len(frame.heard_text.split())}
        playout = self._playouts.pop(frame.reply_id, None)
        if playout is not None:
            playout.set_attributes(attributes)
            playout.end(end_time=end)
        reply = self._replies.pop(frame.reply_id, None)
        if reply is None:
            return
        reply.set_attributes(attributes)
        if frame.interrupted:
            reply.add_event("interrupted", {"reason": self._interruption,
                                            "heard_words": attributes[
                                                "voiceagent.reply.heard_words"]},
                            timestamp=end)
        reply.end(end_time=end)
        turn = self._answers.pop(frame.reply_id, None)
        if turn is not None:
            self._end_turn(turn, frame.ts)  # a turn ends when its answer does

    # -- from the events ------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, SessionStateEvent):
            if event.state == "started":
                s = self._session
                self._root = self._start("voiceagent.session", event.ts, None, **{
                    "voiceagent.session.id": s.id,
                    "voiceagent.transport": getattr(s.input, "transport", ""),
                    **{f"voiceagent.backend.{kind}": (spec if isinstance(spec, str)
                                                     else type(spec).__name__)
                       for kind, spec in s.agent.backends.items()}})
            elif self._root is not None:
                self._end_all(event)
            return
        if self._root is None:
            return
        if isinstance(event, StageEvent):
            parent = (self._parent_of_turn(event.turn_id) if event.stage == "stt"
                      else self._parent_of_reply(event.turn_id))
            span = self._start(STAGE_SPANS[event.stage], event.start, parent,
                               **self._backend(event.stage),
                               **{"voiceagent.turn.id": event.turn_id,
                                  "voiceagent.cancelled": event.cancelled,
                                  "voiceagent.stt.decode": event.detail or None})
            if event.first is not None:
                span.add_event(FIRST_EVENTS[event.stage], timestamp=self._ns(event.first))
            span.end(end_time=self._ns(event.ts))
        elif isinstance(event, ToolCallEvent):
            span = self._start("tool.call", event.start, self._parent_of_reply(event.turn_id),
                               **{"voiceagent.tool.name": event.name,
                                  "voiceagent.tool.error": event.error})
            if event.error:
                span.set_status(Status(StatusCode.ERROR, event.result[:200]))
            span.end(end_time=self._ns(event.ts))
        elif isinstance(event, UserTurnEvent):
            turn = self._turns.get(event.turn_id)
            if turn is not None:
                turn.set_attributes(_clean({
                    "voiceagent.turn.words": len(event.text.split()),
                    "voiceagent.turn.reason": event.reason,
                    "voiceagent.turn.audio_score": event.audio_score,
                    "voiceagent.turn.text_score": event.text_score}))
        elif isinstance(event, MetricsEvent):
            turn = self._turns.get(event.metrics.turn_id)
            if turn is not None:
                turn.set_attributes(_clean({f"voiceagent.latency.{k}": v for k, v in
                                            event.metrics.model_dump(exclude={"turn_id"}).items()}))
        elif isinstance(event, BargeInEvent):
            self._turns.get(event.turn_id, self._root).add_event(
                f"barge_in.{event.action}", timestamp=self._ns(event.ts))
        elif isinstance(event, ErrorEvent):
            self._root.add_event("error", {"source": event.source, "message": event.message,
                                           "fatal": event.fatal}, timestamp=self._ns(event.ts))
            if event.fatal:
                self._root.set_status(Status(StatusCode.ERROR, event.message))

    def _end_all(self, event: SessionStateEvent) -> None:
        """The session ended: whatever is still open ends with it."""
        end = self._ns(event.ts)
        for spans in (self._playouts, self._replies):
            for span in spans.values():
                span.end(end_time=end)
            spans.clear()
        for turn_id in list(self._turns):
            self._end_turn(turn_id, event.ts)
        root, self._root = self._root, None
        assert root is not None
        root.set_attribute("voiceagent.session.end_reason", event.reason)
        root.end(end_time=end)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry attributes have no null values."""
    return {k: v for k, v in attributes.items() if v is not None}
