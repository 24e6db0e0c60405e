"""Turn-taking evaluation on real recordings: a test set, the pauses in it, and how an
endpointing policy decides at each pause.

The test set comes from any folder of clips with transcripts: each clip whole, followed by
silence (a complete turn), and the same clip split at word boundaries (found by the STT's word
timings) with 0.5 to 1.5 s of silence inserted mid-sentence (a turn that is not over).

Every pause is measured once with the real models: when the VAD reports it, the audio model's
score and how long it took, the transcript decoded at the pause with the recogniser's
end-of-sentence probability and how long that took, and the completeness model's score of
the transcript and how long that took after the decode. A policy is then replayed over those
measurements on the 20 ms grid the endpointer runs on (the same
:func:`voiceagent.turn_policy.turn_over`), so many settings can be compared without
re-running the models, and with their real latencies.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

from voiceagent.agent import EndpointingOptions
from voiceagent.audio import PIPELINE_RATE
from voiceagent.text import normalize
from voiceagent.turn_features import Prosody, prosody
from voiceagent.turn_model import PauseEvidence, TurnModel, logit
from voiceagent.turn_policy import audio_needed, turn_over, uses_end_probability

FRAME = 0.02
INSERTED_PAUSES = (0.5, 1.0, 1.5)


@dataclass
class Case:
    name: str
    audio: np.ndarray
    kind: str  # "complete" or "split"
    #: split cases: the inserted pause [start, end) in seconds
    gap: tuple[float, float] | None = None


@dataclass
class Pause:
    speech_end: float  # when speech stopped (media time)
    reported: float  # when the VAD was sure of it
    resumed: float  # when speech started again (inf: never)
    audio_score: float
    audio_latency: float
    text: str
    end_probability: float | None  # the recogniser's, with the transcript
    decode_latency: float
    completeness_score: float
    completeness_latency: float  # after the decode
    prosody: Prosody  # of the speech before the pause
    speech_seconds: float  # from the turn's first speech to this pause

    def evidence(self, opts: EndpointingOptions) -> PauseEvidence:
        """What the learned model reads at this pause (with the text score ``opts`` uses)."""
        return PauseEvidence.of(self.text_score(opts)[0], self.audio_score, self.text,
                                self.prosody, self.speech_seconds)

    def text_score(self, opts: EndpointingOptions) -> tuple[float, float]:
        """The transcript's score the endpointer uses, and when it has it (after the report)."""
        if uses_end_probability(opts, self.end_probability):
            assert self.end_probability is not None
            return self.end_probability, self.decode_latency
        return self.completeness_score, self.decode_latency + self.completeness_latency


def build_cases(name: str, audio: np.ndarray, words: list, reference: str | None = None,
                tail: float = 2.5, splits: int = 3,
                gaps: tuple[float, ...] = INSERTED_PAUSES) -> list[Case]:
    """The complete case and up to ``splits`` split cases of one clip, with the inserted
    pauses taken from ``gaps`` in turn. ``words`` are the STT's timed words; ``reference``,
    the clip's transcript, keeps splits off the end of what was said when the STT invents
    words after it (Whisper's "Thank you.")."""
    silence = np.zeros(int(tail * PIPELINE_RATE), np.float32)
    cases = [Case(name, np.concatenate([audio, silence]), "complete")]
    said = len(normalize(reference)) if reference else len(words)
    inner = [(words[i].end, words[i + 1].start) for i in range(1, min(len(words), said) - 2)
             if _mid_sentence(words, i) and words[i + 1].start - words[i].end < 0.25]
    if not inner:
        return cases
    picks = np.linspace(0, len(inner) - 1, splits + 2)[1:-1].round().astype(int)
    for n, i in enumerate(sorted(set(picks))):
        cut = int((inner[i][0] + inner[i][1]) / 2 * PIPELINE_RATE)
        gap = gaps[n % len(gaps)]
        pad = np.zeros(int(gap * PIPELINE_RATE), np.float32)
        at = cut / PIPELINE_RATE
        cases.append(Case(f"{name}@{at:.2f}+{gap}", np.concatenate(
            [audio[:cut], pad, audio[cut:], silence]), "split", (at, at + gap)))
    return cases


def _mid_sentence(words: list, i: int) -> bool:
    """Whether the boundary after word ``i`` is inside a sentence, judged from the STT's
    punctuation alone (never from the models under test): no punctuation on the word before,
    and the sentence goes on for at least two more words."""
    def ends(w) -> bool:
        return w.text.rstrip()[-1:] in ".,;:?!"

    return not ends(words[i]) and not ends(words[i + 1])


def vad_segments(vad, audio: np.ndarray,
                 opts: EndpointingOptions) -> list[tuple[float, float, float]]:
    """(speech start, speech end, when the end was reported), as the VAD node sees them."""
    from voiceagent.nodes.vad import SpeechSegmenter

    stream, segmenter, win = vad.stream(), SpeechSegmenter(opts), vad.window_samples
    segments, start = [], 0.0
    for i in range(0, len(audio) - win + 1, win):
        t0, t1 = i / PIPELINE_RATE, (i + win) / PIPELINE_RATE
        changed = segmenter.update(stream.probability(audio[i:i + win]), t0, t1)
        if changed is None:
            continue
        if segmenter.speaking:
            start = changed
        else:
            segments.append((start, changed, t1))
    if segmenter.speaking:
        segments.append((start, len(audio) / PIPELINE_RATE, float("inf")))
    return segments


def measure_pauses(case: Case, vad, stt, turn_detector, completeness,
                   opts: EndpointingOptions) -> list[Pause]:
    """Every pause of ``case``, scored by the real models, with their latencies
    (``completeness`` may be None: its score is then 0)."""
    segments = vad_segments(vad, case.audio, opts)
    pauses = []
    first_start = segments[0][0] if segments else 0.0
    for n, (_, end, reported) in enumerate(segments):
        if reported == float("inf"):
            continue
        resumed = segments[n + 1][0] if n + 1 < len(segments) else float("inf")
        upto = int(reported * PIPELINE_RATE)
        t = time.perf_counter()
        audio_score = turn_detector.probability(case.audio[:upto])
        audio_latency = time.perf_counter() - t
        t = time.perf_counter()
        begin = max(0, int((first_start - opts.pre_roll) * PIPELINE_RATE))
        decoded = stt.decode(case.audio[begin:upto][-int(stt.window_seconds * PIPELINE_RATE):],
                             final=True)
        decode_latency = time.perf_counter() - t
        t = time.perf_counter()
        completeness_score = (completeness.probability(decoded.text)
                              if decoded.text and completeness is not None else 0.0)
        completeness_latency = time.perf_counter() - t
        pauses.append(Pause(end, reported, resumed, audio_score, audio_latency, decoded.text,
                            decoded.end_probability, decode_latency, completeness_score,
                            completeness_latency, prosody(case.audio[:upto], end),
                            end - first_start))
    return pauses


def decision(pause: Pause, opts: EndpointingOptions,
             model: TurnModel | None = None) -> float | None:
    """When the policy ends the turn in this pause (None: speech resumed first)."""
    t = pause.reported
    text_score, text_latency = pause.text_score(opts)
    evidence = pause.evidence(opts) if model is not None else None
    # the endpointer runs the audio model at the pause only where it may decide alone, else
    # once the text score shows it can matter (turn_policy.audio_needed)
    audio_from = (pause.reported if audio_needed(opts, None)
                  else pause.reported + text_latency if audio_needed(opts, text_score)
                  else math.inf)
    text_at = pause.reported + text_latency
    # the recogniser's own score comes with the transcript, and the endpointer judges it on
    # arrival (on the silence heard so far), not at the next frame
    on_arrival = uses_end_probability(opts, pause.end_probability)
    while t < pause.resumed:
        audio = pause.audio_score if t >= audio_from + pause.audio_latency else None
        text = text_score if t >= text_at else None
        if turn_over(opts, t - pause.speech_end, audio, text, evidence, model):
            return t
        if on_arrival and t < text_at < min(t + FRAME, pause.resumed) and turn_over(
                opts, t - pause.speech_end, audio, text_score, evidence, model):
            return text_at
        t += FRAME
        if t - pause.speech_end > 60:
            return None
    return None


@dataclass
class Outcome:
    delays: list[float]  # complete cases: end of speech -> decision
    cutoffs: int  # split cases ended inside the inserted pause
    splits: int
    missed: int  # complete cases never ended (should be 0)

    @property
    def median_delay(self) -> float | None:
        return float(np.median(self.delays)) if self.delays else None

    @property
    def p90_delay(self) -> float | None:
        return float(np.percentile(self.delays, 90)) if self.delays else None

    @property
    def cutoff_rate(self) -> float:
        return self.cutoffs / self.splits if self.splits else 0.0


def evaluate(measured: list[tuple[Case, list[Pause]]], opts: EndpointingOptions,
             model: TurnModel | None = None) -> Outcome:
    delays, cutoffs, splits, missed = [], 0, 0, 0
    for case, pauses in measured:
        if case.kind == "complete":
            last = pauses[-1] if pauses else None
            decided = decision(last, opts, model) if last else None
            if last is None or decided is None:
                missed += 1
            else:
                delays.append(decided - last.speech_end)
        else:
            splits += 1
            assert case.gap is not None
            inside = [p for p in pauses if case.gap[0] - 0.3 <= p.speech_end <= case.gap[1]]
            cutoffs += any(decision(p, opts, model) is not None for p in inside)
    return Outcome(delays, cutoffs, splits, missed)


class ScriptedUserInput:
    """A user who speaks, waits until the agent has talked for ``after`` seconds, then
    speaks again over it (a barge-in, a backchannel or a cough)."""

    def __init__(self, first: np.ndarray, second: np.ndarray, after: float = 1.0,
                 max_tail: float = 20.0) -> None:
        self.first, self.second, self.after, self.max_tail = first, second, after, max_tail
        self.second_at: float | None = None  # media time the second utterance began

    def node(self, runtime):
        from voiceagent.transports.base import AudioSourceNode

        script = self

        class _Source(AudioSourceNode):
            async def produce(self) -> None:
                await self.play(script.first)
                await self.play_silence_until(lambda: self.activity.speaking,
                                              script.max_tail, script.after)
                script.second_at = self.t
                await self.play(script.second)
                await self.play_silence_until(self.agent_done, script.max_tail, 0.6)

        return _Source(runtime)


def silent_from(audio: np.ndarray, start: float, hold: float = 1.0,
                threshold: float = 1e-3) -> float | None:
    """The first time at or after ``start`` from which ``audio`` (16 kHz) stays below
    ``threshold`` RMS, in 20 ms frames, for ``hold`` seconds (None: it never does)."""
    frame = int(FRAME * PIPELINE_RATE)
    first = int(start * PIPELINE_RATE) // frame
    rms = [float(np.sqrt(np.mean(audio[i * frame:(i + 1) * frame] ** 2)))
           for i in range(first, len(audio) // frame)]
    span = int(hold / FRAME)
    for k in range(len(rms) - span + 1):
        if max(rms[k:k + span]) < threshold:
            return (first + k) * FRAME
    return None


@dataclass
class CurvePoint:
    setting: float  # the swept parameter (a threshold, a silence)
    median_delay: float | None
    p90_delay: float | None
    cutoff_rate: float


def curve(measured: list[tuple[Case, list[Pause]]],
          settings: list[tuple[float, EndpointingOptions]],
          model: TurnModel | None = None) -> list[CurvePoint]:
    """Delay against false cut-offs of one policy over a sweep of its parameter."""
    points = []
    for value, opts in settings:
        out = evaluate(measured, opts, model)
        points.append(CurvePoint(value, out.median_delay, out.p90_delay, out.cutoff_rate))
    return points


def cutoffs_within(points: list[CurvePoint], budget: float) -> float | None:
    """In the style of LiveKit's eot-bench: the fewest false cut-offs of any setting whose
    median delay is within ``budget`` seconds (None: no setting is that quick)."""
    rates = [p.cutoff_rate for p in points
             if p.median_delay is not None and p.median_delay <= budget + 1e-9]
    return min(rates) if rates else None


def delay_within(points: list[CurvePoint], rate: float) -> float | None:
    """The shortest median delay of any setting with at most ``rate`` false cut-offs."""
    delays = [p.median_delay for p in points
              if p.median_delay is not None and p.cutoff_rate <= rate + 1e-9]
    return min(delays) if delays else None


def signal_ceiling(measured: list[tuple[Case, list[Pause]]], within: float,
                   allowed_cutoffs: int = 1) -> int:
    """An upper bound, fitted on ``measured`` itself: the most complete turns any weighted sum
    of the three scores (the recogniser's end probability and Smart Turn's, as logits, and
    the completeness model's) could end within ``within`` seconds, with one bound on it, while
    cutting at most ``allowed_cutoffs`` split cases. A split is cut when its best-scoring
    pause in the inserted gap scores above the bound and the gap outlasts ``within``."""
    def row(p: Pause) -> np.ndarray:
        return np.array([logit(p.end_probability or 0.0), logit(p.audio_score),
                         p.completeness_score])

    complete = np.array([row(ps[-1]) for c, ps in measured if c.kind == "complete" and ps])
    splits = []
    for case, pauses in measured:
        if case.kind == "split" and case.gap is not None and case.gap[1] - case.gap[0] > within:
            inside = [row(p) for p in pauses if case.gap[0] - 0.3 <= p.speech_end <= case.gap[1]]
            if inside:
                splits.append(np.array(inside))
    best = 0
    for weights in itertools.product(np.linspace(0, 1, 6), np.linspace(0, 1, 6),
                                     np.linspace(0, 6, 7)):
        w = np.asarray(weights)
        if not w.any():
            continue
        split_scores = sorted((float((s @ w).max()) for s in splits), reverse=True)
        bound = (split_scores[allowed_cutoffs] if len(split_scores) > allowed_cutoffs
                 else -np.inf)
        best = max(best, int((complete @ w > bound).sum()))
    return best
