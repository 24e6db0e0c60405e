"""The playout buffer: agent audio waiting to be heard, and the record of what was heard.

The output transport reads fixed-size frames from it at the pace the user hears them (a
real-time clock, or the pull of a WebRTC track). Because it knows which samples have been
played, it can say which words of a reply the user actually heard when a reply is cut off.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class _Audio:
    samples: np.ndarray
    turn_id: int
    text: str
    chunk_end: bool
    played: int = 0


@dataclass
class _End:
    turn_id: int


@dataclass
class PlayoutEvent:
    kind: str  # "started" (first audio of a turn), "finished" (its last sample was played)
    turn_id: int


class PlayoutBuffer:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._queue: deque[_Audio | _End] = deque()
        self._heard: dict[int, list[str]] = {}  # turn -> its chunks played in full
        #: held (the user may be barging in): reads give silence and keep the position
        self.paused = False

    @property
    def queued_samples(self) -> int:
        return sum(len(i.samples) - i.played for i in self._queue if isinstance(i, _Audio))

    def add_audio(self, samples: np.ndarray, turn_id: int, text: str, chunk_end: bool) -> None:
        if len(samples):
            self._queue.append(_Audio(samples.astype(np.float32, copy=False), turn_id, text,
                                      chunk_end))

    def add_end(self, turn_id: int) -> None:
        self._queue.append(_End(turn_id))

    def read(self, n: int) -> tuple[np.ndarray, list[PlayoutEvent]]:
        """The next ``n`` samples (silence where nothing is queued) and what happened."""
        out = np.zeros(n, dtype=np.float32)
        events: list[PlayoutEvent] = []
        if self.paused:
            return out, events
        filled = 0
        while self._queue and (filled < n or isinstance(self._queue[0], _End)):
            item = self._queue[0]
            if isinstance(item, _End):
                self._queue.popleft()
                self._heard.pop(item.turn_id, None)
                events.append(PlayoutEvent("finished", item.turn_id))
                continue
            if item.turn_id not in self._heard:
                self._heard[item.turn_id] = []
                events.append(PlayoutEvent("started", item.turn_id))
            take = min(n - filled, len(item.samples) - item.played)
            out[filled:filled + take] = item.samples[item.played:item.played + take]
            item.played += take
            filled += take
            if item.played == len(item.samples):
                self._queue.popleft()
                if item.chunk_end:
                    self._heard[item.turn_id].append(item.text)
        return out, events

    def heard_text(self, turn_id: int) -> str:
        """Words of ``turn_id`` played so far: whole chunks, then the played share of the
        chunk in progress (by its played fraction, the best a sample clock can say)."""
        words = list(self._heard.get(turn_id, []))
        current = next((i for i in self._queue
                        if isinstance(i, _Audio) and i.turn_id == turn_id), None)
        if current is not None and current.played:
            chunk_words = current.text.split()
            share = int(len(chunk_words) * current.played / len(current.samples))
            if share:
                words.append(" ".join(chunk_words[:share]))
        return " ".join(words)

    def drop(self, turn_ids: set[int]) -> None:
        """Forget the unplayed audio of these turns at once."""
        self._queue = deque(i for i in self._queue if i.turn_id not in turn_ids)
        for t in turn_ids:
            self._heard.pop(t, None)
