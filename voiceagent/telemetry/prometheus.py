"""Prometheus metrics of every session in a process: one registry, no per-session labels.

What a session says (its events) is counted as it happens; queue depths are read from the
live sessions' inboxes at each scrape. Labels take a handful of values each (a transport, a
stage, a node's name), so the series stay few however many calls a server takes. Importing
this module needs ``prometheus-client``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..events import (
    BargeInEvent,
    DraftEvent,
    ErrorEvent,
    Event,
    MetricsEvent,
    SessionStateEvent,
    StageEvent,
    ToolCallEvent,
    UserTurnEvent,
)
from ..frames import PlayoutFinishedFrame, ReplyStartedFrame, SystemFrame
from ..threads import ModelLock

if TYPE_CHECKING:
    from ..graph import Graph
    from ..session import AgentSession

#: Seconds: conversational latencies live between 0.1 s and a few seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PrometheusMetrics:
    """The metrics of every session it is attached to; ``registry`` is what ``/metrics``
    serves (:meth:`exposition`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge("voiceagent_sessions_active", "Sessions in progress",
                                     ["transport"], registry=r)
        self.sessions = Counter("voiceagent_sessions", "Sessions ended, by why",
                                ["transport", "reason"], registry=r)
        self.turn_latency = Histogram(
            "voiceagent_turn_latency_seconds",
            "Per-turn latency of each stage, from the end of the user's speech (end_of_turn, "
            "stt_final, voice_to_voice) or the stage's request (llm_ttft, tts_ttfa)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_duration = Histogram(
            "voiceagent_stage_duration_seconds",
            "Duration of each piece of backend work: an STT decode, an LLM generation, a TTS "
            "synthesis, a tool call", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.turns = Counter("voiceagent_user_turns", "User turns answered", registry=r)
        self.replies = Counter("voiceagent_replies", "Replies finished, by who asked and how "
                               "they ended", ["source", "outcome"], registry=r)
        self.drafts = Counter("voiceagent_drafts", "Preemptive draft replies, by what became "
                              "of them (started, committed, discarded): discarded per "
                              "committed is the work wasted on guesses", ["action"], registry=r)
        self.interruptions = Counter("voiceagent_interruptions",
                                     "Barge-ins that stopped the agent", registry=r)
        self.false_interruptions = Counter(
            "voiceagent_false_interruptions",
            "Barge-ins that paused the agent and then let it go on (a cough, a backchannel)",
            registry=r)
        self.errors = Counter("voiceagent_errors", "Errors reported, by the stage that had it",
                              ["stage"], registry=r)
        self.tool_calls = Counter("voiceagent_tool_calls", "Tool calls, by whether they failed",
                                  ["error"], registry=r)
        self._queues = _QueueDepths()
        r.register(self._queues)
        self._locks = _ModelLockWaits()
        r.register(self._locks)

    def attach(self, session: AgentSession) -> None:
        for kind, backend in session.backends.items():
            self._locks.backends.setdefault(kind, backend)
        _SessionCounter(self, session)

    def exposition(self) -> bytes:
        """The text a Prometheus server scrapes (content type :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class _SessionCounter:
    """Counts what one session says into the shared metrics."""

    def __init__(self, metrics: PrometheusMetrics, session: AgentSession) -> None:
        self._m = metrics
        self._session = session
        self._transport = getattr(session.input, "transport", "audio")
        self._stages = {node.name for node in session.graph.nodes}
        self._sources: dict[int, str] = {}  # reply id -> who asked for it
        self._started = False
        session.events.subscribe(self._on_event)
        session.graph.observe(self._on_frame)

    def _on_frame(self, frame: SystemFrame) -> None:
        if isinstance(frame, ReplyStartedFrame):
            self._sources[frame.reply_id] = frame.source
        elif isinstance(frame, PlayoutFinishedFrame) and frame.reply_id in self._sources:
            outcome = "interrupted" if frame.interrupted else "done"
            self._m.replies.labels(self._sources.pop(frame.reply_id), outcome).inc()

    def _on_event(self, event: Event) -> None:
        m = self._m
        if isinstance(event, SessionStateEvent):
            if event.state == "started":
                self._started = True
                m.sessions_active.labels(self._transport).inc()
                m._queues.sessions.add(self._session.graph)
            elif self._started:
                self._started = False
                m.sessions_active.labels(self._transport).dec()
                m.sessions.labels(self._transport, self._reason(event.reason)).inc()
                m._queues.sessions.discard(self._session.graph)
        elif isinstance(event, MetricsEvent):
            for stage, seconds in event.metrics.model_dump(exclude={"turn_id"}).items():
                if seconds is not None:
                    m.turn_latency.labels(stage).observe(seconds)
        elif isinstance(event, StageEvent):
            m.stage_duration.labels(event.stage).observe(max(0.0, event.ts - event.start))
        elif isinstance(event, ToolCallEvent):
            m.stage_duration.labels("tool").observe(max(0.0, event.ts - event.start))
            m.tool_calls.labels(str(event.error).lower()).inc()
        elif isinstance(event, UserTurnEvent):
            m.turns.inc()
        elif isinstance(event, DraftEvent):
            m.drafts.labels(event.action).inc()
        elif isinstance(event, BargeInEvent):
            if event.action == "interrupted":
                m.interruptions.inc()
            elif event.action == "resumed":
                m.false_interruptions.inc()
        elif isinstance(event, ErrorEvent):
            # a stage's name ("llm"), or its helper task's ("llm.tool", "say-3"): the stage
            stage = event.source.split(".")[0].split("-")[0]
            m.errors.labels(stage if stage in self._stages else "session").inc()

    def _reason(self, reason: str) -> str:
        """Why a session ended, as one of a few label values (the reason itself is free
        text: it is in the session's events and logs)."""
        if self._session.graph.fatal_error is not None:
            return "error"
        if self._session.runtime.hangup_reason:
            return "agent_hangup"
        if reason == "completed":
            return "completed"
        if reason.startswith("no audio"):
            return "input_timeout"
        return "remote"  # the caller or the server ended it (BYE, a closed page, shutdown)


class _QueueDepths(Collector):
    """Frames waiting in the inboxes of the live sessions, the deepest per stage, read at
    scrape time."""

    def __init__(self) -> None:
        self.sessions: weakref.WeakSet[Graph] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        deepest: dict[str, int] = {}
        for graph in list(self.sessions):
            for node in graph.nodes:
                deepest[node.name] = max(deepest.get(node.name, 0), len(node.inbox))
        family = GaugeMetricFamily("voiceagent_queue_depth",
                                   "Frames waiting in a stage's inbox (the deepest over the "
                                   "live sessions)", labels=["stage"])
        for name, depth in sorted(deepest.items()):
            family.add_metric([name], depth)
        yield family


class _ModelLockWaits(Collector):
    """How long sessions waited for a model that takes one caller at a time (a backend's
    ``model_lock``): the backends are shared by the process, so are these figures."""

    def __init__(self) -> None:
        self.backends: dict[str, object] = {}  # kind -> the process's backend

    def collect(self) -> Iterator[Metric]:
        waits = CounterMetricFamily("voiceagent_model_lock_waits",
                                    "Calls that found the model busy", labels=["backend"])
        seconds = CounterMetricFamily("voiceagent_model_lock_wait_seconds",
                                      "Seconds calls waited for a busy model", labels=["backend"])
        waiting = GaugeMetricFamily("voiceagent_model_lock_waiting",
                                    "Calls waiting for the model now", labels=["backend"])
        for kind, backend in sorted(self.backends.items()):
            lock = getattr(backend, "model_lock", None)
            if isinstance(lock, ModelLock):
                waits.add_metric([kind], lock.waits)
                seconds.add_metric([kind], lock.waited)
                waiting.add_metric([kind], lock.waiting)
        yield from (waits, seconds, waiting)
