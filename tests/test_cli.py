"""The command line as a user meets it: one-line errors, and backends closed at shutdown."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf

from voiceagent.cli import main

REPO = Path(__file__).resolve().parents[1]

#: An agent whose backends are small fakes; the LLM notes in a file that it was closed.
FAKE_AGENT = '''
from pathlib import Path

import numpy as np

from voiceagent import Agent, AgentOptions, EndpointingOptions
from voiceagent.backends import Transcript

CLOSED = Path(__file__).with_suffix(".closed")


class Quiet:
    sample_rate, window_samples = 16000, 512

    def stream(self):
        return self

    def probability(self, window):
        return 0.0

    def reset(self):
        pass


class Deaf:
    sample_rate = 16000

    def stream(self):
        return self

    async def push(self, samples):
        return None

    async def pause(self):
        return None

    async def finish(self):
        return Transcript("")

    async def aclose(self):
        pass


class Mute:
    sample_rate = 16000

    async def synthesize(self, text):
        yield np.zeros(1600, np.float32)


class ClosingLLM:
    async def chat(self, messages, tools=()):
        if False:
            yield

    async def aclose(self):
        CLOSED.write_text("closed")


agent = Agent("Be brief.", vad=Quiet(), stt=Deaf(), llm=ClosingLLM(), tts=Mute(),
              options=AgentOptions(endpointing=EndpointingOptions(mode="vad")))
'''


def _silence(tmp_path: Path) -> Path:
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(8000, np.float32), 16000)
    return wav


def test_a_misspelled_backend_option_is_one_line_not_a_traceback(tmp_path, capsys):
    """Issue 12, defect 5: ``--stt-option beam=5`` raised a raw TypeError."""
    status = main(["run", str(REPO / "examples" / "basic_agent.py"),
                   "--input", str(_silence(tmp_path)), "--stt-option", "beam=5", "-q"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("voiceagent: error: stt backend 'whisper': no option beam "
                          "(valid options: ")
    assert "beam_size" in err


def test_run_closes_the_backends_when_it_ends(tmp_path):
    """Issue 12, defect 5: a backend's aclose (OpenAILLM's pooled connections) was never
    called; ``voiceagent run`` now closes every backend on its way out."""
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(FAKE_AGENT))
    status = main(["run", str(agent), "--input", str(_silence(tmp_path)), "--speed", "8",
                   "--max-tail", "2", "-q"])
    assert status == 0
    assert (tmp_path / "agent.closed").read_text() == "closed"


def test_the_server_closes_its_backends_at_shutdown(tmp_path):
    from starlette.testclient import TestClient

    from voiceagent.loader import load_agent
    from voiceagent.server.app import ServerConfig, create_app
    from voiceagent.session import resolve_backends

    path = tmp_path / "agent.py"
    path.write_text(textwrap.dedent(FAKE_AGENT))
    agent = load_agent(path)
    backends = resolve_backends(agent)
    closed = tmp_path / "agent.closed"
    with TestClient(create_app(agent, backends, ServerConfig())) as client:
        assert client.get("/health").status_code == 200
    assert not closed.exists()  # an app given backends by its embedder leaves them be
    with TestClient(create_app(agent, backends, ServerConfig(close_backends=True))) as client:
        assert client.get("/health").status_code == 200
        assert not closed.exists()
    assert closed.read_text() == "closed"


async def test_sip_closes_the_backends_when_it_is_stopped(tmp_path):
    import asyncio
    import os
    import signal

    from voiceagent.cli import build_parser
    from voiceagent.telephony.serve_sip import serve_sip

    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(FAKE_AGENT))
    args = build_parser().parse_args(["sip", str(agent), "--port", "0"])
    default = signal.getsignal(signal.SIGTERM)
    bridge = asyncio.create_task(serve_sip(args))
    for _ in range(500):  # until it listens for the signal that stops it
        if signal.getsignal(signal.SIGTERM) is not default or bridge.done():
            break
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(bridge, 10) == 0
    assert (tmp_path / "agent.closed").read_text() == "closed"


def test_bad_serve_limits_are_one_line_before_any_model_loads(capsys):
    agent = str(REPO / "examples" / "basic_agent.py")
    for flags, message in ((["--rate-burst", "0"], "--rate-burst: "),
                           (["--rate-limit", "-5"], "--rate-limit: "),
                           (["--trusted-proxy", "proxy.local"], "trusted proxy 'proxy.local' "
                                                                "is not an IP address"),
                           (["--input-timeout", "0"], "--input-timeout must be positive")):
        assert main(["serve", agent, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"voiceagent: error: {message}"), err
