"""A Pipecat 1.14 voice bot with the models of voiceagent's default agent, for side-by-side runs.

    /work/venv-pipecat/bin/python benchmarks/pipecat_bot.py --port 7870 \
        --llm-url http://127.0.0.1:PORT/v1 --whisper DIR --piper-voice FILE.onnx

Run by ``benchmarks/v2v_client.py --pipecat`` in Pipecat's own venv (it needs
``pipecat-ai[webrtc,silero,whisper,piper,openai]==1.14.0``, which the voiceagent venv does not
have). Each POST of an SDP offer to ``/api/offer`` starts one bot on Pipecat's SmallWebRTC
transport: Silero VAD, faster-whisper segmented (the same tiny.en int8 directory), the LLM
through an OpenAI-compatible server (the same llama.cpp server voiceagent uses in the
comparison), Piper with the same joe voice file, and Pipecat's default user-turn stop
strategy (Smart Turn v3). Every setting not named here is Pipecat's default.

Models are loaded once per process and shared by the bots, as ``voiceagent serve`` does:
otherwise every call would load Whisper and Piper again while the caller speaks.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from pathlib import Path

from aiohttp import web
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.piper import tts as piper_tts
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.whisper import stt as whisper_stt
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

# voiceagent's examples/basic_agent.py
INSTRUCTIONS = ("You are a friendly voice assistant. Answer in one or two short sentences, "
                "in plain words without lists or symbols, because your reply is spoken aloud.")
# voiceagent's llama.cpp defaults (plugins/voiceagent_plugins/llamacpp_llm.py)
TEMPERATURE, MAX_TOKENS = 0.3, 160

# One Whisper model and one Piper voice per process, whatever the number of bots.
whisper_stt.WhisperModel = functools.cache(whisper_stt.WhisperModel)  # type: ignore[misc]
piper_tts.PiperVoice.load = functools.cache(piper_tts.PiperVoice.load)  # type: ignore[method-assign]


def make_bot(connection: SmallWebRTCConnection, args: argparse.Namespace) -> PipelineTask:
    transport = SmallWebRTCTransport(
        webrtc_connection=connection,
        params=TransportParams(audio_in_enabled=True, audio_out_enabled=True))
    stt = WhisperSTTService(settings=WhisperSTTService.Settings(model=str(args.whisper)),
                            device="cpu", compute_type="int8")
    llm = OpenAILLMService(api_key="not-needed", base_url=args.llm_url,
                           settings=OpenAILLMService.Settings(
                               model="smollm2", temperature=TEMPERATURE, max_tokens=MAX_TOKENS))
    tts = PiperTTSService(settings=PiperTTSService.Settings(voice=args.piper_voice.stem),
                          download_dir=args.piper_voice.parent)
    context = LLMContext([{"role": "system", "content": INSTRUCTIONS}])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))
    pipeline = Pipeline([transport.input(), stt, aggregators.user(), llm, tts,
                         transport.output(), aggregators.assistant()])
    task = PipelineTask(pipeline)

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):  # noqa: ANN001, ARG001
        await task.cancel()

    return task


def make_app(args: argparse.Namespace) -> web.Application:
    bots: set[asyncio.Task] = set()

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=body["sdp"], type=body["type"])
        task = make_bot(connection, args)
        bot = asyncio.create_task(PipelineRunner(handle_sigint=False).run(task))
        bots.add(bot)
        bot.add_done_callback(bots.discard)
        return web.json_response(connection.get_answer())

    async def health(request: web.Request) -> web.Response:  # noqa: ARG001
        return web.Response(text="ok")

    async def stop_bots(app: web.Application) -> None:  # noqa: ARG001
        for bot in list(bots):
            bot.cancel()
        await asyncio.gather(*bots, return_exceptions=True)

    app = web.Application()
    app.router.add_post("/api/offer", offer)
    app.router.add_get("/health", health)
    app.on_shutdown.append(stop_bots)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--llm-url", required=True, help="an OpenAI-compatible endpoint (…/v1)")
    p.add_argument("--whisper", type=Path, required=True,
                   help="a CTranslate2 Whisper model directory")
    p.add_argument("--piper-voice", type=Path, required=True,
                   help="a Piper voice .onnx (its .onnx.json beside it)")
    args = p.parse_args()
    # load the shared models before the first call
    whisper_stt.WhisperModel(str(args.whisper), device="cpu", compute_type="int8")
    piper_tts.PiperVoice.load(args.piper_voice, use_cuda=False)
    web.run_app(make_app(args), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
