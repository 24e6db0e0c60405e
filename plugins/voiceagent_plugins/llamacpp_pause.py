"""Pause a llama.cpp generation mid-reply so another can use the context, and resume it.

llama-cpp-python keeps one generation's state in its ``Llama``: the KV cache of sequence 0,
the tokens it holds (``input_ids``, ``n_tokens``) and the sampler (with its random state and
grammar) that ``generate`` set up. A streaming generation is paused between two tokens, where
``generate`` next evaluates the token it just sampled: so the logits are not needed, and its
KV cells are all there is to copy (about 23 KB a token for SmolLM2-135M).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PausedGeneration:
    kv: Any  # a ctypes byte array: sequence 0's cells
    input_ids: np.ndarray
    n_tokens: int
    sampler: Any
    mirostat_mu: Any


def pause(llm: Any) -> PausedGeneration:
    """What the generation in progress on ``llm`` needs to go on later."""
    from llama_cpp import llama_cpp as c

    ctx = llm._ctx.ctx
    size = c.llama_state_seq_get_size(ctx, 0)
    kv = (ctypes.c_uint8 * size)()
    if c.llama_state_seq_get_data(ctx, kv, size, 0) == 0 and llm.n_tokens:
        raise RuntimeError("llama.cpp could not copy the KV cache")
    return PausedGeneration(kv, llm.input_ids[:llm.n_tokens].copy(), llm.n_tokens,
                            llm._sampler, llm._mirostat_mu)


def resume(llm: Any, paused: PausedGeneration) -> None:
    """Put a paused generation back on ``llm`` (whatever ran there meanwhile)."""
    from llama_cpp import llama_cpp as c

    ctx = llm._ctx.ctx
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    if paused.n_tokens and c.llama_state_seq_set_data(ctx, paused.kv, len(paused.kv), 0) == 0:
        raise RuntimeError("llama.cpp could not restore the KV cache")
    llm.input_ids[:paused.n_tokens] = paused.input_ids
    llm.n_tokens = paused.n_tokens
    llm._sampler, llm._mirostat_mu = paused.sampler, paused.mirostat_mu
    # the logits now are the other generation's: an exact prompt hit must evaluate again
    llm._requires_eval = True
