"""Graph semantics: ordering, overtaking, fan-out/in, interruption, error isolation, no leaks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voiceagent import graph as graph_module
from voiceagent.frames import (
    AudioFrame,
    DataFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMTextFrame,
    SystemFrame,
    TranscriptFrame,
)
from voiceagent.graph import Graph, Inbox, Node


def text(i: int) -> TranscriptFrame:
    return TranscriptFrame(text=str(i), final=False)


class Recorder(Node):
    def __init__(self, name: str = "recorder", delay: float = 0.0, **kw) -> None:
        super().__init__(name, **kw)
        self.seen: list[Frame] = []
        self.delay = delay

    async def process(self, frame: DataFrame) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.seen.append(frame)
        await self.emit(frame)

    async def on_system(self, frame: SystemFrame) -> None:
        self.seen.append(frame)


class Source(Node):
    async def on_start(self) -> None:
        pass


def graph_tasks(graph: Graph) -> list[asyncio.Task]:
    prefix = f"{graph.name}:"
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done()]


async def test_inbox_system_frames_overtake_queued_data():
    inbox = Inbox(maxsize=10)
    for i in range(3):
        await inbox.put(text(i))
    interrupt = InterruptionFrame()
    await inbox.put(interrupt)
    assert await inbox.get() is interrupt
    assert [(await inbox.get()).text for _ in range(3)] == ["0", "1", "2"]


async def test_inbox_is_bounded_and_put_waits_for_room():
    inbox = Inbox(maxsize=2)
    await inbox.put(text(0))
    await inbox.put(text(1))
    blocked = asyncio.ensure_future(inbox.put(text(2)))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    await inbox.put(InterruptionFrame())  # system frames never wait for room
    await inbox.get()
    await inbox.get()
    await asyncio.wait_for(blocked, 1)
    assert len(inbox) == 2


async def test_data_order_is_kept_through_a_chain():
    graph = Graph("order")
    src, a, b = Source("src"), Recorder("a", delay=0.001), Recorder("b")
    graph.chain(src, a, b)
    await graph.start()
    for i in range(50):
        await src.emit(text(i))
    await graph.stop(graceful=True)
    assert [f.text for f in b.seen if isinstance(f, TranscriptFrame)] == [str(i) for i in range(50)]
    assert not graph_tasks(graph)


async def test_fan_out_and_fan_in_edges():
    graph = Graph("fan")
    src, left, right, join = Source("src"), Recorder("left"), Recorder("right"), Recorder("join")
    graph.connect(src, left)
    graph.connect(src, right)
    graph.connect(left, join)
    graph.connect(right, join)
    await graph.start()
    for i in range(5):
        await src.emit(text(i))
    await graph.stop(graceful=True)
    got = [f.text for f in join.seen if isinstance(f, TranscriptFrame)]
    assert sorted(got) == sorted([str(i) for i in range(5)] * 2)
    assert len(left.seen) - 1 == len(right.seen) - 1 == 5  # plus the StartFrame
    # The join node ended only after both branches ended (one EndFrame each).
    assert not graph_tasks(graph)


class SlowReplier(Node):
    """Takes a long time over each reply frame, like an LLM generating."""

    def __init__(self) -> None:
        super().__init__("slow")
        self.started = asyncio.Event()
        self.cancelled = 0
        self.finished: list[str] = []

    async def process(self, frame: DataFrame) -> None:
        assert isinstance(frame, LLMTextFrame)
        self.started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished.append(frame.text)


async def test_interruption_cancels_work_in_flight_and_drops_queued_replies():
    graph = Graph("interrupt")
    src, slow = Source("src"), SlowReplier()
    graph.chain(src, slow)
    await graph.start()
    for i in range(3):
        await src.emit(LLMTextFrame(text=f"reply{i}", reply_id=1))
    await asyncio.wait_for(slow.started.wait(), 1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await graph.broadcast(InterruptionFrame())
    await asyncio.sleep(0.05)
    assert slow.cancelled == 1
    assert len(slow.inbox) == 0  # the queued replies were dropped
    assert loop.time() - t0 < 1
    # A reply made after the interruption is processed normally.
    slow.started.clear()
    await src.emit(LLMTextFrame(text="after", reply_id=2))
    await asyncio.wait_for(slow.started.wait(), 1)
    await graph.stop(graceful=False)
    assert not graph_tasks(graph)


async def test_interruption_keeps_user_data():
    inbox_node = Recorder("keeper", delay=0.01)
    graph = Graph("keep")
    src = Source("src")
    graph.chain(src, inbox_node)
    await graph.start()
    for i in range(5):
        await src.emit(text(i))  # user transcripts are not reply frames
    await graph.broadcast(InterruptionFrame())
    await graph.stop(graceful=True)
    assert [f.text for f in inbox_node.seen if isinstance(f, TranscriptFrame)] == list("01234")


class Exploding(Node):
    async def process(self, frame: DataFrame) -> None:
        if isinstance(frame, TranscriptFrame) and frame.text == "boom":
            raise RuntimeError("backend exploded")
        await self.emit(frame)


async def test_exception_in_a_node_becomes_an_error_and_the_graph_carries_on():
    graph = Graph("errors")
    errors: list[ErrorFrame] = []
    graph.on_error(errors.append)
    src, bomb, sink = Source("src"), Exploding("bomb"), Recorder("sink")
    graph.chain(src, bomb, sink)
    await graph.start()
    await src.emit(text(1))
    await src.emit(TranscriptFrame(text="boom", final=False))
    await src.emit(text(2))
    await graph.stop(graceful=True)
    assert [f.text for f in sink.seen if isinstance(f, TranscriptFrame)] == ["1", "2"]
    assert len(errors) == 1 and errors[0].source == "bomb" and "exploded" in errors[0].message
    assert not errors[0].fatal
    assert any(isinstance(f, ErrorFrame) for f in sink.seen)  # everyone hears of it


class BrokenLoop(Node):
    async def on_system(self, frame: SystemFrame) -> None:
        pass

    async def run(self) -> None:  # a bug in a node's own loop
        raise RuntimeError("loop bug")


async def test_a_dead_node_fails_the_graph_instead_of_hanging():
    graph = Graph("dead")
    errors: list[ErrorFrame] = []
    graph.on_error(errors.append)
    graph.chain(Source("src"), BrokenLoop("broken"), Recorder("sink"))
    await graph.start()
    assert await graph.wait(timeout=2)
    assert graph.fatal_error is not None and "loop bug" in graph.fatal_error.message
    assert errors and errors[0].fatal
    await graph.stop()
    assert not graph_tasks(graph)


class Spawner(Node):
    async def on_start(self) -> None:
        self.spawn(asyncio.sleep(3600), "forever")


async def test_stop_cancels_helper_tasks_and_leaves_nothing():
    graph = Graph("leaks")
    graph.chain(Spawner("spawner"), SlowReplier())
    await graph.start()
    await asyncio.sleep(0.01)
    assert len(graph_tasks(graph)) == 3
    await graph.stop(graceful=True, timeout=0.2)
    assert not graph_tasks(graph)
    assert all(t.done() for t in graph.tasks)


async def test_stopping_a_node_mid_frame_leaves_no_waiter_behind():
    """A node busy with a frame also waits for system frames; a stop then must cancel that
    wait too, or the task is left pending and destroyed later (a leak per stopped session)."""
    graph = Graph("midframe")
    src, slow = Source("src"), Recorder("slow", delay=3600)
    graph.chain(src, slow)
    await graph.start()
    await src.emit(text(0))
    await asyncio.sleep(0.01)  # inside process(), listening for system frames
    await graph.stop(graceful=False)
    waiting = [t for t in asyncio.all_tasks() if not t.done()
               and "get_system" in getattr(t.get_coro(), "__qualname__", "")]
    assert not waiting


async def test_graceful_stop_drains_queued_data():
    graph = Graph("drain")
    src, sink = Source("src"), Recorder("sink", delay=0.005)
    graph.chain(src, sink)
    await graph.start()
    for i in range(20):
        await src.emit(text(i))
    await graph.stop(graceful=True)
    assert len([f for f in sink.seen if isinstance(f, TranscriptFrame)]) == 20


def test_a_node_belongs_to_one_graph():
    node = Recorder()
    Graph("one").add(node)
    with pytest.raises(ValueError):
        Graph("two").add(node)


class Stuck(Node):
    """A stage far slower than real time (a decode on a busy CPU) until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__("stuck", inbox_size=4)
        self.release = asyncio.Event()
        self.seen: list[DataFrame] = []

    async def process(self, frame: DataFrame) -> None:
        await self.release.wait()
        self.seen.append(frame)


def audio(i: int) -> AudioFrame:
    return AudioFrame(ts=i * 0.02, samples=np.full(320, i, np.float32), sample_rate=16_000)


async def test_a_lagging_branch_never_holds_up_the_other_branch_of_a_fan_out():
    """Issue 12, defect 4: the VAD fans out to the STT and the endpointer; a full STT inbox
    must not stall the endpointer. The lagging branch gets all its audio, in fewer frames."""
    graph = Graph("lag")
    src, stuck, fast = Source("src"), Stuck(), Recorder("fast")
    graph.connect(src, stuck, overflow="coalesce")
    graph.connect(src, fast)
    await graph.start()
    for i in range(50):  # a second of audio into an inbox of 4 frames
        await asyncio.wait_for(src.emit(audio(i)), 0.5)
    await asyncio.sleep(0.05)
    assert [f.ts for f in fast.seen if isinstance(f, AudioFrame)] == [audio(i).ts
                                                                      for i in range(50)]
    stuck.release.set()
    await graph.stop(graceful=True)
    frames = [f for f in stuck.seen if isinstance(f, AudioFrame)]
    assert len(frames) == 2  # the one in hand when it got stuck, then all the rest at once
    heard = np.concatenate([f.samples for f in frames])
    assert np.array_equal(heard, np.concatenate([audio(i).samples for i in range(50)]))
    last = frames[-1]
    assert last.ts + last.duration == pytest.approx(50 * 0.02)  # timestamps stay true
    assert not graph_tasks(graph)


async def test_a_coalescing_edge_keeps_order_with_other_data_and_bounds_what_it_holds(
        monkeypatch):
    monkeypatch.setattr(graph_module, "MAX_COALESCED", 0.1)
    graph = Graph("bound")
    errors: list[ErrorFrame] = []
    graph.on_error(errors.append)
    src, stuck = Source("src"), Stuck()
    graph.connect(src, stuck, overflow="coalesce")
    await graph.start()
    for i in range(4):
        await src.emit(audio(i))
    marker = text(99)  # a frame that cannot merge: queued beyond the bound, never lost
    await src.emit(marker)
    for i in range(4, 30):
        await asyncio.wait_for(src.emit(audio(i)), 0.5)
    stuck.release.set()
    await graph.stop(graceful=True)
    cut = stuck.seen.index(marker)
    before = [f.samples for f in stuck.seen[:cut] if isinstance(f, AudioFrame)]
    assert np.array_equal(np.concatenate(before),
                          np.concatenate([audio(i).samples for i in range(4)]))
    tail = [f for f in stuck.seen[cut + 1:] if isinstance(f, AudioFrame)]
    assert sum(len(f.samples) for f in tail) == round(0.1 * 16_000)  # the newest 0.1 s
    assert tail[-1].samples[-1] == 29
    lagging = [e for e in errors if "lagging" in e.message]
    assert len(lagging) == 1 and not lagging[0].fatal  # reported once, the session goes on
