"""LLM backend for any OpenAI-compatible chat endpoint: OpenAI itself, or a local server
(llama.cpp's, vLLM, Ollama, LM Studio) given by ``base_url``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import Field

from voiceagent.backends import ChatMessage, LLMDelta, ToolCall
from voiceagent.deps import require
from voiceagent.errors import BackendError, ConfigError
from voiceagent.registry import BackendOptions, validate_options

#: local servers ignore the key, but the client refuses to start without one
_LOCAL_KEY = "not-needed"


class OpenAIOptions(BackendOptions):
    model: str = "gpt-4o-mini"
    #: a local server's endpoint (default: $OPENAI_BASE_URL, else OpenAI's)
    base_url: str | None = None
    #: default: $OPENAI_API_KEY; a local server needs none
    api_key: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    #: bounds connecting and each wait for the next streamed chunk, so a stalled server is
    #: reported instead of leaving the agent silent (seconds)
    timeout: float = Field(30.0, gt=0)
    #: "auto", "required", "none" or the name of a function the model must call
    tool_choice: str | None = None
    #: extra fields for the request body (a server's own sampling options)
    extra_body: dict[str, Any] | None = None


class OpenAILLM:
    """Streams chat completions; tool calls are yielded whole once the reply has finished."""

    Options = OpenAIOptions

    def __init__(self, **options: Any) -> None:
        opts = validate_options(OpenAIOptions, options, "openai LLM")
        self._openai = require("openai", "openai", extra="openai")
        base_url = opts.base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = (opts.api_key or os.environ.get("OPENAI_API_KEY")
                   or (_LOCAL_KEY if base_url else None))
        if not api_key:
            raise ConfigError("the openai LLM backend needs an API key: set OPENAI_API_KEY, "
                              "pass api_key, or pass base_url for a local server")
        self.model = opts.model
        self.temperature = opts.temperature
        self.max_tokens = opts.max_tokens
        self.timeout = opts.timeout
        self.tool_choice = opts.tool_choice
        self.extra_body = dict(opts.extra_body or {})
        self._client_options: dict[str, Any] = {
            "api_key": api_key, "base_url": base_url, "timeout": self.timeout,
            # a voice turn cannot wait through backoff; fail at once and let the agent say so
            "max_retries": 0,
        }
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client_for_loop(self) -> Any:
        """The client for the running loop: pooled connections are bound to the loop that
        opened them, and one backend instance is shared by every loop in the process.

        The HTTP client is ours, not the SDK's default, whose ``__del__`` would try to close
        the previous loop's connections from the new loop and log an error."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            http = self._openai.DefaultAsyncHttpxClient(timeout=self.timeout)
            self._client = self._openai.AsyncOpenAI(**self._client_options, http_client=http)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the pooled connections (those of the running loop; others died with theirs)."""
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()

    def _request(self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]],
                 tool_choice: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model, "messages": [m.to_openai() for m in messages], "stream": True}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        choice = tool_choice or self.tool_choice
        if tools:
            params["tools"] = list(tools)
            if choice in ("auto", "required", "none"):
                params["tool_choice"] = choice
            elif choice:
                params["tool_choice"] = {"type": "function", "function": {"name": choice}}
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    async def chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] = (),
                   tool_choice: str | None = None) -> AsyncIterator[LLMDelta]:
        """``tool_choice`` (an agent's) overrides the backend's own for this request."""
        client = self._client_for_loop()
        endpoint = str(client.base_url).rstrip("/")
        openai = self._openai
        calls: dict[int, ToolCall] = {}
        finished = False
        try:
            request = self._request(messages, tools, tool_choice)
            stream = await client.chat.completions.create(**request)
            # leaving this block, by the end, an error, aclose() or cancellation, closes the
            # HTTP response, which is how the server learns to stop generating
            async with stream:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    finished = finished or bool(chunk.choices[0].finish_reason)
                    delta = chunk.choices[0].delta
                    if delta.content:
                        yield LLMDelta(text=delta.content)
                    for part in delta.tool_calls or ():
                        call = calls.setdefault(part.index, ToolCall("", "", ""))
                        # OpenAI sends id and name once; llama.cpp's server repeats them
                        call.id = call.id or part.id or ""
                        fn = part.function
                        if fn is not None:
                            call.name = call.name or fn.name or ""
                            call.arguments += fn.arguments or ""
        except openai.APITimeoutError:
            raise BackendError(f"LLM endpoint {endpoint} timed out: no response "
                               f"within {self.timeout:g} s") from None
        except openai.APIConnectionError as exc:
            raise BackendError(f"LLM endpoint {endpoint} unreachable: {_cause(exc)}") from None
        except openai.APIStatusError as exc:
            said = exc.message.removeprefix(f"Error code: {exc.status_code}").lstrip(" -")
            raise BackendError(f"LLM endpoint {endpoint} answered HTTP {exc.status_code}: "
                               f"{_one_line(said or str(exc.body))}") from None
        except openai.OpenAIError as exc:
            raise BackendError(f"LLM endpoint {endpoint} failed: {_one_line(str(exc))}") from None
        except ValueError as exc:  # a stream event that is not JSON
            raise BackendError(f"LLM endpoint {endpoint} sent a malformed stream: "
                               f"{_one_line(str(exc))}") from None
        if not finished:
            # e.g. llama.cpp's server ends the stream cleanly when generation raises
            raise BackendError(f"LLM endpoint {endpoint} ended the stream before the reply "
                               "finished (see the server's log)")
        for index, call in sorted(calls.items()):
            call.id = call.id or f"call_{index}"  # some servers send none; replies need one
            yield LLMDelta(tool_call=call)


def _cause(exc: BaseException) -> str:
    """The root error's words (e.g. "Connect call failed"), not the client's generic ones."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return _one_line(str(exc) or type(exc).__name__)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
