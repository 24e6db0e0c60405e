"""The training recipe runs end to end: synthesis, training, a checkpoint the backend loads.

(How well the shipped model recognises speech is in test_transducer_stt.py; this only keeps
the recipe that made it runnable.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from voiceagent import registry

pytestmark = pytest.mark.slow


def test_the_recipe_trains_and_saves_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "tiny.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "voiceagent_plugins.transducer.train", "--out", str(out),
         "--utterances", "80", "--minutes", "0.1", "--threads", "1"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "synthesised 80 clips" in proc.stdout and "trained" in proc.stdout
    stt = registry.get("stt", "transducer", checkpoint=str(out))
    assert stt.stream() is not None
