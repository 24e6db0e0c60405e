"""Per-client rate limits on the server's session entry points (``/api/offer`` and the
media-stream WebSocket), over real loopback sockets: clients at 127.0.0.1 and 127.0.0.2 are
two addresses, and X-Forwarded-For is believed only from a trusted proxy."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.datastructures import Headers
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from webrtc_harness import Client, running_server, until

from voiceagent import Agent
from voiceagent.errors import ConfigError
from voiceagent.ratelimit import RateLimitOptions
from voiceagent.server import ServerConfig, create_app
from voiceagent.server.client_address import ClientAddresses
from voiceagent.session import resolve_backends

AGENT = Agent("You are a friendly voice assistant. Answer in one short sentence.")
JUNK_OFFER = b'{"sdp": "not an offer"}'  # a 400 once past the limit: no session is made


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(AGENT)


def serve(backends, **options):
    return create_app(AGENT, backends, ServerConfig(host_addresses=["127.0.0.1"], **options))


def http_from(url: str, address: str) -> httpx.AsyncClient:
    """An HTTP client whose connections come from ``address`` (any 127.x works on Linux)."""
    return httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(
        local_address=address))


async def post_offer(http: httpx.AsyncClient, forwarded_for: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    res = await http.post("/api/offer", content=JUNK_OFFER, headers=headers)
    return res.status_code


def test_forwarded_for_is_believed_only_from_a_trusted_proxy():
    addresses = ClientAddresses(["10.0.0.0/8", "::1"])
    forwarded = Headers({"x-forwarded-for": "198.51.100.9, 203.0.113.5, 10.1.2.3"})
    assert addresses.of("192.0.2.1", forwarded) == "192.0.2.1"  # anyone: header ignored
    # from a proxy: the right-most hop that is not a proxy (the left ones are forgeable)
    assert addresses.of("10.0.0.1", forwarded) == "203.0.113.5"
    assert addresses.of("::1", Headers({"x-forwarded-for": "2001:db8::7"})) == "2001:db8::7"
    assert addresses.of("10.0.0.1", Headers()) == "10.0.0.1"
    assert addresses.of("10.0.0.1", Headers({"x-forwarded-for": "10.0.0.2"})) == "10.0.0.2"
    assert ClientAddresses().of("10.0.0.1", forwarded) == "10.0.0.1"
    assert ClientAddresses().of(None, Headers()) == "unknown"
    with pytest.raises(ConfigError, match="not an IP address"):
        ClientAddresses(["proxy.example.com"])


async def test_offers_over_the_limit_get_429_while_another_address_gets_through(backends):
    app = serve(backends, rate_limit=RateLimitOptions(per_minute=6, burst=2))
    async with running_server(app) as url, http_from(url, "127.0.0.1") as flood, \
            http_from(url, "127.0.0.2") as other:
        assert [await post_offer(flood) for _ in range(2)] == [400, 400]
        res = await flood.post("/api/offer", content=JUNK_OFFER)
        assert res.status_code == 429
        assert 1 <= int(res.headers["retry-after"]) <= 10
        error = res.json()["error"]
        assert "too many new sessions from 127.0.0.1" in error and "\n" not in error
        assert res.text == json.dumps({"error": error}, separators=(",", ":"))
        assert (await flood.get("/health")).status_code == 200  # only new sessions count

        client = Client()  # a real peer from the other address is answered
        try:
            await client.connect(other)
            assert len(app.state.registry) == 1
        finally:
            await client.pc.close()
        await until(lambda: len(app.state.registry) == 0)
        assert await post_offer(flood) == 429  # and the flood stays limited


async def test_no_limit_when_turned_off(backends):
    app = serve(backends, rate_limit=None)
    async with running_server(app) as url, http_from(url, "127.0.0.1") as http:
        assert {await post_offer(http) for _ in range(30)} == {400}


async def test_forwarded_for_counts_only_from_the_trusted_proxy(backends):
    app = serve(backends, rate_limit=RateLimitOptions(per_minute=1, burst=1),
                trusted_proxies=["127.0.0.2"])
    async with running_server(app) as url, http_from(url, "127.0.0.1") as direct, \
            http_from(url, "127.0.0.2") as proxy:
        # Not a proxy: its X-Forwarded-For is ignored, a new address per offer buys nothing.
        assert await post_offer(direct, "203.0.113.1") == 400
        assert await post_offer(direct, "203.0.113.2") == 429
        # The trusted proxy: each client behind it has its own allowance ...
        assert await post_offer(proxy, "198.51.100.1") == 400
        assert await post_offer(proxy, "198.51.100.1") == 429
        assert await post_offer(proxy, "198.51.100.2") == 400
        # ... which a client cannot escape by writing hops of its own before the proxy's.
        assert await post_offer(proxy, "192.0.2.77, 198.51.100.2") == 429


async def test_a_media_stream_over_the_limit_is_closed_with_1008_and_the_reason(backends):
    app = serve(backends, rate_limit=RateLimitOptions(per_minute=1, burst=1))
    async with running_server(app) as url:
        ws_url = url.replace("http://", "ws://") + "/media-stream/twilio"

        def socket(address: str):
            return connect(ws_url, proxy=None, open_timeout=5, close_timeout=2,
                           local_addr=(address, 0))

        async with socket("127.0.0.1") as first:
            await first.send(json.dumps({"event": "stop", "streamSid": "MZ1"}))
            with pytest.raises(ConnectionClosed) as closed:
                await first.recv()
            assert closed.value.rcvd.reason == "stop before start"  # past the limiter
        async with socket("127.0.0.1") as second:
            with pytest.raises(ConnectionClosed) as closed:
                await second.recv()
            assert closed.value.rcvd.code == 1008
            assert closed.value.rcvd.reason.startswith(
                "too many new sessions from 127.0.0.1: try again in ")
        async with socket("127.0.0.2") as other:  # another address still gets in
            await other.send(json.dumps({"event": "stop", "streamSid": "MZ2"}))
            with pytest.raises(ConnectionClosed) as closed:
                await other.recv()
            assert closed.value.rcvd.reason == "stop before start"
