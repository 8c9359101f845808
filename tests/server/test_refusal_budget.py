"""Image attackers (issue 18, finding 3 continued): a client whose input is refused over and over
is throttled by a refusal budget per client address, and one address may hold only so many
WebSockets. Checked by counts (messages the server processed, connections it admitted), against a
real uvicorn on 127.0.0.1 (model tiny): every client here has the same address.
"""

import asyncio
import base64
import io
import json

import pytest
import websockets
from PIL import Image

from server.limits import REFUSAL_OVERHEAD_BYTES, ClientBudgets
from tests.server_harness import connect, next_event, send, start_server

PER_CLIENT = 3
ATTACKS = 8  # refused session.starts one attacker sends without waiting for answers
QUIET_S = 1.5  # how long "no further answer" is watched for (the budget needs hours to refill)


def _thin_start() -> str:
    """session.start with a 1 x 16,000,000 PNG: legal by pixels, refused (too_large) at its header."""
    buf = io.BytesIO()
    Image.new("L", (16_000_000, 1)).save(buf, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return json.dumps({"type": "session.start", "prompt": "attack", "image": image})


ATTACK = _thin_start()
COST = len(ATTACK) + REFUSAL_OVERHEAD_BYTES
ANSWERED = 3  # budget 2.5 attacks: read at 2.5, 1.5 and 0.5 attacks left, then in debt


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("budget"), max_connections_per_client=PER_CLIENT,
                      refused_bytes_burst=int(2.5 * COST), refused_bytes_per_s=1.0,  # ~no refill during the test
                      max_messages_per_s=100, max_message_burst=100, idle_timeout_s=60) as srv:
        yield srv


def metric(srv, name: str) -> float:
    return srv.app.state.framecast.metrics.registry.get_sample_value(name) or 0.0


async def _answers(ws, seconds: float) -> list[dict]:
    """The JSON events that arrive within `seconds`."""
    events = []
    try:
        while True:
            message = await asyncio.wait_for(ws.recv(), seconds)
            if isinstance(message, str) and json.loads(message)["type"] != "stats":
                events.append(json.loads(message))
    except asyncio.TimeoutError:
        return events


async def _until(check, what: str, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_refused_starts_are_throttled_per_client_but_a_clean_session_is_not(server):
    async def scenario():
        async with connect(server.ws_url) as victim, connect(server.ws_url) as attacker:
            await send(victim, {"type": "session.start", "prompt": "the victim", "seed": 1})
            assert (await next_event(victim, "session.started", timeout=120))["type"] == "session.started"
            for _ in range(ATTACKS):  # pipelined: the server reads them as fast as it wants
                await attacker.send(ATTACK)
            await _until(lambda: metric(server, "framecast_throttled_reads_total") >= 1
                         or metric(server, "framecast_refused_messages_total") >= ATTACKS, "the attacks read")
            answers = await _answers(attacker, QUIET_S)
            # the victim's session was never refused: the attacker's debt does not slow it
            await send(victim, {"type": "session.ping"})
            pong = await next_event(victim, "pong")
            # a new socket from the same address, without a session, waits for the budget too
            async with connect(server.ws_url) as newcomer:
                await send(newcomer, {"type": "session.ping"})
                newcomer_answers = await _answers(newcomer, QUIET_S)
            await send(victim, {"type": "session.stop"})
            await next_event(victim, "session.done")
            return answers, pong, newcomer_answers

    answers, pong, newcomer_answers = asyncio.run(scenario())
    assert [a["code"] for a in answers] == ["too_large"] * ANSWERED, answers
    assert metric(server, "framecast_refused_messages_total") == ANSWERED
    assert pong["type"] == "pong"
    assert newcomer_answers == []


def test_connections_per_client_address_are_capped(server):
    async def scenario():
        held = [await connect(server.ws_url) for _ in range(PER_CLIENT)]
        try:
            async with connect(server.ws_url) as extra:
                error = await next_event(extra, "error")
                await asyncio.wait_for(extra.wait_closed(), 30)
                return error, extra.close_code
        finally:
            for ws in held:
                await ws.close()

    error, close_code = asyncio.run(scenario())
    assert error["code"] == "capacity" and "one client" in error["message"]
    assert close_code == 1013


def test_client_budgets_charge_refill_and_forget():
    now = [0.0]
    budgets = ClientBudgets(rate=1000.0, burst=10_000, clock=lambda: now[0])
    assert budgets.wait_s("a") == 0.0
    budgets.charge("a", 10_000)  # 10,000 + overhead: in debt by the overhead
    assert budgets.wait_s("a") == pytest.approx(REFUSAL_OVERHEAD_BYTES / 1000)
    assert budgets.wait_s("b") == 0.0  # another address is not affected
    budgets.charge("a", 10**9)  # the debt is at most one burst deep
    assert budgets.wait_s("a") == pytest.approx(10.0)
    now[0] += 10.0
    assert budgets.wait_s("a") == 0.0 and len(budgets) == 1
    now[0] += 10.0  # refilled completely: forgotten
    assert budgets.wait_s("a") == 0.0 and len(budgets) == 0


@pytest.mark.parametrize("trusted", [True, False])
def test_the_cap_keys_on_the_forwarded_address_from_a_trusted_proxy(tmp_path, trusted):
    """Behind a gateway every socket comes from its address: with FRAMECAST_FORWARDED_ALLOW_IPS
    naming the gateway (here *, what docker/compose.yaml sets) each client's X-Forwarded-For is its
    address, so two clients hold a socket each under a cap of one; from an untrusted proxy the header
    is ignored and the second socket is refused."""
    allow = "*" if trusted else "192.0.2.1"  # not the test's 127.0.0.1

    async def scenario(srv):
        first = await connect(srv.ws_url, additional_headers={"X-Forwarded-For": "198.51.100.1"})
        try:
            async with connect(srv.ws_url, additional_headers={"X-Forwarded-For": "198.51.100.2"}) as second:
                try:
                    await send(second, {"type": "session.ping"})
                except websockets.ConnectionClosed:  # refused: its error event came first
                    pass
                return await next_event(second)
        finally:
            await first.close()

    with start_server(tmp_path, max_connections_per_client=1, forwarded_allow_ips=allow) as srv:
        event = asyncio.run(scenario(srv))
    if trusted:
        assert event["type"] == "pong"
    else:
        assert event["type"] == "error" and event["code"] == "capacity"

