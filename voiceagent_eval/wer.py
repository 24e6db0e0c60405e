"""Word error rate, on words normalised as :mod:`voiceagent.text` does (so that "1 2 3" for
"one two three" is no error)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from voiceagent.text import edit_distances, normalize


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Substitutions + deletions + insertions that turn ``reference`` into ``hypothesis``."""
    return edit_distances(reference, hypothesis)[-1]


def _ratio(edits: int, reference_words: int, hypothesis_words: int) -> float:
    # With nothing to say, any word heard is wrong: 1.0; hearing nothing is right: 0.0.
    if reference_words == 0:
        return 1.0 if hypothesis_words else 0.0
    return edits / reference_words


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Edits between the normalised word sequences over the reference length (can exceed 1)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    return _ratio(edit_distance(ref, hyp), len(ref), len(hyp))


def pooled_wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus WER of (reference, hypothesis) pairs: all edits over all reference words, so long
    utterances weigh more than short ones (unlike a mean of per-utterance rates)."""
    edits = ref_words = hyp_words = 0
    for reference, hypothesis in pairs:
        ref, hyp = normalize(reference), normalize(hypothesis)
        edits += edit_distance(ref, hyp)
        ref_words += len(ref)
        hyp_words += len(hyp)
    return _ratio(edits, ref_words, hyp_words)
