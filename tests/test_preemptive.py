"""Preemptive replies: a draft starts at the user's pause, is committed when the turn ends
with the same words and discarded otherwise. A discarded draft never reaches the audio, the
conversation or a tool; a committed draft's audio is the reply.

The turn-taking stages run in the node harness (endpointer, LLM, chunker, TTS, output) on
fake backends and a manual clock: logic only, milliseconds. The real-model check is in
test_agent_e2e.py.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np

from voiceagent import Agent, AgentOptions
from voiceagent.agent import EndpointingOptions
from voiceagent.backends import ToolCall
from voiceagent.events import DraftEvent, Event, LatencyBreakdownEvent, UserTurnEvent
from voiceagent.frames import (
    AudioFrame,
    DraftStartedFrame,
    PlayoutFinishedFrame,
    PlayoutStartedFrame,
    SpeechStarted,
    SpeechStopped,
    TranscriptFrame,
    UserTurnStartedFrame,
)
from voiceagent.graph import Graph
from voiceagent.nodes.endpointer import EndpointerNode
from voiceagent.nodes.llm import LLMNode
from voiceagent.nodes.speech import ChunkerNode, TTSNode
from voiceagent.replies import ReplyState
from voiceagent.testing import Harness, make_runtime
from voiceagent.testing.fakes import ScriptedLLM, ToneTTS
from voiceagent.transports.base import AudioSinkNode
from voiceagent.workflow import Workflow

FRAME = 0.02


class Sure:
    """A turn detector (and completeness scorer) that finds every pause a turn's end."""

    def probability(self, _: object) -> float:
        return 0.99


class Stages:
    """Endpointer ─► LLM ─► chunker ─► TTS ─► output in a harness, and a user who speaks
    to it frame by frame on the manual clock."""

    def __init__(self, llm: ScriptedLLM, *, tools: list | None = None,
                 preemptive: bool = True) -> None:
        opts = AgentOptions(endpointing=EndpointingOptions(mode="hybrid"), preemptive=preemptive)
        self.agent = Agent("Be brief.", tools=tools or [], options=opts)
        self.rt = make_runtime()
        self.llm, self.tts = llm, ToneTTS()
        self.flow = Workflow(self.agent, {"llm": llm}, self.rt, Graph("unused"))
        self.out = AudioSinkNode(16_000, self.rt)
        self.harness = Harness(EndpointerNode(opts, self.rt, Sure(), Sure()),  # type: ignore[arg-type]
                               LLMNode(self.flow, self.rt), ChunkerNode(opts, self.rt),
                               TTSNode(self.tts, opts, self.rt), self.out, runtime=self.rt)
        self.events: list[Event] = []
        self.rt.events.subscribe(self.events.append)
        self.t = 0.0

    async def __aenter__(self) -> Stages:
        await self.harness.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.harness.__aexit__(*exc)

    async def send(self, frame: TranscriptFrame | AudioFrame | SpeechStarted | SpeechStopped
                   ) -> None:
        # a draft's later chunks wait in the TTS's inbox for the commit: the harness
        # never sees every inbox empty then, so do not wait long for that
        await self.harness.input.emit(frame)
        await self.harness.settle(timeout=0.1)

    @property
    def turn(self) -> int:
        return self.harness.broadcasts(UserTurnStartedFrame)[-1].turn_id

    async def _frames(self, seconds: float, level: float) -> None:
        for _ in range(round(seconds / FRAME)):
            self.rt.clock.advance(FRAME)  # type: ignore[attr-defined]
            await self.send(AudioFrame(
                ts=self.t, samples=np.full(round(FRAME * 16_000), level, np.float32),
                sample_rate=16_000))
            self.t += FRAME

    async def speak(self, seconds: float = 0.5) -> None:
        await self.send(SpeechStarted(ts=self.t))
        await self._frames(seconds, 0.3)
        await self.send(SpeechStopped(ts=self.t))

    async def pause_words(self, text: str) -> None:
        """The transcript decoded at the pause (what a draft answers)."""
        await self.send(TranscriptFrame(ts=self.t, text=text, final=False,
                                                turn_id=self.turn, at_pause=True,
                                                end_probability=0.99))
        await asyncio.sleep(0.01)  # the audio model's score, off the event loop

    async def end_turn(self, final: str) -> None:
        """Silence until the turn is over, then its final transcript."""
        await self._frames(0.3, 0.0)
        await self.send(TranscriptFrame(ts=self.t, text=final, final=True,
                                                turn_id=self.turn))

    async def listen(self, seconds: float) -> np.ndarray:
        return await self.harness.play(self.out, seconds)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def drafts(self) -> list[tuple[str, int]]:
        return [(e.action, e.reply_id) for e in self.of(DraftEvent)]

    def conversation(self) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in self.flow.context.history]


async def test_a_committed_draft_is_the_reply_and_its_audio_plays_at_once():
    thinking = asyncio.Event()
    async with Stages(ScriptedLLM(["A table", thinking, " for two, done."])) as s:
        await s.speak()
        await s.pause_words("Book a table for two.")
        s.rt.clock.advance(0.1)  # type: ignore[attr-defined]
        thinking.set()  # the LLM takes 0.1 s to its first clause, while the user is quiet
        await s.harness.settle()
        draft = s.harness.broadcasts(DraftStartedFrame)[0].reply_id
        assert len(s.llm.calls) == 1  # generating before the turn is over...
        assert s.llm.calls[0][-1].content == "Book a table for two."
        assert s.tts.said == ["A table for two, done."]  # ...and its first clause voiced
        assert s.conversation() == []  # but nothing of it is in the conversation
        assert not (await s.listen(0.2)).any()  # nor heard
        await s.end_turn("book a table for two")  # the same words, normalised
        assert s.of(UserTurnEvent)[0].reply_id == draft
        heard = await s.listen(0.04)
        assert heard.any()  # the held audio plays from the next frame
        await s.listen(1.0)
        reply = s.harness.replies.get(draft)
        assert reply is not None and reply.state == ReplyState.DONE
        assert reply.heard_text == "A table for two, done." and reply.turn_id == s.turn
    assert len(s.llm.calls) == 1  # the draft was the reply: no second generation
    assert s.conversation() == [("user", "Book a table for two."),
                                ("assistant", "A table for two, done.")]
    assert s.drafts() == [("started", draft), ("committed", draft)]
    breakdown = s.of(LatencyBreakdownEvent)
    assert len(breakdown) == 1 and breakdown[0].draft
    assert (breakdown[0].turn_id, breakdown[0].reply_id) == (s.turn, draft)
    b = breakdown[0]
    assert b.draft_saved == 0.1  # all of it done before the turn ended: nothing left to wait
    assert b.llm_first_token == b.first_clause == b.tts_first_audio == 0
    parts = (b.endpointing, b.stt_final, b.llm_first_token, b.first_clause,
             b.tts_first_audio, b.output)
    assert abs(sum(parts) - b.total) < 1e-3


async def test_a_discarded_draft_never_reaches_the_audio_or_the_conversation():
    """The user goes on after a pause: the draft for the first words is discarded, the turn
    is answered by a draft of all of it."""
    async with Stages(ScriptedLLM("Early answer, never heard. More of it.",
                                  "A table for two at eight.")) as s:
        await s.speak()
        await s.pause_words("Book a table")
        first = s.harness.broadcasts(DraftStartedFrame)[0].reply_id
        await s.speak()  # the user goes on
        await s.pause_words("Book a table for two at eight.")
        second = s.harness.broadcasts(DraftStartedFrame)[1].reply_id
        await s.end_turn("Book a table for two at eight.")
        await s.listen(1.5)
        finished = s.harness.broadcasts(PlayoutFinishedFrame)
        assert [(f.reply_id, f.heard_text) for f in finished] == [
            (second, "A table for two at eight.")]
        assert s.harness.replies.get(first).state == ReplyState.DISCARDED
    assert first not in {f.reply_id for f in s.harness.broadcasts(PlayoutStartedFrame)}
    assert s.conversation() == [("user", "Book a table for two at eight."),
                                ("assistant", "A table for two at eight.")]
    assert s.drafts() == [("started", first), ("discarded", first), ("started", second),
                          ("committed", second)]
    # the discarded draft cost one clause of TTS at most: the rest waited for a commit
    assert s.tts.said == ["Early answer, never heard.", "A table for two at eight."]
    assert s.of(LatencyBreakdownEvent)[0].drafts_discarded == 1


async def test_a_turn_that_ends_with_other_words_discards_the_draft_and_answers_them():
    async with Stages(ScriptedLLM("Draft.", "Answer to the final words.")) as s:
        await s.speak()
        await s.pause_words("Book a table")
        draft = s.harness.broadcasts(DraftStartedFrame)[0].reply_id
        await s.end_turn("Book a cable")
        await s.listen(1.0)
        turn = s.of(UserTurnEvent)[0]
        assert turn.reply_id == turn.turn_id != draft  # an ordinary reply
        reply = s.harness.replies.get(turn.reply_id)
        assert reply.heard_text == "Answer to the final words."
    assert s.llm.calls[1][-1].content == "Book a cable"
    assert [m.content for m in s.llm.calls[1] if m.role == "user"] == ["Book a cable"]
    assert s.conversation() == [("user", "Book a cable"),
                                ("assistant", "Answer to the final words.")]
    assert s.drafts() == [("started", draft), ("discarded", draft)]


def book_table(people: int) -> str:
    """Book a table."""
    booked.append(people)
    return "booked"


booked: list[int] = []


async def test_a_drafts_tool_call_waits_for_the_commit_and_a_discarded_one_never_runs():
    booked.clear()
    call = ToolCall("call_1", "book_table", json.dumps({"people": 2}))
    llm = ScriptedLLM(["One moment. ", call], ["One moment. ", call], "Booked for two.")
    async with Stages(llm, tools=[book_table]) as s:
        await s.speak()
        await s.pause_words("Book for two")
        await s.speak()  # the user goes on: the draft and its call are dropped
        assert booked == []
        await s.pause_words("Book for two please.")
        assert booked == [] and len(llm.calls) == 2  # the call waits for the commit
        await s.end_turn("Book for two please.")
        await s.listen(2.0)
        assert booked == [2]
    assert len(llm.calls) == 3  # the committed draft went on with the tool's result
    history = s.flow.context.history
    assert [m.role for m in history] == ["user", "assistant", "assistant", "tool"]
    assert history[0].content == "Book for two please."
    assert history[1].content == "One moment. Booked for two."  # the reply's words
    assert history[3].content == "booked"


async def test_a_committed_draft_is_cut_by_barge_in_like_any_reply():
    long_reply = "A long answer that goes on and on. " * 3
    async with Stages(ScriptedLLM(long_reply, "Sure.")) as s:
        s.tts.seconds_per_word = 0.2
        await s.speak()
        await s.pause_words("Tell me a story.")
        await s.end_turn("Tell me a story.")
        draft = s.of(UserTurnEvent)[0].reply_id
        await s.listen(0.6)  # a few words of it are heard
        await s.speak(0.6)  # the user barges in with words
        await s.pause_words("Stop please.")
        await s.end_turn("Stop please.")
        await s.listen(1.0)
        cut = s.harness.replies.get(draft)
        assert cut.state == ReplyState.INTERRUPTED
        assert cut.heard_text and long_reply.startswith(cut.heard_text)
        second = s.of(UserTurnEvent)[1].reply_id
        assert s.harness.replies.get(second).heard_text == "Sure."
    assert s.conversation() == [("user", "Tell me a story."), ("assistant", cut.heard_text),
                                ("user", "Stop please."), ("assistant", "Sure.")]


async def test_without_the_option_no_draft_is_made():
    async with Stages(ScriptedLLM("Hello."), preemptive=False) as s:
        await s.speak()
        await s.pause_words("Hi there.")
        assert not s.llm.calls and not s.harness.broadcasts(DraftStartedFrame)
        await s.end_turn("Hi there.")
        await s.listen(0.5)
    assert s.of(UserTurnEvent)[0].reply_id == s.turn and not s.drafts()
    assert s.conversation() == [("user", "Hi there."), ("assistant", "Hello.")]
