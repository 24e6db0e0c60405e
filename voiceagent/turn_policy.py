"""The end-of-turn policies: given what the models say, is the pause long enough?

Pure functions, shared by the endpointer node and the turn-taking benchmark, so what is
measured is what runs.
"""

from __future__ import annotations

from .agent import EndpointingOptions
from .turn_model import PauseEvidence, TurnModel


def combined_score(opts: EndpointingOptions, audio: float | None,
                   text: float | None) -> float | None:
    """One completeness score from the audio model and the text model, or None (unknown).
    Before the transcript is scored, the audio model alone decides only when confident; a
    text score alone decides unless the audio score could still change the wait."""
    if audio is not None and text is not None:
        return opts.audio_weight * audio + (1 - opts.audio_weight) * text
    if audio is not None:
        return audio if audio >= opts.confident_audio else None
    return None if text is None or audio_needed(opts, text) else text


def audio_needed(opts: EndpointingOptions, text: float | None) -> bool:
    """Whether the audio model's score can change the decision, given the text score known so
    far (None: not yet): always in model mode; in hybrid mode, before the text score only if
    a confident audio score may decide alone, after it only if the text score leaves the
    wait open (with the default weight, a text score within about 0.94-0.97). The endpointer
    runs the audio model only then, so on most pauses it costs nothing and never competes
    with the transcript's decode for the CPU."""
    if opts.mode != "hybrid":
        return opts.mode == "model"
    if text is None:
        return opts.confident_audio < 1.0
    return required_silence(opts, 0.0, text) != required_silence(opts, 1.0, text)


def uses_end_probability(opts: EndpointingOptions, end_probability: float | None) -> bool:
    """Whether the text score is the recogniser's own end-of-sentence probability (else the
    completeness model scores the transcript)."""
    return opts.text_signal == "stt" and end_probability is not None


def required_silence(opts: EndpointingOptions, audio: float | None = None,
                     text: float | None = None) -> float:
    """Silence after the end of speech that ends the turn."""
    if opts.mode != "hybrid":
        return opts.silence_timeout
    score = combined_score(opts, audio, text)
    if score is None:  # not known yet (or the models failed): wait as for an unfinished turn
        return opts.incomplete_silence
    if score >= opts.complete_score:
        return opts.complete_silence
    if score <= opts.incomplete_score:
        return opts.incomplete_silence
    share = (score - opts.incomplete_score) / (opts.complete_score - opts.incomplete_score)
    return opts.incomplete_silence + share * (opts.complete_silence - opts.incomplete_silence)


def turn_over(opts: EndpointingOptions, silence: float, audio: float | None,
              text: float | None, evidence: PauseEvidence | None = None,
              model: TurnModel | None = None) -> bool:
    """Whether ``silence`` seconds into a pause end the turn, given the scores known so far.
    In ``model`` mode the learned model decides from ``evidence`` (which carries the same
    scores) once both scores are in, and ``incomplete_silence`` ends any pause."""
    if opts.mode != "model":
        return silence >= required_silence(opts, audio, text)
    if silence >= opts.incomplete_silence:
        return True
    if audio is None or text is None or evidence is None or model is None:
        return False
    threshold = model.threshold if opts.model_threshold is None else opts.model_threshold
    return model.probability(evidence, silence) >= threshold
