"""The training recipe runs end to end: synthesis, training, a checkpoint the backend loads.

(How well the shipped model recognises speech is in test_transducer_stt.py; this only keeps
the recipe that made it runnable.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from voiceagent import registry

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("front_end", [
    [], ["--front-end", "whisper", "--views", "1", "--workers", "1"]], ids=["log_mel", "whisper"])
def test_the_recipe_trains_and_saves_a_loadable_checkpoint(tmp_path, front_end):
    out = tmp_path / "tiny.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "voiceagent_plugins.transducer.train", "--out", str(out),
         "--utterances", "80", "--minutes", "0.1", "--threads", "1", *front_end],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "synthesised 80 clips" in proc.stdout and "trained" in proc.stdout
    if front_end:
        assert "encoded 20 x 1 views" in proc.stdout
    stt = registry.get("stt", "transducer", checkpoint=str(out))
    assert stt.stream() is not None
