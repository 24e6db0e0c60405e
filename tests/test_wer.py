"""WER scoring and the speech-clip manifest reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voiceagent.text import edit_distances, normalize
from voiceagent_eval.speechdata import Clip, load_manifest
from voiceagent_eval.wer import edit_distance, pooled_wer, word_error_rate


@pytest.mark.parametrize(("text", "words"), [
    ("And so, my fellow Americans: ask not!", "and so my fellow americans ask not"),
    ("1 2 3", "one two three"),
    ("0, 13 and 42", "zero thirteen and forty two"),
    ("room 101", "room one hundred one"),
    ("the 1st, 2nd, 3rd and 21st", "the first second third and twenty first"),
    ("1,000 and 12345", "1000 and 12345"),  # only small numbers become words
    ("What\u2019s the weather like?", "what's the weather like"),  # curly == straight
    ("She saw a cat in the neighbor's house", "she saw a cat in the neighbor's house"),
    ("the dogs' bowls, 'quoted'", "the dogs bowls quoted"),
    ("flour-fattened sauce \u2014 thick", "flour fattened sauce thick"),
    ("it's like... Ladies", "it's like ladies"),
    ("", ""),
    (" ?! ", ""),
])
def test_normalize(text: str, words: str) -> None:
    assert normalize(text) == words.split()


def test_edit_distance() -> None:
    assert edit_distance([], []) == 0
    assert edit_distance("a b c".split(), []) == 3
    assert edit_distance([], "a b".split()) == 2
    assert edit_distance("a b c".split(), "a x c".split()) == 1
    assert edit_distance("a b c".split(), "b c d".split()) == 2
    # distance to each hypothesis prefix: "a b c" ends after "a b x c"
    assert edit_distances("a b c".split(), "a b x c d".split()) == [3, 2, 1, 1, 1, 2]


def test_word_error_rate() -> None:
    ref = "he hoped there would be stew for dinner"
    assert word_error_rate(ref, "He hoped there would be stew for dinner.") == 0
    assert word_error_rate(ref, "he hoped there would be stew for supper") == pytest.approx(1 / 8)
    assert word_error_rate(ref, "he hoped there be stew for dinner") == pytest.approx(1 / 8)
    assert word_error_rate("one two three", "1, 2, 3") == 0
    assert word_error_rate("a b", "x y z w") == 2.0  # insertions can push it past 1


def test_empty_reference() -> None:
    assert word_error_rate("", "") == 0
    assert word_error_rate("...", "") == 0
    assert word_error_rate("", "thank you") == 1.0
    assert word_error_rate("hello there", "") == 1.0


def test_pooled_wer_weighs_by_reference_length() -> None:
    pairs = [("a b c d e f g h i j", "a b c d e f g h i j"), ("yes", "no")]
    assert pooled_wer(pairs) == pytest.approx(1 / 11)  # a mean of rates would say 0.5
    assert pooled_wer([]) == 0
    assert pooled_wer([("", "")]) == 0
    assert pooled_wer([("", "uh")]) == 1.0


def _manifest(tmp_path: Path, lines: list[str], files: tuple[str, ...] = ("a.wav",)) -> Path:
    for name in files:
        (tmp_path / name).write_bytes(b"RIFF")
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_load_manifest(tmp_path: Path) -> None:
    line = json.dumps({"file": "a.wav", "text": "hi there", "seconds": 1.5, "license": "x"})
    clips = load_manifest(_manifest(tmp_path, [line, ""]))
    assert clips == [Clip(name="a", path=tmp_path / "a.wav", text="hi there", seconds=1.5)]


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no manifest.jsonl"):
        load_manifest(tmp_path)
    good = json.dumps({"file": "a.wav", "text": "hi", "seconds": 1})
    with pytest.raises(ValueError, match=r"manifest.jsonl:2: not valid JSON"):
        load_manifest(_manifest(tmp_path, [good, "{oops"]))
    with pytest.raises(ValueError, match=r":1: missing text, seconds"):
        load_manifest(_manifest(tmp_path, [json.dumps({"file": "a.wav"})]))
    with pytest.raises(ValueError, match=r":1: expected a JSON object"):
        load_manifest(_manifest(tmp_path, ["[1, 2]"]))
    with pytest.raises(ValueError, match=r":1: 'seconds' must be a number"):
        load_manifest(_manifest(tmp_path, [json.dumps({"file": "a.wav", "text": "hi",
                                                        "seconds": "long"})]))
    missing = json.dumps({"file": "gone.wav", "text": "hi", "seconds": 1})
    with pytest.raises(FileNotFoundError, match=r":2: audio file .*gone.wav not found"):
        load_manifest(_manifest(tmp_path, [good, missing]))
    with pytest.raises(ValueError, match="lists no clips"):
        load_manifest(_manifest(tmp_path, [""]))


def test_shared_manifest(speech_dir: Path) -> None:
    clips = load_manifest(speech_dir)
    assert len(clips) >= 10
    assert all(c.path.is_file() and c.text and c.seconds > 0 for c in clips)
    assert "jfk_ask_not" in {c.name for c in clips}
