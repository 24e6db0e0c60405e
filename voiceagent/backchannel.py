"""Whether user speech over the agent is meant to interrupt it, or is a backchannel
("mm-hmm", "yeah") or a noise that should let the agent go on.

Two signals: the words, with every backchannel phrase removed, and, once the speech has stopped
short of confirming a barge-in, the recogniser's confidence in them. Whisper often hears a
synthetic or mumbled backchannel as some other short word ("You", "10", "Go!", "Mama"), and is
then unsure of it, where a short real request ("Stop.") is heard clearly. Measured on 358
synthetic backchannels in five voice families (docs/benchmarks.md, Turn-taking): the phrase list
alone let 46 % of them interrupt the agent, the longer list and the confidence 15 %.
"""

from __future__ import annotations

from .agent import BargeInOptions
from .text import normalize


class BackchannelFilter:
    def __init__(self, options: BargeInOptions) -> None:
        self._opts = options
        self._phrases = [normalize(b) for b in options.backchannels]

    def interrupts(self, text: str, confidence: float | None = None) -> bool:
        """Whether ``text`` holds words that interrupt the agent. Pass the recogniser's
        ``confidence`` only for speech that has stopped: while the user goes on speaking,
        an unsure partial is no reason to doubt them."""
        opts = self._opts
        if opts.ignore_backchannels and confidence is not None and (
                confidence < opts.unsure_confidence):
            return False
        words = normalize(text)
        if opts.ignore_backchannels:
            words = without_phrases(words, self._phrases)
        return len(words) >= max(1, opts.min_words)


def without_phrases(words: list[str], phrases: list[list[str]]) -> list[str]:
    """``words`` with every occurrence of the given phrases removed."""
    out, i = [], 0
    while i < len(words):
        match = next((p for p in phrases if p and words[i:i + len(p)] == p), None)
        if match:
            i += len(match)
        else:
            out.append(words[i])
            i += 1
    return out
