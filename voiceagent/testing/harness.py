"""A node harness: the stages under test in a graph of their own, frames in at the front,
what comes out at the back, and every system frame that was broadcast.

::

    async with Harness(EndpointerNode(options, runtime), runtime=runtime) as h:
        await h.send(SpeechStarted(ts=0.0))
        assert h.broadcasts(PlayoutPauseFrame)

``Harness.replies`` is a reply ledger observing the graph, as a session has, so tests can
assert through reply handles.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import numpy as np

from ..clock import SessionClock
from ..events import EventBus
from ..frames import DataFrame, Frame, SystemFrame
from ..graph import Graph, Node
from ..metrics import MetricsTracker
from ..replies import ReplyLedger
from ..runtime import SessionRuntime
from ..transports.base import AudioSinkNode

F = TypeVar("F", bound=Frame)


class ManualClock(SessionClock):
    """A session clock that moves only when a test says so (:meth:`advance`)."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0.0
        self._moved = asyncio.Event()

    def restart(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self._moved.set()
        self._moved = asyncio.Event()

    async def sleep_until(self, t: float) -> None:
        while self.t < t:
            await self._moved.wait()


def make_runtime(clock: SessionClock | None = None, session_id: str = "test") -> SessionRuntime:
    events = EventBus(session_id)
    return SessionRuntime(session_id, clock or ManualClock(), events, MetricsTracker(events))


class _Collector(Node):
    def __init__(self) -> None:
        super().__init__("harness.out")
        self.frames: list[DataFrame] = []

    async def process(self, frame: DataFrame) -> None:
        self.frames.append(frame)


class Harness:
    """Runs ``nodes`` chained between a test input and a collector."""

    def __init__(self, *nodes: Node, runtime: SessionRuntime | None = None) -> None:
        self.runtime = runtime or make_runtime()
        self.graph = Graph("harness")
        self.input = Node("harness.in")
        self._out = _Collector()
        self.graph.chain(self.input, *nodes, self._out)
        self.nodes = nodes
        self.system: list[SystemFrame] = []
        self.graph.observe(self.system.append)
        rt = self.runtime
        self.replies = ReplyLedger(rt.clock, rt.events, rt.new_turn_id, self.graph.broadcast)
        self.graph.observe(self.replies.observe)

    async def __aenter__(self) -> Harness:
        await self.graph.start()
        await self.settle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.graph.stop(graceful=False)
        self.replies.close()

    @property
    def out(self) -> list[DataFrame]:
        """The data frames that came out of the last node, in order."""
        return self._out.frames

    def output(self, kind: type[F]) -> list[F]:
        return [f for f in self._out.frames if isinstance(f, kind)]

    def broadcasts(self, kind: type[F]) -> list[F]:
        return [f for f in self.system if isinstance(f, kind)]

    async def send(self, *frames: DataFrame) -> None:
        """Frames into the first node, in order; returns once the graph is quiet."""
        for frame in frames:
            await self.input.emit(frame)
        await self.settle()

    async def broadcast(self, frame: SystemFrame) -> None:
        await self.graph.broadcast(frame)
        await self.settle()

    async def play(self, output: AudioSinkNode, seconds: float) -> np.ndarray:
        """Pull ``seconds`` of audio out of ``output`` (an unpaced sink: playout moves only
        when the test says), as a WebRTC track would."""
        frames = []
        for _ in range(round(seconds / 0.02)):
            frames.append(await output.next_frame(self.runtime.clock.now()))
            await self.settle()
        return np.concatenate(frames) if frames else np.zeros(0, np.float32)

    async def settle(self, rounds: int = 5, timeout: float = 2.0) -> None:
        """Until every inbox has stayed empty for ``rounds`` turns of the loop (for stages
        that wait on nothing but frames and fake backends)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while quiet < rounds and loop.time() < deadline:
            await asyncio.sleep(0)
            quiet = quiet + 1 if all(len(n.inbox) == 0 for n in self.graph.nodes) else 0
