"""The OpenAI-compatible backend against a real llama-cpp-python server running SmolLM2-135M."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from cli_server import free_port
from llm_server import llama_server
from voiceagent.backends import LLM, ChatMessage, LLMDelta
from voiceagent.errors import BackendError, ConfigError
from voiceagent_plugins.openai_llm import OpenAILLM

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ASK_WEATHER = [ChatMessage("user", "What is the weather in Paris?")]
LONG_STORY = [ChatMessage("user", "Write a very long story about a dragon, in many chapters.")]
#: a reply of 20 s or more on this machine, unless the server stops when the client leaves
LONG_REPLY = {"max_tokens": 1950, "extra_body": {"min_tokens": 1900}}

MakeLLM = Callable[..., OpenAILLM]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with llama_server() as base_url:
        yield base_url


@pytest.fixture
async def llm() -> AsyncIterator[MakeLLM]:
    """Makes backends for a test, and closes their connections after it."""
    made: list[OpenAILLM] = []

    def make(base_url: str, **options: Any) -> OpenAILLM:
        made.append(OpenAILLM(base_url=base_url, model="smollm2", temperature=0.0, **options))
        return made[-1]

    yield make
    for backend in made:
        await backend.aclose()


async def collect(stream: AsyncIterator[LLMDelta]) -> list[LLMDelta]:
    return [d async for d in stream]


async def test_streams_text_deltas(server: str, llm: MakeLLM) -> None:
    backend = llm(server, max_tokens=40)
    assert isinstance(backend, LLM)
    deltas = await collect(backend.chat([ChatMessage("user", "What is the capital of France?")]))
    assert len(deltas) >= 3 and all(d.tool_call is None for d in deltas)
    assert "".join(d.text for d in deltas).strip()


async def test_forced_tool_call_then_tool_result(server: str, llm: MakeLLM) -> None:
    # llama.cpp's default (GGUF template) handler honours only a named tool_choice: it
    # constrains the output to the parameters' JSON schema and streams it as tool_call deltas
    deltas = await collect(llm(server, tool_choice="get_weather").chat(ASK_WEATHER, [WEATHER]))
    calls = [d.tool_call for d in deltas if d.tool_call]
    assert len(calls) == 1 and not "".join(d.text for d in deltas)
    call = calls[0]
    assert call.name == "get_weather" and call.id  # the name is not repeated per chunk
    assert "city" in json.loads(call.arguments)

    history = [*ASK_WEATHER, ChatMessage("assistant", tool_calls=[call]),
               ChatMessage("tool", json.dumps({"sky": "sunny", "temperature_c": 18}),
                           tool_call_id=call.id, name=call.name)]
    reply = await collect(llm(server, max_tokens=40).chat(history, [WEATHER]))
    assert "".join(d.text for d in reply).strip()
    assert all(d.tool_call is None for d in reply)


async def assert_server_idle(base_url: str, llm: MakeLLM) -> None:
    """A short request answers at once: the server, which queues requests, is not still busy
    with the abandoned ``LONG_REPLY``."""
    start = time.monotonic()
    deltas = await collect(llm(base_url, max_tokens=4).chat([ChatMessage("user", "Hi")]))
    assert deltas and time.monotonic() - start < 8.0


async def test_aclose_after_first_delta_stops_generation(server: str, llm: MakeLLM) -> None:
    stream = llm(server, **LONG_REPLY).chat(LONG_STORY)
    first = await anext(stream)
    assert first.text
    start = time.monotonic()
    await stream.aclose()
    assert time.monotonic() - start < 1.0
    await assert_server_idle(server, llm)


async def test_cancelling_the_consumer_stops_generation(server: str, llm: MakeLLM) -> None:
    backend = llm(server, **LONG_REPLY)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in backend.chat(LONG_STORY):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    await assert_server_idle(server, llm)


async def test_stream_cut_short_by_a_server_error_is_an_error(server: str, llm: MakeLLM) -> None:
    # the server fails after its 200 response has started (unknown tool) and ends the stream
    # cleanly with no chunks: without a check this would be a silent empty reply
    with pytest.raises(BackendError, match="ended the stream before the reply finished"):
        await collect(llm(server, tool_choice="no_such_tool").chat(ASK_WEATHER, [WEATHER]))


async def test_http_error_status(server: str, llm: MakeLLM) -> None:
    url = server.removesuffix("/v1") + "/nowhere/v1"
    with pytest.raises(BackendError, match=r"HTTP 404") as err:
        await collect(llm(url).chat(ASK_WEATHER))
    assert url in str(err.value) and "\n" not in str(err.value)


async def test_connection_refused_names_the_endpoint(llm: MakeLLM) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    with pytest.raises(BackendError, match="unreachable") as err:
        await collect(llm(url).chat(ASK_WEATHER))
    assert time.monotonic() - start < 2.0
    assert url in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Listens (the kernel completes the handshake) but never reads or answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


async def test_timeout_on_a_server_that_never_answers(silent_server: str, llm: MakeLLM) -> None:
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"timed out.*0\.5 s") as err:
        await collect(llm(silent_server, timeout=0.5).chat(ASK_WEATHER))
    assert time.monotonic() - start < 3.0
    assert silent_server in str(err.value)


async def test_malformed_stream(llm: MakeLLM) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"data: this is not json\n\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with srv:
        url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1"
        with pytest.raises(BackendError, match="malformed stream"):
            await collect(llm(url).chat(ASK_WEATHER))


def test_needs_a_key_only_without_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAILLM()
    OpenAILLM(base_url="http://127.0.0.1:1/v1")
