"""End of turn from VAD silence: the user's turn is over after ``silence_timeout`` of quiet.

Time is read from the audio frames themselves (media time), so the decision is the same
whatever the machine's load or the clock's speed. The decision is broadcast as an
:class:`EndOfTurnFrame`; the STT stage answers with the final transcript, which becomes the
:class:`UserTurnFrame` the agent replies to. A turn with no words (a cough, a door) is dropped.
"""

from __future__ import annotations

from ..agent import EndpointingOptions
from ..events import UserTurnEvent
from ..frames import (
    AudioFrame,
    DataFrame,
    EndOfTurnFrame,
    InterruptionFrame,
    SpeechStarted,
    SpeechStopped,
    TranscriptFrame,
    UserTurnFrame,
)
from ..graph import Node
from ..runtime import SessionRuntime


class EndpointerNode(Node):
    def __init__(self, options: EndpointingOptions, runtime: SessionRuntime) -> None:
        super().__init__("endpointer")
        self._opts = options
        self._rt = runtime
        self._turn_id = 0
        self._speaking = False
        self._speech_end: float | None = None  # end of the last speech segment of the open turn
        self._decided: dict[int, float] = {}  # turn -> speech end, waiting for the final text

    async def process(self, frame: DataFrame) -> None:
        if isinstance(frame, SpeechStarted):
            self._speaking = True
            if self._speech_end is None:  # a new turn, not a pause inside one
                self._turn_id += 1
                self._rt.user_turn_open = True
        elif isinstance(frame, SpeechStopped):
            self._speaking = False
            self._speech_end = frame.ts
        elif isinstance(frame, AudioFrame):
            if (not self._speaking and self._speech_end is not None
                    and frame.ts + frame.duration - self._speech_end >= self._opts.silence_timeout):
                await self._end_turn(frame.ts + frame.duration)
        elif isinstance(frame, TranscriptFrame) and frame.final:
            await self._on_final(frame)

    async def _end_turn(self, ts: float) -> None:
        assert self._speech_end is not None
        turn_id, speech_end = self._turn_id, self._speech_end
        self._speech_end = None
        self._decided[turn_id] = speech_end
        self._rt.metrics.mark(turn_id, "speech_end", speech_end)
        self._rt.metrics.mark(turn_id, "end_of_turn", ts)
        await self.broadcast(EndOfTurnFrame(ts=ts, turn_id=turn_id, speech_end_ts=speech_end))

    async def _on_final(self, frame: TranscriptFrame) -> None:
        speech_end = self._decided.pop(frame.turn_id, None)
        if speech_end is None:
            return
        self._rt.user_turn_open = self._speech_end is not None
        if not frame.text:
            self._rt.metrics.finish(frame.turn_id)
            return
        self._rt.events.emit(UserTurnEvent(ts=frame.ts, text=frame.text, turn_id=frame.turn_id))
        if self._rt.active_replies:
            # A new turn supersedes a reply still in progress.
            await self.broadcast(InterruptionFrame(ts=frame.ts, reason="new user turn",
                                                   before_turn=frame.turn_id))
        self._rt.active_replies.add(frame.turn_id)
        await self.emit(UserTurnFrame(ts=frame.ts, text=frame.text, turn_id=frame.turn_id,
                                      speech_end_ts=speech_end))
