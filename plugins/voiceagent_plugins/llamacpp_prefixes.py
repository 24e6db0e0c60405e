"""Each conversation's evaluated prompt, kept for its next turn while other sessions share the
context.

llama.cpp reuses the KV cells of the longest prefix a new prompt shares with what its context
holds. With sessions taking turns on one context that is mostly another session's
conversation: only the instructions match, and every turn evaluates the whole conversation
again. So after each reply the context's state is kept (as ``llamacpp_pause`` saves it: the KV
cells of sequence 0 and its tokens), within a memory budget, least recently used out first;
before a prompt is evaluated, the kept state that shares the longest prefix with it is put
back when it shares more than the context does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import llamacpp_pause
from .llamacpp_pause import PausedGeneration


def _shared(a: np.ndarray, b: np.ndarray) -> int:
    """The length of the longest common prefix of two token arrays."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    """Kept context states; used only by whoever holds the model (its lock)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._states: OrderedDict[int, PausedGeneration] = OrderedDict()
        self._next = 0
        #: prompt tokens whose evaluation a restored state saved (for tests and benchmarks)
        self.reused = 0

    @property
    def size(self) -> int:
        return sum(_cost(s) for s in self._states.values())

    def keep(self, llm: Any) -> None:
        """Keep what the context holds now (after a reply)."""
        if self.budget <= 0 or not llm.n_tokens:
            return
        state = llamacpp_pause.pause(llm)
        state.sampler = None  # a later generation makes its own
        for key, old in list(self._states.items()):  # an earlier turn of the same conversation
            if _shared(old.input_ids, state.input_ids) == old.n_tokens:
                del self._states[key]
        self._states[self._next] = state
        self._next += 1
        while self._states and self.size > self.budget:
            self._states.popitem(last=False)

    def restore(self, llm: Any, tokens: Sequence[int]) -> None:
        """Before ``tokens`` are evaluated: put back the kept state sharing the most with them,
        if that is more than the context shares."""
        if not self._states:
            return
        prompt = np.asarray(tokens, dtype=np.intc)
        held = _shared(llm.input_ids[:llm.n_tokens], prompt)
        key, best = max(((k, _shared(s.input_ids, prompt)) for k, s in self._states.items()),
                        key=lambda kv: kv[1])
        if best > held:
            llamacpp_pause.resume(llm, self._states[key])
            self._states.move_to_end(key)
            self.reused += best - held


def _cost(state: PausedGeneration) -> int:
    return len(state.kv) + state.input_ids.nbytes


def prefix_cached(llama_class: type, cache: PrefixCache) -> type:
    """``llama_class`` (``llama_cpp.Llama``) whose every generation first restores the longest
    kept prefix of its prompt from ``cache``."""

    class PrefixCachedLlama(llama_class):  # type: ignore[misc, valid-type]
        def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Any:
            cache.restore(self, tokens)
            return super().generate(tokens, *args, **kwargs)

    return PrefixCachedLlama
