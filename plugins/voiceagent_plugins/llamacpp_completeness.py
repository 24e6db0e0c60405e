"""Semantic completeness of a transcript, scored by the local LLM as a plain language model.

How likely is sentence-final punctuation to come next? After "I want to book a table for"
almost never; after "I want to book a table for two" quite often. Whisper punctuates whatever
it hears, so trailing punctuation is stripped before asking. The raw probability is mapped to
[0, 1] on a log scale between ``p_incomplete`` and ``p_complete``, chosen from the shared
clips: complete sentences mostly score above 0.05, the same sentences cut at a word boundary
mostly below 0.005.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from voiceagent.deps import require
from voiceagent.errors import ConfigError
from voiceagent.registry import BackendOptions, validate_options

from .llamacpp_llm import load_llama

FINAL_PUNCTUATION = (".", "?", "!")


class LlamaCppCompletenessOptions(BackendOptions):
    #: a GGUF file instead of the bundled SmolLM2
    model: Path | None = None
    #: P(". ? !") at or below this scores 0 (unfinished)...
    p_incomplete: float = Field(0.003, gt=0.0, lt=1.0)
    #: ...at or above this 1 (complete), on a log scale between
    p_complete: float = Field(0.1, gt=0.0, le=1.0)
    threads: int | None = Field(None, ge=1)


class LlamaCppCompleteness:
    Options = LlamaCppCompletenessOptions

    def __init__(self, **options: Any) -> None:
        opts = validate_options(LlamaCppCompletenessOptions, options, "llamacpp completeness")
        if opts.p_complete <= opts.p_incomplete:
            raise ConfigError("llamacpp completeness: p_complete must be above p_incomplete")
        self._llama_cpp = require("llama_cpp", "llama-cpp-python", extra="llamacpp")
        # Its own small context: scoring must not disturb a generation in another session.
        self._llm = load_llama(opts.model, n_ctx=256, n_threads=opts.threads)
        self._ends = [self._llm.tokenize(p.encode(), add_bos=False)[0]
                      for p in FINAL_PUNCTUATION]
        self._lo, self._hi = math.log10(opts.p_incomplete), math.log10(opts.p_complete)
        self._lock = threading.Lock()

    def raw_probability(self, text: str) -> float:
        """P(next token is . ? or !) after ``text`` (blocking; tens of milliseconds)."""
        words = text.strip().rstrip(".?!,;:… ").strip()
        if not words:
            return 0.0
        tokens = self._llm.tokenize(words.encode(), add_bos=False)[-200:]
        with self._lock:
            self._llm.reset()
            self._llm.eval(tokens)
            ptr = self._llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
            logits = np.ctypeslib.as_array(ptr, shape=(self._llm.n_vocab(),)).astype(np.float64)
        logits -= logits.max()
        probs = np.exp(logits)
        return float(probs[self._ends].sum() / probs.sum())

    def probability(self, text: str) -> float:
        """Completeness in [0, 1]."""
        p = self.raw_probability(text)
        if p <= 0:
            return 0.0
        return min(1.0, max(0.0, (math.log10(p) - self._lo) / (self._hi - self._lo)))
