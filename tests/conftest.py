"""Shared fixtures: the real speech clips in ../shared/data/speech, or $VOICEAGENT_SPEECH_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SPEECH_DIR = Path(os.environ.get("VOICEAGENT_SPEECH_DATA",
                                  REPO.parent / "shared" / "data" / "speech"))


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    if not (SPEECH_DIR / "manifest.jsonl").is_file():
        pytest.fail(f"speech clips not found at {SPEECH_DIR} (set VOICEAGENT_SPEECH_DATA)")
    return SPEECH_DIR
