"""Run an agent against a recording: the engine of ``voiceagent run``, tests and benchmarks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import registry
from .agent import Agent
from .backends import ChatMessage
from .audio import load_audio
from .clock import SessionClock
from .events import (
    AgentEnteredEvent,
    AgentTextEvent,
    ErrorEvent,
    Event,
    JsonlEventWriter,
    MetricsEvent,
    ToolCallEvent,
    TurnMetrics,
    UserTranscriptEvent,
)
from .loader import apply_backend_overrides, load_agent
from .observability import observe_calls
from .session import AgentSession, resolve_backends
from .transports.file import FileAudioInput, FileAudioOutput


@dataclass
class FileRunResult:
    audio: np.ndarray  # what the user heard, on the input's timeline
    rate: int
    events: list[Event] = field(default_factory=list)
    fatal_error: str | None = None
    history: list[ChatMessage] = field(default_factory=list)  # the conversation at the end

    @property
    def metrics(self) -> list[TurnMetrics]:
        return [e.metrics for e in self.events if isinstance(e, MetricsEvent)]

    def of_type(self, kind: type[Event]) -> list:
        return [e for e in self.events if isinstance(e, kind)]


async def converse_with_file(
    agent: Agent,
    samples: np.ndarray,
    *,
    speed: float = 1.0,
    max_tail: float = 60.0,
    subscribers: list[Callable[[Event], object]] = (),  # type: ignore[assignment]
    backends: dict[str, object] | None = None,
) -> FileRunResult:
    """Play ``samples`` (16 kHz mono) to ``agent`` as a live microphone and record replies."""
    session = AgentSession(
        agent,
        lambda rt: FileAudioInput(samples, rt, max_tail=max_tail),
        lambda rt: FileAudioOutput(rt),
        clock=SessionClock(speed),
        backends=backends,
    )
    events: list[Event] = []
    session.events.subscribe(events.append)
    for subscriber in subscribers:
        session.events.subscribe(subscriber)
    await session.run()
    output: FileAudioOutput = session.output  # type: ignore[assignment]
    audio = output.audio
    if len(audio) < len(samples):
        audio = np.pad(audio, (0, len(samples) - len(audio)))
    fatal = session.graph.fatal_error
    return FileRunResult(audio, output.rate, events, fatal.message if fatal else None,
                         list(session.context.history))


def console_printer(event: Event) -> None:
    """A readable transcript of the session on stdout."""
    if isinstance(event, UserTranscriptEvent) and event.final and event.text:
        print(f"[{event.ts:6.2f}] user:  {event.text}")
    elif isinstance(event, AgentTextEvent) and event.final:
        if event.interrupted:
            said = f"{event.text} [interrupted]" if event.text else "[interrupted before speaking]"
        else:
            said = event.text
        print(f"[{event.ts:6.2f}] agent: {said}")
    elif isinstance(event, AgentEnteredEvent):
        print(f"[{event.ts:6.2f}] now:   {event.agent} ({event.reason.replace('_', ' ')}, from "
              f"{event.previous})")
    elif isinstance(event, ToolCallEvent):
        print(f"[{event.ts:6.2f}] tool:  {event.name}({event.arguments}) -> {event.result}")
    elif isinstance(event, MetricsEvent):
        m = event.metrics
        parts = [f"{k}={v:.3f}s" for k, v in m.model_dump(exclude={"turn_id"}).items()
                 if v is not None]
        print(f"[{event.ts:6.2f}] metrics turn {m.turn_id}: {' '.join(parts)}")
    elif isinstance(event, ErrorEvent):
        print(f"[{event.ts:6.2f}] error in {event.source}: {event.message}", file=sys.stderr)
    sys.stdout.flush()


async def run_file(args: argparse.Namespace) -> int:
    agent = load_agent(args.agent)
    apply_backend_overrides(agent, args)
    observability = observe_calls(agent, args)
    samples = load_audio(args.input)
    backends = resolve_backends(agent)  # load models before the clock starts
    subscribers: list[Callable[[Event], object]] = []
    if not args.quiet:
        subscribers.append(console_printer)
    writer = JsonlEventWriter(args.events) if args.events else None
    if writer:
        subscribers.append(writer)
    try:
        result = await converse_with_file(agent, samples, speed=args.speed,
                                          max_tail=args.max_tail, subscribers=subscribers,
                                          backends=backends)
    finally:
        if writer:
            writer.close()
        observability.close()
        await registry.aclose(backends.values())
    if args.output:
        from .audio import write_wav

        write_wav(args.output, result.audio, result.rate)
        if not args.quiet:
            print(f"wrote {args.output} ({len(result.audio) / result.rate:.1f} s)")
    if result.fatal_error:
        print(f"voiceagent: session failed: {result.fatal_error}", file=sys.stderr)
        return 1
    return 0
