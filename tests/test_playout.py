"""The playout buffer: fixed frames at the pace heard, and what was heard when cut off."""

from __future__ import annotations

import numpy as np

from voiceagent.events import EventBus, MetricsEvent
from voiceagent.frames import WordTiming
from voiceagent.metrics import MetricsTracker
from voiceagent.playout import PlayoutBuffer


def tone(n: int) -> np.ndarray:
    return np.full(n, 0.5, np.float32)


def test_reads_fixed_frames_with_silence_when_idle():
    buf = PlayoutBuffer(16000)
    out, events = buf.read(320)
    assert len(out) == 320 and not out.any() and events == []
    buf.add_audio(tone(500), reply_id=1, text="hello there", chunk_end=True)
    buf.add_end(1)
    first, events = buf.read(320)
    assert first.all() and [e.kind for e in events] == ["started"]
    second, events = buf.read(320)
    assert second[:180].all() and not second[180:].any()
    assert [e.kind for e in events] == ["finished"]
    assert buf.queued_samples == 0


def test_heard_text_counts_whole_chunks_then_the_played_share():
    buf = PlayoutBuffer(100)
    buf.add_audio(tone(100), 1, "First sentence here.", True)
    buf.add_audio(tone(100), 1, "one two three four", True)
    buf.read(100)
    assert buf.heard_text(1) == "First sentence here."
    buf.read(50)  # half of the second chunk
    assert buf.heard_text(1) == "First sentence here. one two"
    buf.drop({1})
    assert buf.queued_samples == 0 and buf.heard_text(1) == ""


def test_drop_keeps_other_turns():
    buf = PlayoutBuffer(100)
    buf.add_audio(tone(100), 1, "old", True)
    buf.add_audio(tone(100), 2, "new", True)
    buf.drop({1})
    assert buf.queued_samples == 100
    _, events = buf.read(10)
    assert events[0].reply_id == 2


def test_metrics_come_from_marks_once_per_turn():
    bus = EventBus("s")
    got: list[MetricsEvent] = []
    bus.subscribe(got.append, type="metrics")
    tracker = MetricsTracker(bus)
    tracker.mark(3, "speech_end", 1.0)
    tracker.mark(3, "end_of_turn", 1.55)
    tracker.mark(3, "stt_final", 1.6)
    tracker.mark(3, "llm_request", 1.6)
    tracker.mark(3, "llm_first_token", 1.8)
    tracker.mark(3, "llm_first_token", 9.0)  # only the first counts
    tracker.mark(3, "tts_request", 1.9)
    tracker.mark(3, "tts_first_audio", 2.0)
    tracker.mark(3, "first_audio_out", 2.1)
    assert tracker.finish(3) is None  # already emitted at first audio
    tracker.mark(3, "tts_first_audio", 2.5)  # the next sentence's audio: too late to count
    assert tracker.finish(3) is None
    assert len(got) == 1
    m = got[0].metrics
    assert (m.end_of_turn, m.stt_final, m.llm_ttft, m.tts_ttfa, m.voice_to_voice) == (
        0.55, 0.6, 0.2, 0.1, 1.1)


def test_heard_text_is_the_played_share_of_the_whole_chunk_not_of_its_piece():
    """Regression: a 3 s chunk of 12 words arriving as three 1 s pieces, cut after 0.5 s,
    was reported as 6 words heard (the piece's fraction applied to the whole chunk)."""
    buf = PlayoutBuffer(100)
    words = "one two three four five six seven eight nine ten eleven twelve"
    for last in (False, False, True):
        buf.add_audio(tone(100), 1, words, last)
    buf.read(50)
    assert buf.heard_text(1) == "one two"
    buf.read(100)  # 1.5 s of 3 s
    assert buf.heard_text(1) == "one two three four five six"
    buf.read(150)
    assert buf.heard_text(1) == words


def test_word_timings_say_exactly_which_words_were_heard():
    buf = PlayoutBuffer(100)
    buf.add_audio(tone(100), 1, "Hello there, friend.", False,
                  (WordTiming("Hello", 0.0, 0.3), WordTiming("there,", 0.3, 0.9)))
    buf.add_audio(tone(100), 1, "Hello there, friend.", True, (WordTiming("friend.", 0.2, 0.8),))
    buf.read(40)
    assert buf.heard_text(1) == "Hello"  # by the share of samples it would be no word yet
    buf.read(100)
    assert buf.heard_text(1) == "Hello there,"
    buf.read(60)
    assert buf.heard_text(1) == "Hello there, friend."


def test_replies_keep_their_own_chunks_when_their_audio_interleaves():
    buf = PlayoutBuffer(100)
    buf.add_audio(tone(100), 1, "first reply", True)
    buf.add_audio(tone(100), 2, "a notice", True)
    buf.add_end(2)
    buf.add_audio(tone(100), 1, "goes on here", True)
    buf.add_end(1)
    _, events = buf.read(250)
    assert [(e.kind, e.reply_id) for e in events] == [("started", 1), ("started", 2),
                                                      ("finished", 2)]
    assert events[-1].heard_text == "a notice"
    assert buf.heard_text(1) == "first reply goes"
