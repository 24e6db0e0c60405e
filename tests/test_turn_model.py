"""The learned end-of-turn model: the shipped file, its features, and real sessions that use
it (an unfinished sentence with a long pause, a complete question, endless speech)."""

from __future__ import annotations

import numpy as np
import pytest

from voiceagent import Agent, AgentOptions
from voiceagent.agent import EndpointingOptions
from voiceagent.audio import PIPELINE_RATE, load_audio
from voiceagent.events import UserSpeakingEvent, UserTurnEvent
from voiceagent.runner import converse_with_file
from voiceagent.session import resolve_backends
from voiceagent.turn_features import prosody, text_shape
from voiceagent.turn_model import PauseEvidence, TurnModel, feature_names, shipped_model
from voiceagent.turn_policy import turn_over
from voiceagent.text import normalize

STORY = "You are a storyteller. Always answer with a long story of at least six sentences."
MODEL = EndpointingOptions(mode="model")


def evidence(end: float, audio: float, text: str, clip: np.ndarray | None = None,
             seconds: float = 2.0) -> PauseEvidence:
    tone = clip if clip is not None else np.zeros(PIPELINE_RATE, np.float32)
    return PauseEvidence.of(end, audio, text, prosody(tone), seconds)


# -- the model, as logic ----------------------------------------------------------------------


def test_the_shipped_model_loads_offline_and_matches_its_features():
    model = shipped_model()
    assert set(model.names) <= set(feature_names())
    assert "end_logit" in model.names and "log_silence" in model.names
    assert 0.0 < model.threshold < 1.0
    assert model.meta["data"].startswith("synthetic")
    assert TurnModel.load() is model  # read once per process


def first_end(evidence: PauseEvidence, model: TurnModel) -> float | None:
    """When ``turn_over`` first ends this pause, on the endpointer's 20 ms grid."""
    for step in range(4, 150):
        silence = step * 0.02
        if turn_over(MODEL, silence, evidence.audio_score, evidence.end_probability,
                     evidence, model):
            return silence
    return None


def test_decisions_are_deterministic_and_grow_with_the_silence(speech_dir):
    clip = load_audio(speech_dir / "harvard_sb_spk1_snt3.wav")
    finished = evidence(0.97, 0.8, "At that high level the air is pure.", clip, 2.7)
    cut = evidence(0.25, 0.3, "At that high level, the", clip[:int(1.2 * PIPELINE_RATE)], 1.2)
    model = shipped_model()
    assert model.probability(finished, 0.2) == model.probability(finished, 0.2)
    assert prosody(clip) == prosody(clip.copy())
    assert model.probability(finished, 0.2) > model.probability(cut, 0.2)
    assert model.probability(cut, 1.8) > model.probability(cut, 0.2)
    done, unfinished = first_end(finished, model), first_end(cut, model)
    assert done is not None and done < 0.6
    assert unfinished is None or unfinished > 1.5
    # no decision before both scores are in, and any pause ends at the long wait
    assert not turn_over(MODEL, 0.3, None, 0.97, finished, model)
    assert turn_over(MODEL, MODEL.incomplete_silence, None, None, None, model)


def test_the_transcript_shape_reads_unfinished_endings():
    assert text_shape("I'd like a table for").last_preposition
    assert text_shape("eggs, milk and").last_conjunction
    assert text_shape("my number is five five five,").trailing_comma
    assert text_shape("five five five").last_number
    done = text_shape("What's the weather like?")
    assert done.terminal_mark and done.words == 4
    assert not (done.last_conjunction or done.last_preposition or done.last_filler)


def test_prosody_hears_a_falling_tone():
    t = np.arange(int(1.5 * PIPELINE_RATE)) / PIPELINE_RATE
    f0 = np.where(t < 1.0, 180.0, 180.0 - 150.0 * (t - 1.0))  # flat, then falling to 105 Hz
    tone = (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / PIPELINE_RATE)).astype(np.float32)
    p = prosody(tone)
    assert p.pitch_end < -2.0 and p.pitch_slope < -5.0 and p.voiced > 0.8


# -- real sessions ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def backends():
    return resolve_backends(Agent(STORY, options=AgentOptions(endpointing=MODEL)))


def model_agent(**endpointing) -> Agent:
    return Agent(STORY, options=AgentOptions(endpointing=MODEL.model_copy(update=endpointing)))


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.slow
async def test_an_unfinished_sentence_with_a_long_pause_is_not_cut(speech_dir, backends):
    audio = load_audio(speech_dir / "harvard_sb_spk1_snt2.wav")  # "Drop the two when you |"
    words = backends["stt"].timed_words(audio)
    you = next(w for w in words if normalize(w.text) == ["you"])
    cut = int(you.end * PIPELINE_RATE) + 800
    gapped = np.concatenate([audio[:cut], np.zeros(int(1.5 * PIPELINE_RATE), np.float32),
                             audio[cut:]])
    result = await converse_with_file(model_agent(), gapped, backends=backends)
    turns = of(result.events, UserTurnEvent)
    assert len(turns) == 1, [t.text for t in turns]
    assert normalize(turns[0].text)[-2:] == ["the", "figures"]


@pytest.mark.slow
async def test_a_complete_question_is_answered_within_the_bound(speech_dir, backends):
    audio = load_audio(speech_dir / "azure_whats_the_weather_like.wav")
    result = await converse_with_file(model_agent(), audio, backends=backends)
    turn = of(result.events, UserTurnEvent)[0]
    assert turn.reason == "silence" and "weather" in turn.text.lower()
    delay = result.metrics[0].end_of_turn
    assert delay is not None and delay < 0.6  # the goal's 90th percentile


@pytest.mark.slow
async def test_endless_speech_still_ends_at_the_maximum_turn_length(speech_dir, backends):
    # Speech with its pauses squeezed out (a TV, hold music with vocals): no pause to judge.
    audio = load_audio(speech_dir / "librispeech_1089-134686-0000.wav")
    frames = audio[:len(audio) // 320 * 320].reshape(-1, 320)
    voiced = frames[np.sqrt((frames ** 2).mean(axis=1)) > 0.01]
    talk = np.concatenate([voiced.ravel()] * 3)
    result = await converse_with_file(model_agent(max_turn=4.0, incomplete_silence=3.0), talk,
                                      speed=2, backends=backends, max_tail=10)
    turns = of(result.events, UserTurnEvent)
    assert turns and turns[0].reason == "max_turn"
    start = next(e.ts for e in of(result.events, UserSpeakingEvent) if e.speaking)
    assert turns[0].ts - start < 4.0 + 3.0
