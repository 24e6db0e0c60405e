"""Recordings: per session a stereo WAV (caller left, agent right) and a JSON transcript.

Both channels are placed on the session clock: every frame at the time its source sent it on
(the caller) or its sink handed it out (the agent). The agent channel is what the sink played,
frame for frame (silence while paused, cut where a barge-in cut it), at the sink's rate; the
caller's 16 kHz audio is converted to that rate. The transcript is built from the session's
events and reply frames; the redaction hook sees every text before it is written. The session
saves its recording when it stops (``<dir>/<session id>.wav`` and ``.json``), in a worker
thread: a long call's audio is tens of megabytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .agent import RecordingOptions
from .audio import PIPELINE_RATE, AudioTimeline, resample, write_wav
from .events import (
    AgentTextEvent,
    BargeInEvent,
    ErrorEvent,
    Event,
    MetricsEvent,
    SessionStateEvent,
    ToolCallEvent,
    UserTurnEvent,
)
from .frames import PlayoutFinishedFrame, PlayoutStartedFrame, ReplyStartedFrame, SystemFrame

if TYPE_CHECKING:
    from .session import AgentSession

log = logging.getLogger(__name__)


class PcmTrack(AudioTimeline):
    """A channel of the recording: frames on the session clock, kept as 16-bit PCM."""

    def __init__(self, rate: int) -> None:
        super().__init__(rate, np.int16)

    def add(self, samples: np.ndarray, ts: float) -> None:
        pcm = np.round(np.clip(np.nan_to_num(samples), -1.0, 1.0) * 32767).astype(np.int16)
        super().add(pcm, ts)

    def floats(self) -> np.ndarray:
        return self.samples().astype(np.float32) / 32767


class SessionRecorder:
    """Records one session (a :class:`~voiceagent.observer.SessionObserver`)."""

    def __init__(self, options: RecordingOptions) -> None:
        self.options = options
        self._redact: Callable[[str], str] = options.redact or (lambda text: text)
        self._transcript: dict[str, Any] = {}
        self._replies: dict[int, dict[str, Any]] = {}
        self._started = False

    def attach(self, session: AgentSession) -> None:
        self._session = session
        self._caller = PcmTrack(PIPELINE_RATE)
        self._agent = PcmTrack(session.output.rate)
        taps = getattr(session.input, "taps", None)
        if taps is not None:  # a transport's own source node; any other is not recorded
            taps.append(self._caller.add)
        session.output.taps.append(self._agent.add)
        session.events.subscribe(self._on_event)
        session.graph.observe(self._on_frame)
        self._transcript = {"session_id": session.id,
                            "transport": getattr(session.input, "transport", ""),
                            "turns": [], "replies": [], "barge_ins": [], "tool_calls": [],
                            "metrics": [], "errors": []}

    @property
    def paths(self) -> tuple[Path, Path]:
        """Where the audio and the transcript are written."""
        base = self.options.dir / self._session.id
        return base.with_suffix(".wav"), base.with_suffix(".json")

    # -- what happens ---------------------------------------------------------------------

    def _on_frame(self, frame: SystemFrame) -> None:
        if isinstance(frame, ReplyStartedFrame):
            reply = {"reply_id": frame.reply_id, "source": frame.source, "started": frame.ts,
                     "playout_started": None, "ended": None, "text": "", "heard_text": "",
                     "interrupted": False}
            self._replies[frame.reply_id] = reply
            self._transcript["replies"].append(reply)
        elif isinstance(frame, PlayoutStartedFrame) and frame.reply_id in self._replies:
            self._replies[frame.reply_id]["playout_started"] = frame.ts
        elif isinstance(frame, PlayoutFinishedFrame) and frame.reply_id in self._replies:
            reply = self._replies[frame.reply_id]
            reply.update(ended=frame.ts, heard_text=self._redact(frame.heard_text),
                         interrupted=frame.interrupted)
            if not reply["text"] and not frame.interrupted:  # said from code: all was heard
                reply["text"] = reply["heard_text"]

    def _on_event(self, event: Event) -> None:
        t, redact = self._transcript, self._redact
        if isinstance(event, UserTurnEvent):
            t["turns"].append({"turn_id": event.turn_id, "ts": event.ts,
                               "text": redact(event.text), "reason": event.reason})
        elif isinstance(event, AgentTextEvent) and event.final and not event.interrupted:
            if event.turn_id in self._replies:  # what the LLM said, heard or not
                self._replies[event.turn_id]["text"] = redact(event.text)
        elif isinstance(event, BargeInEvent):
            t["barge_ins"].append({"ts": event.ts, "action": event.action,
                                   "turn_id": event.turn_id, "text": redact(event.text)})
        elif isinstance(event, ToolCallEvent):
            t["tool_calls"].append({"ts": event.ts, "start": event.start, "name": event.name,
                                    "arguments": redact(event.arguments),
                                    "result": redact(event.result), "error": event.error,
                                    "turn_id": event.turn_id})
        elif isinstance(event, MetricsEvent):
            t["metrics"].append(event.metrics.model_dump())
        elif isinstance(event, ErrorEvent):
            t["errors"].append({"ts": event.ts, "source": event.source,
                                "message": event.message, "fatal": event.fatal})
        elif isinstance(event, SessionStateEvent):
            if event.state == "started":
                self._started = True
            else:
                t.update(duration=event.ts, end_reason=event.reason)

    async def save(self) -> None:
        """Write the files (the session calls this once it has ended). A failure is logged:
        the conversation is over and must not fail for its recording. A session that never
        started (an offer that failed) leaves no files."""
        if not self._started:
            return
        try:
            await asyncio.to_thread(self._write)
        except OSError:
            log.exception("could not write the recording of session %s", self._session.id)

    def _write(self) -> None:
        rate = self._agent.rate
        caller = self._caller.floats()
        if rate != PIPELINE_RATE:
            caller = resample(caller, PIPELINE_RATE, rate)
        agent = self._agent.floats()
        stereo = np.zeros((max(len(caller), len(agent)), 2), np.float32)
        stereo[:len(caller), 0] = caller
        stereo[:len(agent), 1] = agent
        wav, transcript = self.paths
        self.options.dir.mkdir(parents=True, exist_ok=True)
        write_wav(wav, stereo, rate)
        started = datetime.fromtimestamp(self._session.runtime.clock.epoch, UTC)
        self._transcript.update(started_at=started.isoformat(), audio=wav.name,
                                sample_rate=rate, channels=["caller", "agent"])
        with open(transcript, "w", encoding="utf-8") as f:
            json.dump(self._transcript, f, indent=1)
