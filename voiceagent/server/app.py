"""The HTTP side of ``voiceagent serve``: the web client and WebRTC signalling.

Routes: ``GET /`` (the page), ``GET /api/config`` (what the page needs: ICE servers, whether
a token is required), ``POST /api/offer`` (an SDP offer in, the answer out: one session per
offer) and ``GET /health``. Errors are JSON ``{"error": ...}`` with the status that says
what went wrong. Models are loaded before the app is built and shared by every session.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiortc import RTCIceServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..agent import Agent
from ..events import Event
from ..transports.webrtc_peer import OfferError, WebRTCPeer
from .registry import SessionRegistry

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: An SDP offer is a few kilobytes; anything much larger is not one.
MAX_BODY = 64 * 1024


@dataclass
class ServerConfig:
    ice_servers: Sequence[RTCIceServer] = ()
    host_addresses: Sequence[str] = ()
    token: str | None = None
    max_sessions: int = 4
    subscribers: Sequence[Callable[[Event], object]] = field(default_factory=list)


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(agent: Agent, backends: dict[str, object], config: ServerConfig) -> Starlette:
    registry = SessionRegistry(config.max_sessions)

    async def offer(request: Request) -> Response:
        try:
            _check_token(request, config.token)
            sdp = _parse_offer(await _read_body(request))
            if not registry.reserve():
                raise HTTPError(503, f"too many sessions (at most {config.max_sessions})")
        except HTTPError as exc:
            return JSONResponse({"error": str(exc)}, exc.status)
        peer = WebRTCPeer(agent, backends, ice_servers=config.ice_servers,
                          host_addresses=config.host_addresses, subscribers=config.subscribers)
        try:
            answer = await peer.accept(sdp)
        except OfferError as exc:
            await peer.close("offer rejected")
            return JSONResponse({"error": str(exc)}, 400)
        except BaseException:
            await peer.close("failed to answer")
            raise
        finally:
            registry.release()
        registry.add(peer)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type,
                             "session_id": peer.session_id})

    async def client_config(request: Request) -> Response:
        servers = [{"urls": s.urls, **({"username": s.username, "credential": s.credential}
                                      if s.username else {})} for s in config.ice_servers]
        return JSONResponse({"iceServers": servers, "tokenRequired": config.token is not None})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "sessions": len(registry),
                             "max_sessions": config.max_sessions})

    async def index(request: Request) -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await registry.close_all()

    app = Starlette(routes=[
        Route("/", index),
        Route("/api/config", client_config),
        Route("/api/offer", offer, methods=["POST"]),
        Route("/health", health),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], lifespan=lifespan)
    app.state.registry = registry
    return app


def _check_token(request: Request, token: str | None) -> None:
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPError(401, "a valid bearer token is required")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPError(413, f"request body over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPError(413, f"request body over {MAX_BODY} bytes")
    return bytes(body)


def _parse_offer(body: bytes) -> str:
    try:
        msg: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("sdp"), str):
        raise HTTPError(400, 'expected {"sdp": "...", "type": "offer"}')
    if msg.get("type") != "offer":
        raise HTTPError(400, '"type" must be "offer"')
    sdp: str = msg["sdp"]
    if not sdp.startswith("v=0"):
        raise HTTPError(400, "not an SDP session description")
    if not any(line.startswith("m=audio ") for line in sdp.splitlines()):
        raise HTTPError(422, "the offer has no audio m-line: add a microphone track")
    return sdp
