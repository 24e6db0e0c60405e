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
    emitted: bool = False


class MetricsTracker:
    def __init__(self, events: EventBus) -> None:
        self._events = events
        self._turns: dict[int, _Turn] = {}
        self.completed: list[TurnMetrics] = []

    def mark(self, turn_id: int, name: str, ts: float) -> None:
        """Record the first occurrence of ``name`` in turn ``turn_id``."""
        if name not in MARKS:
            raise ValueError(f"unknown metric mark {name!r}")
        turn = self._turns.setdefault(turn_id, _Turn())
        turn.marks.setdefault(name, ts)
        if name == "first_audio_out":
            self.finish(turn_id)

    def finish(self, turn_id: int) -> TurnMetrics | None:
        turn = self._turns.get(turn_id)
        if turn is None or turn.emitted:
            return None
        turn.emitted = True
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
        self.completed.append(metrics)
        self._events.emit(MetricsEvent(ts=m.get("first_audio_out", max(m.values(), default=0)),
                                       metrics=metrics))
        del self._turns[turn_id]
        return metrics
