"""Per-turn latency metrics, computed from the timestamps of the frames that mark each stage.

Nodes record marks (the ``ts`` of the frame that shows a stage happened); when the first
agent audio of a turn is played, or the turn ends without audio, the turn's metrics and their
breakdown by stage are derived and emitted once.

Marks are kept per reply: the reply to a user turn has the turn's id, except a committed
draft, which was opened (and marked by the LLM and TTS) before its turn ended; the commit
links the turn to it (:meth:`MetricsTracker.link`), so the turn's own marks join the draft's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import EventBus, LatencyBreakdownEvent, MetricsEvent, TurnMetrics

MARKS = ("speech_end", "stt_final", "end_of_turn", "user_turn", "llm_request",
         "llm_first_token", "tts_request", "tts_first_audio", "first_audio_out")

#: the stages of a breakdown, each ending at its mark; "user_turn" is when the endpointer
#: passed the turn on (its reply started, or its draft was committed)
STAGES = (("endpointing", "end_of_turn"), ("stt_final", "user_turn"),
          ("llm_first_token", "llm_first_token"), ("first_clause", "tts_request"),
          ("tts_first_audio", "tts_first_audio"), ("output", "first_audio_out"))


@dataclass
class _Turn:
    marks: dict[str, float] = field(default_factory=dict)
    turn_id: int | None = None  # the user turn a committed draft answers
    draft: bool = False
    drafts_discarded: int = 0


class MetricsTracker:
    def __init__(self, events: EventBus) -> None:
        self._events = events
        self._turns: dict[int, _Turn] = {}
        self._links: dict[int, int] = {}  # user turn -> the committed draft answering it
        self._discarded: set[int] = set()  # drafts dropped: marks still on their way are late
        self._last_done = 0  # turns up to here are emitted: later marks for them are late

    def mark(self, turn_id: int, name: str, ts: float) -> None:
        """Record the first occurrence of ``name`` in turn ``turn_id``."""
        if name not in MARKS:
            raise ValueError(f"unknown metric mark {name!r}")
        turn_id = self._links.get(turn_id, turn_id)
        if turn_id in self._discarded or (turn_id <= self._last_done
                                          and turn_id not in self._turns):
            return  # e.g. the second sentence's audio of a turn already reported
        turn = self._turns.setdefault(turn_id, _Turn())
        turn.marks.setdefault(name, ts)
        if name == "first_audio_out":
            self.finish(turn_id)

    def link(self, turn_id: int, draft_id: int) -> None:
        """Draft ``draft_id`` was committed as the reply to ``turn_id``: one record."""
        turn = self._turns.pop(turn_id, _Turn())
        draft = self._turns.setdefault(draft_id, _Turn())
        draft.draft, draft.turn_id = True, turn_id
        draft.drafts_discarded += turn.drafts_discarded
        for name, ts in turn.marks.items():
            draft.marks.setdefault(name, ts)
        self._links[turn_id] = draft_id

    def discard(self, turn_id: int, draft_id: int) -> None:
        """Draft ``draft_id`` of ``turn_id`` was dropped: its marks go, the turn counts it."""
        self._turns.pop(draft_id, None)
        self._discarded.add(draft_id)
        self._turns.setdefault(turn_id, _Turn()).drafts_discarded += 1

    def finish(self, turn_id: int) -> TurnMetrics | None:
        reply_id = self._links.get(turn_id, turn_id)
        turn = self._turns.pop(reply_id, None)
        if turn is None:
            return None
        self._last_done = max(self._last_done, reply_id)
        self._links = {t: r for t, r in self._links.items() if r != reply_id}
        turn_id = reply_id if turn.turn_id is None else turn.turn_id
        self._discarded = {d for d in self._discarded if d > self._last_done}
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
        ts = m.get("first_audio_out", max(m.values(), default=0))
        self._events.emit(MetricsEvent(ts=ts, metrics=metrics, reply_id=reply_id))
        breakdown = _breakdown(turn)
        if breakdown is not None:
            breakdown.turn_id, breakdown.reply_id, breakdown.ts = turn_id, reply_id, ts
            self._events.emit(breakdown)
        return metrics


def _breakdown(turn: _Turn) -> LatencyBreakdownEvent | None:
    """Each stage's share of the wait, on the reply's critical path: a stage is charged only
    the time after every earlier one was done, so work a draft did before the turn ended
    costs the user nothing and the shares sum to the whole wait."""
    m = turn.marks
    if "speech_end" not in m or "first_audio_out" not in m:
        return None  # no audio, or a reply said from code: no wait to explain
    reached = m["speech_end"]
    shares: dict[str, float] = {}
    for stage, mark in STAGES:
        end = max(reached, m.get(mark, reached))
        shares[stage] = round(end - reached, 4)
        reached = end
    saved = 0.0
    if turn.draft and "llm_request" in m and "user_turn" in m:
        ready = m.get("tts_first_audio", m["user_turn"])
        saved = max(0.0, min(ready, m["user_turn"]) - m["llm_request"])
    return LatencyBreakdownEvent(turn_id=0, reply_id=0, total=round(reached - m["speech_end"], 4),
                                 draft=turn.draft, draft_saved=round(saved, 4),
                                 drafts_discarded=turn.drafts_discarded, **shares)
