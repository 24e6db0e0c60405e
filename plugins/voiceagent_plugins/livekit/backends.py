"""LiveKit Agents plugins as voiceagent backends.

By registry name, ``livekit:<plugin>.<Class>`` with the plugin's constructor arguments as
backend options::

    voiceagent run agent.py --input in.wav \\
        --llm livekit:openai.LLM --llm-option model=gpt-4o-mini
    --stt livekit:deepgram.STT    --tts livekit:cartesia.TTS    --vad livekit:silero.VAD

(``openai.LLM`` is ``livekit.plugins.openai.LLM``; a full dotted path works too.) Or in code,
around an object: ``LiveKitLLM(openai.LLM(...))``.

What maps: an LLM streams text and returns tool calls (voiceagent runs the tools); an STT
transcribes each turn with ``recognize()`` once the turn ends (voiceagent's VAD and
endpointer decide the turn, so no partials); a TTS streams its audio; Silero is the one VAD,
as a LiveKit VAD is an event stream and voiceagent steps a model window by window. Provider
errors become :class:`~voiceagent.errors.BackendError`; LiveKit's retries are off (a voice
turn cannot wait through backoff: voiceagent reports and goes on).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from voiceagent.audio import check_finite, to_mono_float
from voiceagent.backends import ChatMessage, LLMDelta, ToolCall, Transcript
from voiceagent.deps import require
from voiceagent.errors import BackendError, ConfigError
from voiceagent.registry import BackendOptions

try:
    from livekit.agents import APIConnectOptions, APIError
    from livekit.agents import llm as lk_llm
    from livekit.agents import stt as lk_stt
    from livekit.agents import tts as lk_tts

    from .chat import to_chat_ctx, to_livekit_tools
    from .frames import to_float, to_frame
except ImportError:
    # Without voiceagent[livekit] the entry points still load (``voiceagent.doctor``, the
    # registry's listing); building a backend says what to install (``_require_livekit``).
    pass

RATE = 16_000


class PluginOptions(BackendOptions):
    """The plugin (``openai.LLM``), and any other option goes to its constructor."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    plugin: str
    #: bounds each request to the provider (seconds)
    timeout: float = Field(30.0, gt=0)


def _require_livekit() -> None:
    require("livekit.agents", "livekit-agents", extra="livekit")


def load_plugin(plugin: str, options: dict[str, Any]) -> Any:
    """``livekit.plugins.<module>.<Class>(**options)`` for ``<module>.<Class>``, or the class
    at a full dotted path."""
    module, _, name = plugin.rpartition(".")
    if not module or not name:
        raise ConfigError(f"livekit plugin {plugin!r}: expected <plugin>.<Class>, "
                          "e.g. openai.LLM")
    path = module if module.startswith("livekit.") else f"livekit.plugins.{module}"
    package = f"livekit-plugins-{module.split('.')[-1]}"
    factory = getattr(require(path, package), name, None)
    if factory is None:
        raise ConfigError(f"livekit plugin {plugin!r}: {path} has no {name}")
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"livekit plugin {plugin!r}: {exc}") from None


class LLMPluginOptions(PluginOptions):
    #: "auto", "required", "none" or the name of a function the model must call
    tool_choice: str | None = None


def _plugin(given: Any, plugin: str | None, options: dict[str, Any], what: str) -> Any:
    """The object given, else the plugin named (``validate_options`` has checked the
    registry's options already; this is for calls from code)."""
    _require_livekit()
    if given is not None:
        if options:
            raise ConfigError(f"{what}: options {', '.join(options)} are for a plugin named "
                              "by `plugin`, not for an object")
        return given
    if not plugin:
        raise ConfigError(f"{what}: give a LiveKit object or plugin='<plugin>.<Class>'")
    return load_plugin(plugin, options)


def _connect(timeout: float) -> APIConnectOptions:
    return APIConnectOptions(max_retry=0, timeout=timeout)


class LiveKitLLM:
    """A ``livekit.agents.llm.LLM`` as a voiceagent LLM. ``tool_choice`` ("auto",
    "required", "none" or a function's name) applies whenever tools are offered."""

    Options = LLMPluginOptions

    def __init__(self, llm: lk_llm.LLM | None = None, *, plugin: str | None = None,
                 timeout: float = 30.0, tool_choice: str | None = None,
                 **options: Any) -> None:
        self.llm = _plugin(llm, plugin, options, "livekit LLM")
        self.timeout = timeout
        self.tool_choice = tool_choice

    def _choice(self) -> Any:
        if self.tool_choice in (None, "auto", "required", "none"):
            return self.tool_choice
        return {"type": "function", "function": {"name": self.tool_choice}}

    async def chat(self, messages: Sequence[ChatMessage],
                   tools: Sequence[dict[str, Any]] = ()) -> AsyncIterator[LLMDelta]:
        offered = to_livekit_tools(tools)
        extra: dict[str, Any] = {}
        if offered and self.tool_choice is not None:
            extra["tool_choice"] = self._choice()
        calls: list[lk_llm.FunctionToolCall] = []
        try:
            stream = self.llm.chat(chat_ctx=to_chat_ctx(messages), tools=offered or None,
                                   conn_options=_connect(self.timeout), **extra)
            async with stream:
                async for chunk in stream:
                    if chunk.delta is None:
                        continue
                    if chunk.delta.content:
                        yield LLMDelta(text=chunk.delta.content)
                    calls += chunk.delta.tool_calls
        except APIError as exc:
            raise BackendError(f"LiveKit LLM {self.llm.label}: {exc}") from None
        for i, call in enumerate(calls):
            yield LLMDelta(tool_call=ToolCall(call.call_id or f"call_{i}", call.name,
                                              call.arguments or "{}"))


class LiveKitSTT:
    """A ``livekit.agents.stt.STT`` as a voiceagent STT: each turn's speech is recognised
    in one request when the turn ends."""

    Options = PluginOptions
    sample_rate = RATE

    def __init__(self, stt: lk_stt.STT | None = None, *, plugin: str | None = None,
                 timeout: float = 30.0, **options: Any) -> None:
        stt = _plugin(stt, plugin, options, "livekit STT")
        self.timeout = timeout
        if not stt.capabilities.offline_recognize:
            raise ConfigError(f"LiveKit STT {stt.label} cannot recognise a recording "
                              "(offline_recognize is off)")
        self.stt = stt

    def stream(self) -> LiveKitSTTStream:
        return LiveKitSTTStream(self)


class LiveKitSTTStream:
    def __init__(self, owner: LiveKitSTT) -> None:
        self._owner = owner
        self._audio: list[np.ndarray] = []

    async def push(self, samples: np.ndarray) -> Transcript | None:
        self._audio.append(check_finite(to_mono_float(samples), "audio for the LiveKit STT"))
        return None

    async def pause(self) -> Transcript | None:
        return None

    async def finish(self) -> Transcript:
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)
        self._audio = []
        if not len(audio):
            return Transcript("")
        stt = self._owner.stt
        try:
            event = await stt.recognize(to_frame(audio, RATE),
                                        conn_options=_connect(self._owner.timeout))
        except APIError as exc:
            raise BackendError(f"LiveKit STT {stt.label}: {exc}") from None
        text = event.alternatives[0].text.strip() if event.alternatives else ""
        return Transcript(text, stable=text)

    async def aclose(self) -> None:
        self._audio = []


class LiveKitTTS:
    """A ``livekit.agents.tts.TTS`` as a voiceagent TTS."""

    Options = PluginOptions

    def __init__(self, tts: lk_tts.TTS | None = None, *, plugin: str | None = None,
                 timeout: float = 30.0, **options: Any) -> None:
        self.tts = _plugin(tts, plugin, options, "livekit TTS")
        self.timeout = timeout
        self.sample_rate = self.tts.sample_rate

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        if not text.strip():
            return
        try:
            async with self.tts.synthesize(text, conn_options=_connect(self.timeout)) as stream:
                async for audio in stream:
                    yield to_float(audio.frame)
        except APIError as exc:
            raise BackendError(f"LiveKit TTS {self.tts.label}: {exc}") from None


class LiveKitVAD:
    """LiveKit's Silero model (``livekit:silero.VAD``, from the livekit-plugins-silero
    wheel) stepped window by window as a voiceagent VAD."""

    Options = PluginOptions
    sample_rate = RATE
    window_samples = 512

    def __init__(self, *, plugin: str = "silero.VAD", **options: Any) -> None:
        _require_livekit()
        if plugin != "silero.VAD" or options:
            raise ConfigError("livekit VAD: only silero.VAD (without options) can serve as a "
                              "voiceagent VAD: other LiveKit VADs are event streams, not "
                              "per-window models")
        self._onnx = require("livekit.plugins.silero.onnx_model", "livekit-plugins-silero",
                             extra="livekit")
        self._session = self._onnx.new_inference_session(force_cpu=True)

    def stream(self) -> LiveKitVADStream:
        return LiveKitVADStream(self._onnx.OnnxModel(onnx_session=self._session,
                                                     sample_rate=RATE))


class LiveKitVADStream:
    def __init__(self, model: Any) -> None:
        self._model = model

    def probability(self, window: np.ndarray) -> float:
        return float(self._model(np.asarray(window, dtype=np.float32)))

    def reset(self) -> None:
        self._model.reset()
