"""The session graph: nodes with bounded inboxes joined by explicit edges.

Each node is one asyncio task that reads its inbox. System frames overtake queued data frames;
while a node processes a data frame it keeps listening for system frames, so an interruption
cancels a generation or synthesis in flight instead of waiting behind it. An exception in a
node becomes an :class:`ErrorFrame` broadcast to the graph and the frame is dropped: the
session carries on. A node whose loop dies takes the graph down with a fatal error instead of
leaving it hanging. :meth:`Graph.stop` cancels and awaits every task it started.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from .frames import (
    AudioFrame,
    CancelFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    ReplyFrame,
    StartFrame,
    SystemFrame,
)
from .tasks import TaskSet

log = logging.getLogger(__name__)


class Inbox:
    """Two queues behind one wait: system frames first, data frames bounded and in order."""

    def __init__(self, maxsize: int = 256) -> None:
        if maxsize < 1:
            raise ValueError("inbox maxsize must be at least 1")
        self.maxsize = maxsize
        self._system: deque[SystemFrame] = deque()
        self._data: deque[DataFrame] = deque()
        self._cond = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._system) + len(self._data)

    async def put(self, frame: Frame) -> None:
        async with self._cond:
            if isinstance(frame, SystemFrame):
                self._system.append(frame)
            else:
                await self._cond.wait_for(lambda: len(self._data) < self.maxsize)
                self._data.append(frame)  # type: ignore[arg-type]
            self._cond.notify_all()

    async def offer(self, frame: DataFrame,
                    merge: Callable[[DataFrame, DataFrame], DataFrame | None]) -> None:
        """Queue ``frame`` without waiting for room: it is merged into the last queued frame
        where ``merge`` can (it returns None where not; the frame is then queued, beyond the
        bound if need be: what cannot be merged is never lost)."""
        async with self._cond:
            merged = merge(self._data[-1], frame) if self._data else None
            if merged is None:
                self._data.append(frame)
            else:
                self._data[-1] = merged
            self._cond.notify_all()

    async def get(self) -> SystemFrame | DataFrame:
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._system or self._data))
            frame = self._system.popleft() if self._system else self._data.popleft()
            self._cond.notify_all()
            return frame

    async def get_system(self) -> SystemFrame:
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._system))
            return self._system.popleft()

    async def drop_data(self, predicate: Callable[[DataFrame], bool]) -> int:
        """Remove queued data frames matching ``predicate``; returns how many."""
        async with self._cond:
            kept = deque(f for f in self._data if not predicate(f))
            dropped = len(self._data) - len(kept)
            self._data = kept
            self._cond.notify_all()
            return dropped


#: What an edge does when its destination's inbox is full. ``wait``: the sender waits for
#: room (back-pressure). ``coalesce``: the sender never waits; audio that finds audio queued
#: is merged into it, so a stage that lags takes all its backlog in one piece next time,
#: catches up, and holds the others up not at all (at most ``MAX_COALESCED`` seconds are
#: kept; older audio is dropped and the gap reported).
Overflow = Literal["wait", "coalesce"]

#: The longest merged audio frame a coalescing edge keeps, in seconds.
MAX_COALESCED = 30.0


@dataclass(eq=False)
class Edge:
    """One edge out of ``src``: how its frames reach ``dst``."""

    src: Node
    dst: Node
    overflow: Overflow = "wait"
    dropped: float = 0.0  # seconds of audio a coalescing edge had to drop

    async def send(self, frame: Frame) -> None:
        if self.overflow == "wait" or not isinstance(frame, DataFrame):
            await self.dst.inbox.put(frame)
            return
        before = self.dropped
        await self.dst.inbox.offer(frame, self._coalesce)
        if before == 0.0 < self.dropped:
            await self.src.report_error(
                f"{self.dst.name} is lagging more than {MAX_COALESCED:g} s behind "
                f"{self.src.name}: its oldest audio is being dropped")

    def _coalesce(self, last: DataFrame, frame: DataFrame) -> DataFrame | None:
        if not (isinstance(last, AudioFrame) and isinstance(frame, AudioFrame)
                and last.sample_rate == frame.sample_rate):
            return None
        samples = np.concatenate([last.samples, frame.samples])
        keep = round(MAX_COALESCED * frame.sample_rate)
        if len(samples) > keep:
            self.dropped += (len(samples) - keep) / frame.sample_rate
            samples = samples[-keep:]
        end = frame.ts + frame.duration  # the end is exact; a gap before it is closed up
        return replace(frame, samples=samples, ts=end - len(samples) / frame.sample_rate,
                       filled=last.filled and frame.filled)  # made up only if all of it was


class Node:
    """One stage of a session. Subclasses override :meth:`process` and the ``on_*`` hooks."""

    def __init__(self, name: str | None = None, *, inbox_size: int = 256) -> None:
        self.name = name or type(self).__name__
        self.inbox = Inbox(inbox_size)
        self.graph: Graph | None = None
        self._downstream: list[Edge] = []
        self._upstream_count = 0
        self._ends_seen = 0

    # -- hooks ----------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Called once before the first frame."""

    async def process(self, frame: DataFrame) -> None:
        """Handle one data frame. The default passes it on."""
        await self.emit(frame)

    async def on_system(self, frame: SystemFrame) -> None:
        """Handle a system frame (after interruption bookkeeping)."""

    async def on_end(self) -> None:
        """Flush before the graceful end travels on."""

    async def on_stop(self) -> None:
        """Release resources; called however the node ends."""

    # -- plumbing -------------------------------------------------------------------------

    async def emit(self, frame: Frame) -> None:
        """Send ``frame`` along every edge out of this node; each edge's overflow policy
        decides whether a full inbox holds the sender up."""
        for edge in self._downstream:
            await edge.send(frame)

    async def broadcast(self, frame: SystemFrame) -> None:
        if self.graph is not None:
            await self.graph.broadcast(frame)

    async def report_error(self, exc: BaseException | str, *, fatal: bool = False) -> None:
        message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        log.warning("%s: %s", self.name, message)
        await self.broadcast(ErrorFrame(source=self.name, message=message, fatal=fatal))

    def spawn(self, coro: Any, name: str) -> asyncio.Task:
        """Start a helper task owned by this node's graph (cancelled and awaited at stop)."""
        if self.graph is None:
            raise RuntimeError(f"{self.name} is not in a graph")
        return self.graph.spawn(coro, f"{self.name}.{name}")

    async def _guarded(self, frame: DataFrame) -> None:
        try:
            await self.process(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # error isolation: report, drop the frame, carry on
            log.debug("%s failed on %s", self.name, type(frame).__name__, exc_info=True)
            await self.report_error(exc)

    async def _handle_system(self, frame: SystemFrame, busy: asyncio.Task | None,
                             busy_frame: DataFrame | None) -> None:
        if isinstance(frame, InterruptionFrame):
            # The frames of the replies it reaches go, and the work on them; only what was
            # made before the interruption: a reply to a turn right behind it must survive.
            def stale(f: DataFrame) -> bool:
                return (isinstance(f, ReplyFrame) and f.id < frame.id
                        and frame.affects(f.reply_id, f.interruptible))

            await self.inbox.drop_data(stale)
            if busy is not None and busy_frame is not None and stale(busy_frame):
                busy.cancel()
        try:
            await self.on_system(frame)
        except Exception as exc:
            await self.report_error(exc)

    async def run(self) -> None:
        try:
            await self.on_start()
            while True:
                frame = await self.inbox.get()
                if isinstance(frame, CancelFrame):
                    return
                if isinstance(frame, SystemFrame):
                    await self._handle_system(frame, None, None)
                    continue
                if isinstance(frame, EndFrame):
                    self._ends_seen += 1
                    if self._ends_seen < max(1, self._upstream_count):
                        continue  # fan-in: wait until every upstream has ended
                    try:
                        await self.on_end()
                    except Exception as exc:
                        await self.report_error(exc)
                    await self.emit(frame)
                    return
                await self._process_listening(frame)
        finally:
            try:
                await self.on_stop()
            except Exception:
                log.exception("%s: on_stop failed", self.name)

    async def _process_listening(self, frame: DataFrame) -> None:
        """Process ``frame`` while still reacting to system frames."""
        work = asyncio.ensure_future(self._guarded(frame))
        waiter: asyncio.Future | None = None
        try:
            while not work.done():
                waiter = asyncio.ensure_future(self.inbox.get_system())
                done, _ = await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if waiter in done:
                    system = waiter.result()
                    if isinstance(system, CancelFrame):
                        work.cancel()
                        await asyncio.gather(work, return_exceptions=True)
                        raise asyncio.CancelledError
                    await self._handle_system(system, work, frame)
                else:
                    waiter.cancel()
                    await asyncio.gather(waiter, return_exceptions=True)
            try:
                await work
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # we are being cancelled, not just the work
        finally:
            # cancelled mid-wait (the graph stops): neither the work nor the wait may outlive
            # this frame
            pending = [t for t in (work, waiter) if t is not None and not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


ErrorHandler = Callable[[ErrorFrame], Any]


class Graph:
    """Owns the nodes, their edges and every task they run."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.nodes: list[Node] = []
        self._helpers = TaskSet(on_failure=self._on_helper_failed)
        self._node_tasks: dict[asyncio.Task, Node] = {}
        self._error_handlers: list[ErrorHandler] = []
        self._observers: list[Callable[[SystemFrame], Any]] = []
        self._finished = asyncio.Event()
        self.fatal_error: ErrorFrame | None = None
        self._started = False

    # -- building -------------------------------------------------------------------------

    def add(self, node: Node) -> Node:
        if node.graph is not None and node.graph is not self:
            raise ValueError(f"{node} already belongs to another graph")
        if node not in self.nodes:
            node.graph = self
            self.nodes.append(node)
        return node

    def connect(self, src: Node, dst: Node, *, overflow: Overflow = "wait") -> Edge:
        """An edge: every frame ``src`` emits reaches ``dst``. Several edges out of one node
        fan out; several into one node fan in. ``overflow`` says what happens when ``dst``
        falls behind (see :data:`Overflow`)."""
        self.add(src)
        self.add(dst)
        for edge in src._downstream:
            if edge.dst is dst:
                edge.overflow = overflow
                return edge
        edge = Edge(src, dst, overflow)
        src._downstream.append(edge)
        dst._upstream_count += 1
        return edge

    def chain(self, *nodes: Node) -> None:
        for a, b in zip(nodes, nodes[1:]):
            self.connect(a, b)

    def on_error(self, handler: ErrorHandler) -> None:
        self._error_handlers.append(handler)

    def observe(self, handler: Callable[[SystemFrame], Any]) -> None:
        """Call ``handler`` with every system frame broadcast, before any node has it (the
        session's reply ledger keeps its record this way)."""
        self._observers.append(handler)

    # -- running --------------------------------------------------------------------------

    @property
    def sources(self) -> list[Node]:
        return [n for n in self.nodes if n._upstream_count == 0]

    def spawn(self, coro: Any, name: str) -> asyncio.Task:
        return self._helpers.spawn(coro, f"{self.name}:{name}")

    def _on_helper_failed(self, task: asyncio.Task, exc: BaseException) -> None:
        self._dispatch_error(ErrorFrame(source=task.get_name().split(":", 1)[-1],
                                        message=f"{type(exc).__name__}: {exc}"))

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("graph already started")
        self._started = True
        for node in self.nodes:
            task = asyncio.create_task(node.run(), name=f"{self.name}:{node.name}")
            self._node_tasks[task] = node
            task.add_done_callback(self._on_node_done)
        await self.broadcast(StartFrame())

    def _on_node_done(self, task: asyncio.Task) -> None:
        node = self._node_tasks.get(task)
        if not task.cancelled() and task.exception() is not None and self.fatal_error is None:
            exc = task.exception()
            self.fatal_error = ErrorFrame(source=node.name if node else "?",
                                          message=f"{type(exc).__name__}: {exc}", fatal=True)
            log.error("node %s died", node, exc_info=exc)
            self._dispatch_error(self.fatal_error)
            self._finished.set()
        if all(t.done() for t in self._node_tasks):
            self._finished.set()

    def _dispatch_error(self, frame: ErrorFrame) -> None:
        for handler in self._error_handlers:
            try:
                handler(frame)
            except Exception:
                log.exception("error handler failed")

    async def broadcast(self, frame: SystemFrame) -> None:
        if isinstance(frame, ErrorFrame):
            self._dispatch_error(frame)
            if frame.fatal and self.fatal_error is None:
                self.fatal_error = frame
                self._finished.set()
        for observer in self._observers:
            try:
                observer(frame)
            except Exception:
                log.exception("observer failed on %s", type(frame).__name__)
        for node in self.nodes:
            await node.inbox.put(frame)

    async def end(self) -> None:
        """Graceful end: an EndFrame enters every source and drains through the graph."""
        for node in self.sources:
            await node.inbox.put(EndFrame())

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until every node finished (or a fatal error); True unless it timed out."""
        try:
            await asyncio.wait_for(self._finished.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self, *, graceful: bool = True, timeout: float = 5.0) -> None:
        """End the graph and leave no task behind: drain first if ``graceful``, then cancel."""
        if graceful and self._node_tasks and self.fatal_error is None:
            await self.end()
            await self.wait(timeout)
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._helpers.cancel_all()  # helper tasks spawned during cancellation
        self._finished.set()

    @property
    def tasks(self) -> Iterable[asyncio.Task]:
        return [*self._node_tasks, *self._helpers]
