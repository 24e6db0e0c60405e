"""The HTTP side of ``voiceagent serve``: the web client, WebRTC signalling and phone
media streams.

Routes: ``GET /`` (the page), ``GET /api/config`` (what the page needs: ICE servers, whether
a token is required), ``POST /api/offer`` (an SDP offer in, the answer out: one session per
offer), ``GET /health``, the WebSocket ``/media-stream/{provider}`` (one phone call per
connection, framed as the provider does: ``twilio``) and ``GET|POST /twilio/twiml`` (the TwiML
that points a Twilio call at that WebSocket), and ``GET /metrics`` (Prometheus) when the server
keeps metrics. HTTP errors are JSON ``{"error": ...}`` with the
status that says what went wrong. Models are loaded before the app is built and shared by
every session; browsers and calls count alike against ``max_sessions``.

New sessions are rate limited per client address (``rate_limit``): an offer over the limit
is a 429 with ``Retry-After``, a media stream is closed with 1008 and the wait in the reason.
Behind a reverse proxy, name it in ``trusted_proxies`` so its ``X-Forwarded-For`` is believed.

``/health`` reports the worker's load (sessions, capacity, CPU) and is a 503 when the worker
takes no new session (full, or draining after SIGTERM), so a load balancer's health check
takes it out of rotation until it has room again.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from aiortc import RTCIceServer
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from .. import registry as backend_registry
from ..agent import Agent
from ..events import Event
from ..load import CpuMeter, WorkerLoad
from ..ratelimit import RateLimitOptions, SourceRateLimiter
from ..telephony.media_stream import MediaStreamCall
from ..telephony.serializers import SERIALIZERS, twiml_connect_stream
from ..transports.webrtc import INPUT_TIMEOUT
from ..transports.webrtc_offer import OfferError, check_offer
from ..transports.webrtc_peer import WebRTCPeer
from .client_address import ClientAddresses
from .registry import SessionRegistry

if TYPE_CHECKING:
    from ..telemetry.prometheus import PrometheusMetrics

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
    #: the server's public base URL (https://agent.example.com), for the media-stream URL in
    #: the TwiML; by default it is wss:// and the Host the request came to
    public_url: str | None = None
    #: the server owns the backends (``voiceagent serve``): close them when it shuts down,
    #: on the loop their connections belong to
    close_backends: bool = False
    #: a browser session ends after this many seconds with no audio from its microphone
    input_timeout: float = INPUT_TIMEOUT
    #: new sessions (offers, media streams) per client address; None: no limit. The default
    #: is far above what a person reconnecting does and caps a flood at one a second
    rate_limit: RateLimitOptions | None = field(
        default_factory=lambda: RateLimitOptions(per_minute=60, burst=20))
    #: addresses or networks of reverse proxies whose X-Forwarded-For names the client
    trusted_proxies: Sequence[str] = ()
    #: served on ``GET /metrics`` (attached to the agent's sessions by the caller)
    metrics: PrometheusMetrics | None = None


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def create_app(agent: Agent, backends: dict[str, object], config: ServerConfig) -> Starlette:
    registry = SessionRegistry(config.max_sessions)
    addresses = ClientAddresses(config.trusted_proxies)
    limiter = None if config.rate_limit is None else SourceRateLimiter(config.rate_limit)
    cpu = CpuMeter()

    def refusal() -> HTTPError:
        """Why no new session is taken now: draining, or every place is taken."""
        if registry.draining:
            return HTTPError(503, "the server is shutting down: no new sessions")
        return HTTPError(503, f"too many sessions (at most {config.max_sessions})")

    def check_rate(connection: HTTPConnection) -> None:
        """Every attempt at a new session takes one of its client's tokens (refused and
        unauthenticated ones too, so guessing a token is limited as well)."""
        if limiter is None:
            return
        client = addresses.of(connection.client.host if connection.client else None,
                              connection.headers)
        if not limiter.allow(client):
            wait = max(1, math.ceil(limiter.retry_after(client)))
            log.info("rate limited %s (%s)", client, connection.url.path)
            raise HTTPError(429, f"too many new sessions from {client}: try again in {wait} s",
                            {"Retry-After": str(wait)})

    async def offer(request: Request) -> Response:
        try:
            check_rate(request)
            _check_token(request, config.token)
            sdp = _parse_offer(await _read_body(request))
            if not registry.reserve():
                raise refusal()
        except HTTPError as exc:
            return JSONResponse({"error": str(exc)}, exc.status, headers=exc.headers)
        peer = WebRTCPeer(agent, backends, ice_servers=config.ice_servers,
                          host_addresses=config.host_addresses, subscribers=config.subscribers,
                          input_timeout=config.input_timeout)
        try:
            answer = await peer.accept(sdp)
        except OfferError as exc:
            await peer.close("offer rejected")
            return JSONResponse({"error": str(exc)}, exc.status)
        except BaseException:
            await peer.close("failed to answer")
            raise
        finally:
            registry.release()
        registry.add(peer)
        return JSONResponse({"sdp": answer.sdp, "type": answer.type,
                             "session_id": peer.session_id})

    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()  # refusals below are close codes with a reason
        try:
            check_rate(websocket)
        except HTTPError as exc:
            await websocket.close(1008, str(exc))
            return
        provider = websocket.path_params["provider"]
        serializer = SERIALIZERS.get(provider)
        if serializer is None:
            await websocket.close(1008, f"no media-stream provider {provider!r}; known: "
                                        f"{', '.join(SERIALIZERS)}")
            return
        if not registry.reserve():
            await websocket.close(1013, str(refusal()))
            return
        call = MediaStreamCall(websocket, serializer(), agent, backends, token=config.token,
                               subscribers=config.subscribers)
        try:
            started = await call.start()
        finally:
            registry.release()
        if started:
            # The connection lasts as long as the call, whose task the registry owns (and
            # logs if it fails); cancelling this handler cancels the call.
            await asyncio.gather(registry.add(call), return_exceptions=True)

    async def twiml(request: Request) -> Response:
        token = config.token
        if token is not None and not hmac.compare_digest(
                request.query_params.get("token", "").encode(), token.encode()):
            return JSONResponse({"error": "a valid ?token= is required"}, 401)
        fields = dict(request.query_params)
        if request.method == "POST":  # Twilio's webhook: a form with the call's details
            try:
                fields.update(parse_qsl((await _read_body(request)).decode("utf-8", "replace")))
            except HTTPError as exc:
                return JSONResponse({"error": str(exc)}, exc.status)
        parameters = {ours: fields[theirs] for ours, theirs in (("from", "From"), ("to", "To"))
                      if fields.get(theirs)}
        if token is not None:
            parameters["token"] = token
        url = _stream_url(request, config.public_url, "twilio")
        return Response(twiml_connect_stream(url, parameters), media_type="application/xml")

    async def client_config(request: Request) -> Response:
        servers = [{"urls": s.urls, **({"username": s.username, "credential": s.credential}
                                      if s.username else {})} for s in config.ice_servers]
        return JSONResponse({"iceServers": servers, "tokenRequired": config.token is not None})

    async def health(request: Request) -> Response:
        load = WorkerLoad.measure(sessions=len(registry), capacity=config.max_sessions,
                                  full=registry.full, draining=registry.draining, meter=cpu)
        # asyncio tasks: a figure that must return to its idle value between sessions
        return JSONResponse({**load.as_json(), "tasks": len(asyncio.all_tasks())},
                            200 if load.status == "ok" else 503)

    async def metrics(request: Request) -> Response:
        from ..telemetry.prometheus import CONTENT_TYPE

        assert config.metrics is not None
        return Response(config.metrics.exposition(), media_type=CONTENT_TYPE)

    async def index(request: Request) -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await registry.close_all()
        if config.close_backends:
            await backend_registry.aclose(backends.values())

    app = Starlette(routes=[
        Route("/", index),
        Route("/api/config", client_config),
        Route("/api/offer", offer, methods=["POST"]),
        Route("/health", health),
        WebSocketRoute("/media-stream/{provider}", media_stream),
        Route("/twilio/twiml", twiml, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        *([Route("/metrics", metrics)] if config.metrics is not None else []),
    ], lifespan=lifespan)
    app.state.registry = registry
    return app


def _stream_url(request: Request, public_url: str | None, provider: str) -> str:
    """Where the provider should open the media stream: the public URL's host (ws:// only for
    an http:// one, as in a test), else the request's Host over wss:// (providers require
    TLS, which a tunnel or proxy in front of the server provides)."""
    if public_url:
        base = urlsplit(public_url)
        scheme = "ws" if base.scheme in ("http", "ws") else "wss"
        return f"{scheme}://{base.netloc}{base.path.rstrip('/')}/media-stream/{provider}"
    return f"wss://{request.headers.get('host', request.url.netloc)}/media-stream/{provider}"


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
    try:  # WebRTCPeer.accept checks it too; here a bad offer costs no slot or peer connection
        check_offer(sdp)
    except OfferError as exc:
        raise HTTPError(exc.status, str(exc)) from exc
    return sdp
