"""Per-turn latency metrics, computed from the timestamps of the frames that mark each stage.

Nodes record marks (the ``ts`` of the frame that shows a stage happened); when the first
agent audio of a turn is played, or the turn ends without audio, the turn's metrics are
derived and emitted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import EventBus, MetricsEvent, TurnMetrics

MARKS = ("speech_end", "stt_final", "end_of_turn", "llm_request", "llm_first_token",
         "tts_request", "tts_first_audio", "first_audio_out")


@dataclass
class _Turn:
    marks: dict[str, float] = field(default_factory=dict)


class MetricsTracker:
    def __init__(self, events: EventBus) -> None:
        self._events = events
        self._turns: dict[int, _Turn] = {}
        self._last_done = 0  # turns up to here are emitted: later marks for them are late

    def mark(self, turn_id: int, name: str, ts: float) -> None:
        """Record the first occurrence of ``name`` in turn ``turn_id``."""
        if name not in MARKS:
            raise ValueError(f"unknown metric mark {name!r}")
        if turn_id <= self._last_done and turn_id not in self._turns:
            return  # e.g. the second sentence's audio of a turn already reported
        turn = self._turns.setdefault(turn_id, _Turn())
        turn.marks.setdefault(name, ts)
        if name == "first_audio_out":
            self.finish(turn_id)

    def finish(self, turn_id: int) -> TurnMetrics | None:
        turn = self._turns.pop(turn_id, None)
        if turn is None:
            return None
        self._last_done = max(self._last_done, turn_id)
        m = turn.marks

        def span(a: str, b: str) -> float | None:
            return round(m[b] - m[a], 4) if a in m and b in m else None

        metrics = TurnMetrics(
            turn_id=turn_id,
            stt_final=span("speech_end", "stt_final"),
            end_of_turn=span("speech_end", "end_of_turn"),
            llm_ttft=span("llm_request", "llm_first_token"),
            tts_ttfa=span("tts_request", "tts_first_audio"),
            voice_to_voice=span("speech_end", "first_audio_out"),
        )
        self._events.emit(MetricsEvent(ts=m.get("first_audio_out", max(m.values(), default=0)),
                                       metrics=metrics))
        return metrics
