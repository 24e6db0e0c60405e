"""One model, many streams: chunks from different streams are batched into one encoder call
and one decoder pass.

All model work happens on one dedicated worker thread, never on the event loop. Each
:class:`EngineStream` submits its audio and awaits the result; the worker gathers requests
for up to ``max_wait_ms`` (or ``max_batch`` of them), cuts their audio into chunks, and runs
one batched ``encoder.stream`` + decoding step per round. Streams join and leave between
rounds; every stream keeps its own encoder caches and hypotheses, so a stream decodes the same
in a batch as alone. The thread starts with the first open stream and stops when the last
one closes (or at :meth:`TransducerEngine.close`).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .decoding import BeamDecoder, BeamState, GreedyDecoder, Hypothesis
from .model import Transducer
from .streaming import feeder

DECODINGS = ("tdt", "rnnt", "beam")


def quantized(model: Transducer) -> Transducer:
    """int8 dynamic quantisation of the Linear and LSTM layers (CPU only). torch 2.13 marks
    ``torch.ao.quantization`` deprecated in favour of torchao; it still works, so the warning
    is silenced rather than adding a dependency (as is its UserWarning about quantised LSTM
    weights, the same deprecation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear, torch.nn.LSTM}, dtype=torch.qint8)


@dataclass
class _Request:
    stream: EngineStream
    audio: np.ndarray | None  # None once cut into chunks
    flush: bool
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    chunks: list[torch.Tensor] = field(default_factory=list)


class TransducerEngine:
    def __init__(self, model: Transducer, decoding: str = "tdt", chunk_frames: int | None = None,
                 max_batch: int = 16, max_wait_ms: float = 5.0, beam: int = 4,
                 quantize: bool = False, device: str = "auto") -> None:
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, not {decoding!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() and not quantize else "cpu"
        model = quantized(model.eval()) if quantize else model.eval()
        self.model, self.device = model.to(device), torch.device(device)
        self.chunk = chunk_frames or model.cfg.chunk_frames
        self.decoder: GreedyDecoder | BeamDecoder = (
            BeamDecoder(model, beam) if decoding == "beam"
            else GreedyDecoder(model, tdt=decoding == "tdt"))
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.batch_sizes: list[int] = []  # encoder batch sizes, for tests and benchmarks
        self._queue: queue.Queue[_Request | None] = queue.Queue()  # the running worker's
        self._thread: threading.Thread | None = None
        self._stopping: threading.Thread | None = None  # told to stop, maybe still stepping
        self._open = 0
        self._lock = threading.Lock()

    def stream(self) -> EngineStream:
        with self._lock:
            self._open += 1
            if self._thread is None:
                self._queue = queue.Queue()
                self._thread = threading.Thread(target=self._work,
                                                args=(self._queue, self._stopping),
                                                name="transducer-engine", daemon=True)
                self._thread.start()
        return EngineStream(self)

    def _release(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self._stop()

    def close(self) -> None:
        """Stop the worker (it finishes the step it is in)."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        """Tell the worker to stop after its step, without waiting for it (a closing session
        never waits for a thread): a worker started later waits for it instead, so the model
        never runs twice at once."""
        if self._thread is not None:
            self._queue.put(None)
            self._stopping, self._thread = self._thread, None

    # ---------------------------------------------------------------- worker thread

    def _work(self, requests: queue.Queue[_Request | None],
              previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()
        active: list[_Request] = []
        while True:
            if not active:  # idle: wait for a request that completes a chunk ...
                item = requests.get()
                if item is None:
                    return
                if not self._cut(item):
                    continue
                active.append(item)
                deadline = time.monotonic() + self.max_wait  # ... then briefly for company
                while len(active) < self.max_batch:
                    wait = deadline - time.monotonic()
                    if wait <= 0 or not self._take(requests, active, wait):
                        break
            else:  # busy: take whatever arrived, without waiting
                self._take(requests, active, None)
            if active and active[-1] is None:
                self._fail(active[:-1], "the transducer engine was closed")
                return
            active = self._round(active)

    def _take(self, requests: queue.Queue[_Request | None], active: list,
              wait: float | None) -> bool:
        """Move queued requests into ``active`` (waiting up to ``wait`` s for the first one;
        ``None``: do not wait). A close sentinel is appended last."""
        try:
            item = requests.get(timeout=wait) if wait else requests.get_nowait()
        except queue.Empty:
            return False
        active.append(item)
        while item is not None:
            try:
                item = requests.get_nowait()
            except queue.Empty:
                break
            active.append(item)
        return True

    def _cut(self, r: _Request) -> bool:
        """Turn a request's audio into chunks; settle it at once if it makes none."""
        if r.audio is not None:
            try:
                r.chunks = r.stream.feeder.push(r.audio) + (
                    r.stream.feeder.flush() if r.flush else [])
            except Exception as exc:  # noqa: BLE001 (handed to the awaiting stream)
                r.chunks = []
                r.loop.call_soon_threadsafe(_settle, r.future, exc)
                return False
            r.audio = None
        if not r.chunks:
            r.loop.call_soon_threadsafe(_settle, r.future, None)
        return bool(r.chunks)

    def _round(self, requests: list[_Request]) -> list[_Request]:
        """One batched step over the requests with chunks; the rest are settled."""
        requests = [r for r in requests if self._cut(r)]
        batch = requests[: self.max_batch]
        if batch:
            try:
                self._step(batch)
            except Exception as exc:  # noqa: BLE001
                for r in batch:
                    r.chunks = []
                    r.loop.call_soon_threadsafe(_settle, r.future, exc)
        left = []
        for r in requests:
            if r.chunks:
                left.append(r)
            else:
                r.loop.call_soon_threadsafe(_settle, r.future, None)
        return left

    @torch.inference_mode()
    def _step(self, batch: list[_Request]) -> None:
        feats = torch.stack([r.chunks.pop(0) for r in batch]).to(self.device)
        state = type(batch[0].stream.state).stack([r.stream.state for r in batch])
        enc, state = self.model.encoder.stream(feats, state)
        self.decoder.decode(self.model.joint.enc(enc), [r.stream.hyp for r in batch])
        for r, s in zip(batch, state.split()):
            r.stream.state = s
        self.batch_sizes.append(len(batch))

    @staticmethod
    def _fail(requests: list[_Request], why: str) -> None:
        for r in requests:
            r.loop.call_soon_threadsafe(_settle, r.future, RuntimeError(why))


def _settle(future: asyncio.Future, outcome: BaseException | None) -> None:
    if future.done():  # the awaiting stream was cancelled
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


class EngineStream:
    """One stream's caches and hypotheses. Calls must not overlap (one request at a time)."""

    def __init__(self, engine: TransducerEngine) -> None:
        self.engine = engine
        self._closed = False
        self.reset()

    def reset(self) -> None:
        model = self.engine.model
        self.feeder = feeder(model, self.engine.chunk)
        self.state = model.encoder.init_state(1)
        self.hyp: Hypothesis | BeamState = self.engine.decoder.initial()

    @property
    def tokens(self) -> list[int]:
        return list(self.hyp.tokens)

    @property
    def joint_calls(self) -> int:
        return self.hyp.joint_calls

    async def feed(self, samples: np.ndarray, flush: bool = False) -> list[int]:
        """Decode ``samples`` (16 kHz float32); ``flush`` ends the utterance. The tokens so far."""
        if self._closed:
            raise RuntimeError("stream is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.engine._queue.put(_Request(self, samples, flush, future, loop))
        await asyncio.shield(future)  # the worker owns this stream's state until it resolves
        return self.tokens

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.engine._release()
