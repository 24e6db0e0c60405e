"""The playout buffer: agent audio waiting to be heard, and the record of what was heard.

The output transport reads fixed-size frames from it at the pace the user hears them (a
real-time clock, or the pull of a WebRTC track). Because it knows which samples have been
played, it can say which words of a reply the user actually heard when a reply is cut off.
A chunk's audio may arrive in several pieces: what was heard of it is the played share of the
whole chunk, or, when the TTS gave word timings, exactly the words whose end was played.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .frames import WordTiming


@dataclass
class _Chunk:
    """One text chunk's audio, however many pieces it arrives in."""

    reply_id: int
    text: str
    total: int = 0  # samples received so far
    played: int = 0
    complete: bool = False  # its last piece has arrived
    #: (sample where the word ends, the word), when the TTS gave timings
    words: list[tuple[int, str]] = field(default_factory=list)

    def heard(self) -> str:
        if self.complete and self.played >= self.total:
            return self.text
        if self.words:
            return " ".join(w for end, w in self.words if end <= self.played)
        words = self.text.split()
        share = int(len(words) * self.played / self.total) if self.total else 0
        return " ".join(words[:share])


@dataclass
class _Audio:
    samples: np.ndarray
    chunk: _Chunk
    played: int = 0


@dataclass
class _End:
    reply_id: int


@dataclass
class PlayoutEvent:
    kind: str  # "started" (first audio of a reply), "finished" (its last sample was played)
    reply_id: int
    heard_text: str = ""  # for "finished": every word of the reply that was played


class PlayoutBuffer:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._queue: deque[_Audio | _End] = deque()
        self._chunks: dict[int, list[_Chunk]] = {}  # reply -> its chunks, in order
        self._started: set[int] = set()
        #: held (the user may be barging in): reads give silence and keep the position
        self.paused = False

    @property
    def queued_samples(self) -> int:
        return sum(len(i.samples) - i.played for i in self._queue if isinstance(i, _Audio))

    def add_audio(self, samples: np.ndarray, reply_id: int, text: str, chunk_end: bool,
                  words: Sequence[WordTiming] | None = None) -> None:
        """Queue one piece of a chunk's audio; ``words`` are timed from the piece's start."""
        chunks = self._chunks.setdefault(reply_id, [])
        if not chunks or chunks[-1].complete:
            chunks.append(_Chunk(reply_id, text))
        chunk = chunks[-1]
        for w in words or ():
            chunk.words.append((chunk.total + round(w.end * self.rate), w.word))
        if len(samples):
            chunk.total += len(samples)
            self._queue.append(_Audio(samples.astype(np.float32, copy=False), chunk))
        chunk.complete = chunk_end

    def add_end(self, reply_id: int) -> None:
        self._queue.append(_End(reply_id))

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
                events.append(PlayoutEvent("finished", item.reply_id,
                                           self.heard_text(item.reply_id)))
                self._forget(item.reply_id)
                continue
            chunk = item.chunk
            if chunk.reply_id not in self._started:
                self._started.add(chunk.reply_id)
                events.append(PlayoutEvent("started", chunk.reply_id))
            take = min(n - filled, len(item.samples) - item.played)
            out[filled:filled + take] = item.samples[item.played:item.played + take]
            item.played += take
            chunk.played += take
            filled += take
            if item.played == len(item.samples):
                self._queue.popleft()
        return out, events

    def peek(self, n: int) -> np.ndarray:
        """The next ``n`` queued samples (silence after them), left queued and unheard."""
        out = np.zeros(n, dtype=np.float32)
        filled = 0
        for item in self._queue:
            if filled == n:
                break
            if isinstance(item, _Audio):
                take = min(n - filled, len(item.samples) - item.played)
                out[filled:filled + take] = item.samples[item.played:item.played + take]
                filled += take
        return out

    def heard_text(self, reply_id: int) -> str:
        """Words of ``reply_id`` played so far: whole chunks, then what was heard of the
        chunk in progress."""
        heard = []
        for chunk in self._chunks.get(reply_id, []):
            if not chunk.played:
                break
            heard.append(chunk.heard())
        return " ".join(h for h in heard if h)

    def drop(self, reply_ids: set[int]) -> None:
        """Forget the unplayed audio of these replies at once."""
        self._queue = deque(i for i in self._queue if _reply_of(i) not in reply_ids)
        for r in reply_ids:
            self._forget(r)

    def _forget(self, reply_id: int) -> None:
        self._chunks.pop(reply_id, None)
        self._started.discard(reply_id)


def _reply_of(item: _Audio | _End) -> int:
    return item.chunk.reply_id if isinstance(item, _Audio) else item.reply_id
