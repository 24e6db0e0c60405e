"""Turn-taking: when the user's turn is over, and what user speech over the agent means.

End of turn. Silence is timed on the audio frames' own timestamps (media time), so decisions
do not depend on machine load or clock speed. In ``vad`` mode the turn ends after a fixed
silence. In ``hybrid`` mode, when the user pauses, the transcript decoded at the pause comes
with the recogniser's own probability that a sentence ends there (or, from a recogniser that
has none, a text model scores it), and an audio end-of-turn model scores the last seconds of
speech where its score can still change the outcome (:func:`~voiceagent.turn_policy.audio_needed`);
their weighted score sets how much silence to wait for: little when the turn sounds and reads
finished, a lot when it does not. A turn never lasts longer than ``max_turn``.

The decision is broadcast as an :class:`EndOfTurnFrame`; the STT stage answers with the final
transcript, which becomes the :class:`UserTurnFrame` the agent replies to. A turn with no
words (a cough, a door) is dropped.

Barge-in. User speech while the agent is talking pauses the agent's audio at once. It
interrupts the reply when confirmed (long enough, with words that are not backchannels);
otherwise the agent resumes where it stopped and the sound is not treated as a turn.

Preemptive replies (``AgentOptions.preemptive``). The transcript decoded at a pause is what
the turn will most likely end with, so the reply to it starts there, as a draft: a
:class:`DraftStartedFrame` and a :class:`UserTurnFrame` with the draft's id. When the turn
ends with the same words (normalised), a :class:`ReplyStartedFrame` of the draft's id commits
it; when the user goes on speaking, or the final words differ, an :class:`InterruptionFrame`
aimed at the draft discards it. At most one draft is pending.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..agent import AgentOptions
from ..backchannel import BackchannelFilter
from ..backends import CompletenessScorer, TurnDetector
from ..events import BargeInEvent, UserTurnEvent
from ..frames import (
    AgentChangedFrame,
    AudioFrame,
    DataFrame,
    DraftStartedFrame,
    EndOfTurnFrame,
    InterruptionFrame,
    PlayoutPauseFrame,
    ReplyStartedFrame,
    SpeechStarted,
    SpeechStopped,
    SystemFrame,
    TextInputFrame,
    TranscriptFrame,
    UserTurnFrame,
    UserTurnStartedFrame,
)
from ..graph import Node
from ..replies import ReplyActivity
from ..runtime import SessionRuntime
from ..text import normalize
from ..turn_features import UNMEASURED, Prosody, prosody
from ..turn_model import PauseEvidence, TurnModel
from ..turn_policy import audio_needed, required_silence, turn_over, uses_end_probability

AUDIO_CONTEXT = 8.0  # seconds of speech the audio model hears


@dataclass
class _Pause:
    """Scores for the current pause in the user's speech (None until computed)."""

    audio: float | None = None
    text: float | None = None
    #: the speech the audio model would score, and how long ago (s) it ended at its end;
    #: kept from the pause's start, scored only once the score is needed (or at once)
    clip: tuple[np.ndarray, float] | None = None
    audio_asked: bool = False
    prosody: Prosody | None = None  # of the speech before the pause (model mode)
    evidence: PauseEvidence | None = None  # model mode: built once everything is in


@dataclass
class _Draft:
    """The pending draft reply: to which turn, for which words, announced by which frame."""

    reply_id: int
    turn_id: int
    words: list[str]
    announced: int  # the DraftStartedFrame's id: an interruption made before it spares it


@dataclass
class _BargeIn:
    turn_id: int
    start: float
    confirmed: bool = False


class EndpointerNode(Node):
    def __init__(self, options: AgentOptions, runtime: SessionRuntime,
                 turn_detector: TurnDetector | None = None,
                 completeness: CompletenessScorer | None = None) -> None:
        super().__init__("endpointer")
        self._opts = options.endpointing
        self._barge_opts = options.barge_in
        self._hybrid = self._opts.mode in ("hybrid", "model")  # the models score each pause
        if self._hybrid and (turn_detector is None or completeness is None):
            raise ValueError(f"{self._opts.mode} endpointing needs a turn detector and a "
                             "completeness scorer")
        self._model = (TurnModel.load(self._opts.model_path) if self._opts.mode == "model"
                       else None)
        self._detector = turn_detector
        self._completeness = completeness
        self._backchannels = BackchannelFilter(self._barge_opts)
        self._rt = runtime
        self._audio: deque[np.ndarray] = deque()
        self._audio_len = 0
        self._audio_end = 0.0
        self._turn_id: int | None = None  # the open turn
        self._turn_start = 0.0
        self._speaking = False
        self._speech_end: float | None = None  # end of the open turn's last speech segment
        self._pause = _Pause()
        self._scoring: list[asyncio.Task] = []
        self._words = ""  # the open turn's latest transcript
        self._confidence: float | None = None  # the recogniser's, in those words
        self._decided: dict[int, tuple[float, _Pause, str]] = {}  # waiting for final text
        self._barge: _BargeIn | None = None
        self._dropped: set[int] = set()  # turns that were only a noise or a backchannel
        self._replies = ReplyActivity()  # what the agent is saying, from the output's frames
        self._preemptive = options.preemptive
        self._draft: _Draft | None = None

    async def on_system(self, frame: SystemFrame) -> None:
        self._replies.observe(frame)
        if isinstance(frame, AgentChangedFrame):
            self._adopt(frame.options)
        elif isinstance(frame, InterruptionFrame) and self._draft is not None:
            draft = self._draft  # discarded from code (session.interrupt()): it is gone
            if frame.id > draft.announced and frame.affects(draft.reply_id, True):
                self._draft = None
                self._rt.metrics.discard(draft.turn_id, draft.reply_id)

    def _adopt(self, options: AgentOptions) -> None:
        """Another agent's turn-taking. The durations and barge-in switch at once; the mode
        and its models were loaded for the session, so an agent asking for another keeps
        the session's."""
        endpointing = options.endpointing
        if (endpointing.mode, endpointing.model_path) == (self._opts.mode, self._opts.model_path):
            self._opts = endpointing
        self._barge_opts = options.barge_in
        self._backchannels = BackchannelFilter(self._barge_opts)
        self._preemptive = options.preemptive

    # -- frames ---------------------------------------------------------------------------

    async def process(self, frame: DataFrame) -> None:
        if isinstance(frame, AudioFrame):
            self._remember(frame.samples, frame.ts + frame.duration)
            await self._tick(frame.ts + frame.duration)
        elif isinstance(frame, SpeechStarted):
            await self._speech_started(frame.ts)
        elif isinstance(frame, SpeechStopped):
            self._speaking = False
            self._speech_end = frame.ts
            if self._hybrid:
                self._pause.clip = (self._recent_audio(), self._audio_end - frame.ts)
                self._ask_audio()
        elif isinstance(frame, TextInputFrame):
            await self._user_turn(self._rt.new_turn_id(), frame.text, frame.ts, frame.ts,
                                  _Pause(), "text")
        elif isinstance(frame, TranscriptFrame):
            if frame.final:
                await self._on_final(frame)
            elif frame.turn_id == self._turn_id:
                self._words, self._confidence = frame.text, frame.confidence
                if self._hybrid and frame.at_pause and not self._speaking and frame.text:
                    if uses_end_probability(self._opts, frame.end_probability):
                        self._pause.text = frame.end_probability
                        self._ask_audio()
                    else:
                        self._score(self._score_text(frame.text))
                    await self._prepare_reply(frame)
                    # the silence may already be long enough for this score: end the turn now,
                    # not at the next audio frame (up to 20 ms later)
                    await self._tick(self._audio_end)

    async def _speech_started(self, ts: float) -> None:
        self._speaking = True
        self._cancel_scoring()
        self._pause = _Pause()
        if self._draft is not None and self._draft.turn_id == self._turn_id:
            await self._discard_draft(ts, "the user went on speaking")
        if self._turn_id is None:
            self._turn_id = self._rt.new_turn_id()
            self._turn_start = ts
            self._words, self._confidence = "", None
            await self.broadcast(UserTurnStartedFrame(ts=ts, turn_id=self._turn_id))
        if (self._barge is None and self._barge_opts.enabled and self._replies.speaking
                and not self._replies.protected):
            self._barge = _BargeIn(turn_id=self._turn_id, start=ts)
            await self.broadcast(PlayoutPauseFrame(ts=ts, paused=True))
            self._rt.events.emit(BargeInEvent(ts=ts, action="paused", turn_id=self._turn_id))

    async def _tick(self, now: float) -> None:
        barge = self._barge
        if barge is not None and not barge.confirmed:
            if (self._speaking and now - barge.start >= self._barge_opts.min_duration
                    and self._backchannels.interrupts(self._words)):
                await self._confirm_barge_in(now)
            elif (not self._speaking and self._speech_end is not None
                  and now - self._speech_end >= self._barge_opts.resume_after
                  and not self._backchannels.interrupts(self._words, self._confidence)):
                await self._resume(now)
        if self._turn_id is None:
            return
        if now - self._turn_start >= self._opts.max_turn:
            await self._end_turn(now, self._speech_end if not self._speaking else now, "max_turn")
        elif (not self._speaking and self._speech_end is not None
              and self._turn_over(now - self._speech_end)):
            await self._end_turn(now, self._speech_end, "silence")

    # -- the end-of-turn decision -----------------------------------------------------------

    def required_silence(self) -> float:
        return required_silence(self._opts, self._pause.audio, self._pause.text)

    def _turn_over(self, silence: float) -> bool:
        pause = self._pause
        if (self._model is not None and pause.evidence is None and pause.prosody is not None
                and pause.text is not None and pause.audio is not None):
            assert self._speech_end is not None
            pause.evidence = PauseEvidence.of(pause.text, pause.audio, self._words,
                                              pause.prosody, self._speech_end - self._turn_start)
        return turn_over(self._opts, silence, pause.audio, pause.text, pause.evidence,
                         self._model)

    def _ask_audio(self) -> None:
        """Score the pause's speech with the audio model if its score can still matter."""
        pause = self._pause
        if pause.clip is not None and not pause.audio_asked and audio_needed(self._opts,
                                                                               pause.text):
            pause.audio_asked = True
            self._score(self._score_audio(*pause.clip))

    def _score(self, coro) -> None:
        self._scoring.append(self.spawn(coro, "score"))

    def _cancel_scoring(self) -> None:
        for task in self._scoring:
            task.cancel()
        self._scoring.clear()

    async def _score_audio(self, audio: np.ndarray, since_speech: float) -> None:
        """Smart Turn's score and (for the learned model) the prosody of the speech, which
        ended ``since_speech`` seconds before the end of ``audio``."""
        assert self._detector is not None
        pause = self._pause  # a result that comes back after speech resumed lands nowhere
        pause.audio = await asyncio.to_thread(self._detector.probability, audio)
        if self._model is not None:
            speech_end = max(0.0, len(audio) / 16_000 - since_speech)
            pause.prosody = (await asyncio.to_thread(prosody, audio, speech_end)
                             if self._model.reads("prosody_") else UNMEASURED)

    async def _score_text(self, text: str) -> None:
        assert self._completeness is not None
        pause = self._pause
        pause.text = await asyncio.to_thread(self._completeness.probability, text)
        self._ask_audio()  # (speech resuming or the turn ending cancels this task first)

    async def _end_turn(self, ts: float, speech_end: float | None, reason: str) -> None:
        turn_id = self._turn_id
        assert turn_id is not None
        speech_end = ts if speech_end is None else speech_end
        self._cancel_scoring()
        self._decided[turn_id] = (speech_end, self._pause, reason)
        self._turn_id, self._speech_end, self._pause = None, None, _Pause()
        self._rt.metrics.mark(turn_id, "speech_end", speech_end)
        self._rt.metrics.mark(turn_id, "end_of_turn", ts)
        await self.broadcast(EndOfTurnFrame(ts=ts, turn_id=turn_id, speech_end_ts=speech_end))

    async def _on_final(self, frame: TranscriptFrame) -> None:
        decided = self._decided.pop(frame.turn_id, None)
        if decided is None:
            return
        speech_end, pause, reason = decided
        barge = self._barge if self._barge and self._barge.turn_id == frame.turn_id else None
        if barge is not None and not barge.confirmed:
            if self._backchannels.interrupts(frame.text, frame.confidence):
                await self._confirm_barge_in(frame.ts)
            else:
                await self._resume(frame.ts)
        if not frame.text or frame.turn_id in self._dropped:
            self._dropped.discard(frame.turn_id)
            if self._draft is not None and self._draft.turn_id == frame.turn_id:
                await self._discard_draft(frame.ts, "no user turn after all")
            self._rt.metrics.finish(frame.turn_id)
            return
        await self._user_turn(frame.turn_id, frame.text, frame.ts, speech_end, pause, reason)

    async def _user_turn(self, turn_id: int, text: str, ts: float, speech_end: float,
                         pause: _Pause, reason: str) -> None:
        draft = self._draft
        if draft is not None and (draft.turn_id, draft.words) != (turn_id, normalize(text)):
            await self._discard_draft(ts, "the turn ended with other words")
            draft = None
        self._draft = None
        reply_id = turn_id if draft is None else draft.reply_id
        self._rt.events.emit(UserTurnEvent(ts=ts, text=text, turn_id=turn_id, reply_id=reply_id,
                                           audio_score=pause.audio, text_score=pause.text,
                                           reason=reason))
        if self._replies.interruptible:
            # A new turn supersedes a reply still in progress.
            await self._interrupt(ts, "new user turn")
        if draft is not None:  # the reply has begun: commit it (its audio plays at once)
            self._rt.metrics.link(turn_id, reply_id)
            self._rt.metrics.mark(turn_id, "user_turn", ts)
            await self.broadcast(ReplyStartedFrame(ts=ts, reply_id=reply_id, source="draft",
                                                   turn_id=turn_id))
            return
        # The reply to a turn has the turn's id.
        self._rt.metrics.mark(turn_id, "user_turn", ts)
        await self.broadcast(ReplyStartedFrame(ts=ts, reply_id=turn_id, source="turn",
                                               turn_id=turn_id))
        await self.emit(UserTurnFrame(ts=ts, text=text, turn_id=turn_id, reply_id=turn_id,
                                      speech_end_ts=speech_end))

    # -- preemptive replies ---------------------------------------------------------------

    async def _prepare_reply(self, frame: TranscriptFrame) -> None:
        """Start a draft reply to the words decoded at this pause (replacing a draft for
        other words)."""
        words = normalize(frame.text)
        if not self._preemptive or not words or (self._barge is not None and not (
                self._backchannels.interrupts(frame.text, frame.confidence))):
            return  # a backchannel over the agent is no turn to answer
        if self._draft is not None:
            if self._draft.words == words:
                return
            await self._discard_draft(frame.ts, "the words changed")
        assert self._turn_id is not None
        reply_id = self._rt.new_turn_id()
        start = DraftStartedFrame(ts=frame.ts, reply_id=reply_id, turn_id=self._turn_id)
        self._draft = _Draft(reply_id, self._turn_id, words, start.id)
        await self.broadcast(start)
        await self.emit(UserTurnFrame(ts=frame.ts, text=frame.text, turn_id=self._turn_id,
                                      reply_id=reply_id,
                                      speech_end_ts=self._speech_end or frame.ts))

    async def _discard_draft(self, ts: float, reason: str) -> None:
        draft, self._draft = self._draft, None
        assert draft is not None
        self._rt.metrics.discard(draft.turn_id, draft.reply_id)
        await self.broadcast(InterruptionFrame(ts=ts, reason=f"draft discarded: {reason}",
                                               replies=frozenset({draft.reply_id}),
                                               force=True))

    # -- barge-in -------------------------------------------------------------------------

    async def _confirm_barge_in(self, ts: float) -> None:
        assert self._barge is not None
        self._barge.confirmed = True
        self._rt.events.emit(BargeInEvent(ts=ts, action="interrupted",
                                          turn_id=self._barge.turn_id, text=self._words))
        await self._interrupt(ts, "barge-in")
        self._barge = None

    async def _resume(self, ts: float) -> None:
        assert self._barge is not None
        turn_id = self._barge.turn_id
        self._barge = None
        self._dropped.add(turn_id)  # a noise or a backchannel is not the user's turn
        await self.broadcast(PlayoutPauseFrame(ts=ts, paused=False))
        self._rt.events.emit(BargeInEvent(ts=ts, action="resumed", turn_id=turn_id,
                                          text=self._words))

    async def _interrupt(self, ts: float, reason: str) -> None:
        """Stop the replies user speech may stop (protected ones go on)."""
        await self.broadcast(InterruptionFrame(ts=ts, reason=reason,
                                               replies=self._replies.interruptible))

    # -- audio for the turn model ------------------------------------------------------------

    def _remember(self, samples: np.ndarray, end: float) -> None:
        self._audio_end = end  # media time of the last sample held
        self._audio.append(samples)
        self._audio_len += len(samples)
        limit = int(AUDIO_CONTEXT * 16_000)
        while self._audio_len - len(self._audio[0]) >= limit:
            self._audio_len -= len(self._audio.popleft())

    def _recent_audio(self) -> np.ndarray:
        return np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)

    async def on_stop(self) -> None:
        self._cancel_scoring()

