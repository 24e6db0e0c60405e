"""One conversation: an agent, a transport, and the graph between them.

::

    input ─► VAD ─┬─► STT ──┐
                  └─────────┴─► endpointer ─► LLM ─► say ─► chunker ─► TTS ─► output
                                                      ▲                    (playout clock)
                                     session.say() ───┘

The backends are the agent's (resolved through the registry, so shared by every session in
the process); everything else is this session's own. Its replies are owned by one ledger
(``session.replies``), which follows them through the frames the stages broadcast.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from . import registry
from .agent import Agent, CarryOver
from .clock import SessionClock
from .context import ChatContext
from .events import DTMF_KEYS, DTMFEvent, ErrorEvent, EventBus, SessionStateEvent
from .backends import ChatMessage
from .frames import ErrorFrame, InterruptionFrame, LLMTextFrame, ReplyEnd, TextInputFrame
from .graph import Graph, Node
from .workflow import Workflow
from .metrics import MetricsTracker
from .nodes.endpointer import EndpointerNode
from .nodes.llm import LLMNode
from .nodes.speech import ChunkerNode, TTSNode
from .nodes.stt import STTNode
from .nodes.vad import VADNode
from .replies import Reply, ReplyLedger, ReplyState
from .race import race
from .recording import SessionRecorder
from .runtime import SessionRuntime
from .transports.base import AudioSinkNode

log = logging.getLogger(__name__)


def resolve_backends(agent: Agent) -> dict[str, object]:
    """The agent's backends, loaded (once per process) through the registry. The turn
    models are loaded only when the endpointer will use them."""
    wanted = dict(agent.backends)
    if agent.options.endpointing.mode == "vad":
        wanted.pop("turn", None)
        wanted.pop("completeness", None)
    return {kind: registry.resolve(kind, spec, **agent.backend_options[kind])  # type: ignore[arg-type]
            for kind, spec in wanted.items()}


class AgentSession:
    """Build with the transport's nodes, then ``await session.run()`` (or start/stop).

    ``make_input`` and ``make_output`` receive the session's runtime (clock, events) and
    return the transport's source and sink nodes.
    """

    def __init__(
        self,
        agent: Agent,
        make_input: Callable[[SessionRuntime], Node],
        make_output: Callable[[SessionRuntime], AudioSinkNode],
        *,
        clock: SessionClock | None = None,
        session_id: str | None = None,
        backends: dict[str, object] | None = None,
    ) -> None:
        self.id = session_id or uuid.uuid4().hex[:12]
        self.events = EventBus(self.id)
        self.runtime = SessionRuntime(session_id=self.id, clock=clock or SessionClock(),
                                      events=self.events, metrics=MetricsTracker(self.events))
        b = backends or resolve_backends(agent)
        #: the backends by kind (shared by every session in the process)
        self.backends = b
        opts = agent.options
        rt = self.runtime
        self.input = make_input(rt)
        self.output = make_output(rt)
        self.graph = Graph(f"session-{self.id}")
        #: the agent holding the conversation, its context, and handoffs (workflow.py)
        self.workflow = Workflow(agent, b, rt, self.graph)
        #: every reply of this session, from the frames that announce, start and end them
        self.replies = ReplyLedger(rt.clock, self.events, rt.new_turn_id, self.graph.broadcast)
        self.graph.observe(self.replies.observe)
        # Replies said from code join the LLM's here, on their way to the chunker.
        self._say = Node("say")
        self._endpointer = EndpointerNode(opts, rt, b.get("turn"), b.get("completeness"))  # type: ignore[arg-type]
        chunker = ChunkerNode(opts, rt)
        vad = VADNode(b["vad"], opts.endpointing, rt)  # type: ignore[arg-type]
        stt = STTNode(b["stt"], opts.endpointing, rt,  # type: ignore[arg-type]
                      timeout=opts.stt_timeout)
        # The endpointer hears the VAD directly (fan-out), so a slow decode delays only the
        # transcript, never the timing of the turn: the STT's edge never makes the VAD wait
        # (its audio coalesces while it lags). Transcripts join the endpointer (fan-in).
        self.graph.connect(self.input, vad)
        self.graph.connect(vad, stt, overflow="coalesce")
        self.graph.connect(vad, self._endpointer)
        self.graph.connect(stt, self._endpointer)
        self.graph.chain(
            self._endpointer,
            LLMNode(self.workflow, rt),
            self._say,
            chunker,
            TTSNode(b["tts"], opts, rt),  # type: ignore[arg-type]
            self.output,
        )
        self.graph.on_error(self._on_error)
        self._ended = False
        self._keys = ""  # the keypad entry in progress
        self._keys_timer: asyncio.Task | None = None
        for observer in agent.observers:
            observer.attach(self)
        #: writes this session's audio and transcript when it stops (None: not recorded)
        self.recorder = SessionRecorder(opts.recording) if opts.recording else None
        if self.recorder is not None:
            self.recorder.attach(self)

    @property
    def agent(self) -> Agent:
        """The agent holding the conversation now."""
        return self.workflow.agent

    @property
    def context(self) -> ChatContext:
        """The active agent's conversation."""
        return self.workflow.context

    async def update_agent(self, agent: Agent, *, carry_over: CarryOver | None = None,
                           note: str = "") -> None:
        """Hand the conversation to ``agent`` from code (a tool returns the agent instead).
        It receives the conversation as ``carry_over`` says (its own by default) and says its
        greeting, if it has one; it answers from the next user turn (a reply being
        generated goes on with it from its next round)."""
        await self.workflow.hand_off(agent, carry_over=carry_over, note=note)
        if agent.greeting:
            await self.say(agent.greeting)

    def _on_error(self, frame: ErrorFrame) -> None:
        self.events.emit(ErrorEvent(ts=self.runtime.clock.now(), source=frame.source,
                                    message=frame.message, fatal=frame.fatal))

    async def start(self) -> None:
        self.runtime.clock.restart()  # the timeline begins with the session, not before
        await self.graph.start()
        self.events.emit(SessionStateEvent(ts=self.runtime.clock.now(), state="started"))
        if self.agent.greeting:
            await self.say(self.agent.greeting)

    async def interrupt(self, reason: str = "interrupted by the application") -> None:
        """Stop the agent talking now, protected speech included (the reply kept in the
        conversation is cut to what was heard)."""
        await self.graph.broadcast(InterruptionFrame(ts=self.runtime.clock.now(), reason=reason,
                                                     force=True))

    async def say(self, text: str, *, allow_interruptions: bool = True,
                  interrupt: bool = False) -> Reply:
        """Speak ``text`` as the agent (a greeting, a notice, a legal disclaimer); the text
        joins the conversation as an assistant message. It is spoken after the sentence in
        progress of any reply being spoken (replies take turns by sentence, never mixing their
        words); ``interrupt=True`` stops the interruptible replies in progress first. With
        ``allow_interruptions=False`` user speech neither pauses nor cuts it. Returns the
        reply's handle (``await reply.wait_for_playout()``)."""
        rt = self.runtime
        if interrupt:
            await self.graph.broadcast(InterruptionFrame(ts=rt.clock.now(), reason="say"))
        reply = await self.replies.open("say", allow_interruptions=allow_interruptions)
        message = ChatMessage("assistant", text)
        self.context.add(message)
        self.graph.spawn(self._keep_heard(reply, message), f"say-{reply.id}")
        now = rt.clock.now()
        await self._say.emit(LLMTextFrame(ts=now, text=text, reply_id=reply.id,
                                          interruptible=allow_interruptions))
        await self._say.emit(ReplyEnd(ts=now, text=text, reply_id=reply.id,
                                      interruptible=allow_interruptions))
        return reply

    async def _keep_heard(self, reply: Reply, message: ChatMessage) -> None:
        if await reply.wait_for_playout() == ReplyState.INTERRUPTED:
            self.context.cut_to_heard(message, reply.heard_text)

    async def send_text(self, text: str) -> None:
        """A typed user turn: answered like a spoken one, interrupting a reply in progress."""
        await self._endpointer.inbox.put(TextInputFrame(ts=self.runtime.clock.now(), text=text))

    async def press_key(self, digit: str) -> None:
        """A phone keypad press (from a telephony transport): a ``dtmf`` event, and the
        keys of one entry reach the LLM as a user turn (see :class:`DTMFOptions`)."""
        if len(digit) != 1 or digit not in DTMF_KEYS:
            raise ValueError(f"not a DTMF key: {digit!r}")
        opts = self.agent.options.dtmf
        self.events.emit(DTMFEvent(ts=self.runtime.clock.now(), digit=digit))
        if not opts.to_llm:
            return
        if self._keys_timer is not None:
            self._keys_timer.cancel()
            self._keys_timer = None
        if digit == opts.terminator:
            await self._send_keys()
            return
        self._keys += digit
        self._keys_timer = self.graph.spawn(self._send_keys(opts.inter_digit_timeout), "dtmf")

    async def _send_keys(self, after: float = 0.0) -> None:
        await asyncio.sleep(after)
        keys, self._keys = self._keys, ""
        if keys:
            await self.send_text(f"(The caller pressed {' '.join(keys)} on the keypad.)")

    async def wait(self, timeout: float | None = None) -> bool:
        """Until the input ends and the graph drains, a fatal error, or the agent hung up
        (a tool's ``end_call``) and its last reply has played out. False on time-out."""
        return await race(self.graph.wait(), self._hung_up(), timeout=timeout) is not None

    async def _hung_up(self) -> None:
        rt = self.runtime
        while rt.hangup_reason is None or self.replies.active:
            await asyncio.sleep(0.02)

    @property
    def end_reason(self) -> str:
        """Why the conversation ended by itself: the agent hung up, a fatal error, or the
        input's own reason (a caller who went quiet, a file that ended)."""
        fatal = self.graph.fatal_error
        if self.runtime.hangup_reason:
            return self.runtime.hangup_reason
        if fatal is not None:
            return f"error: {fatal.message}"
        return getattr(self.input, "end_reason", "") or "completed"

    async def stop(self, *, graceful: bool = False, reason: str = "") -> None:
        """End the session; afterwards none of its tasks is left."""
        if self._ended:
            return
        self._ended = True
        await self.graph.stop(graceful=graceful)
        self.replies.close()
        self.events.emit(SessionStateEvent(ts=self.runtime.clock.now(), state="ended",
                                           reason=reason or self.end_reason))
        if self.recorder is not None:
            await self.recorder.save()

    async def run(self, timeout: float | None = None) -> None:
        await self.start()
        try:
            await self.wait(timeout)
        finally:
            await self.stop()

    async def __aenter__(self) -> AgentSession:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
