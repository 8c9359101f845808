"""Property-based fuzzing of the realtime message schema (Hypothesis).

Any text a client can send must end as a parsed message or a typed client error
(`bad_request`, `unsupported`, `too_large`): never `internal`, never a traceback in the log.
"""

import asyncio
import json
import logging

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.protocol.errors import FramecastError
from client.protocol.events import MESSAGE_TYPES, parse_client_message
from tests.server_harness import connect, start_server

CLIENT_ERRORS = {"bad_request", "unsupported", "too_large"}
FIELDS = ["type", "prompt", "seed", "format", "image", "model", "transition_chunks", "event_id", "audio"]
BIG = "__BIG_INTEGER__"  # replaced by thousands of digits after json.dumps (which refuses > 4300)

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=40) | st.just(BIG) | st.sampled_from(["jpeg", "fmp4", "data:image/png;base64,AAAA", ""]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(MESSAGE_TYPES) | json_values},
    optional={field: json_values for field in FIELDS[1:]},
)


@st.composite
def wire_texts(draw) -> str:
    """A client text message: a schema-shaped object (maybe with huge integers), or any text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    text = json.dumps(draw(messages))
    return text.replace(json.dumps(BIG), "9" * draw(st.integers(4000, 6000)))


@settings(max_examples=400, deadline=None)
@given(wire_texts())
def test_any_text_parses_or_gets_a_client_error(text):
    try:
        parse_client_message(text, max_prompt_chars=2000)
    except FramecastError as error:
        assert error.code in CLIENT_ERRORS, (error.code, error.message)
        assert "Traceback" not in error.message and "\n" not in error.message


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("fuzz"), max_message_burst=1000, max_messages_per_s=1000) as srv:
        yield srv


async def _exchange(url: str, texts: list[str]) -> tuple[list[dict], int | None]:
    """Send the texts then a ping; the events until the pong (or the close)."""
    events = []
    async with connect(url) as ws:
        try:
            for text in texts:
                await ws.send(text)
            await ws.send('{"type": "session.ping"}')
            while True:
                message = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(message, bytes):
                    continue
                events.append(json.loads(message))
                if events[-1]["type"] == "pong":
                    break
        except websockets.ConnectionClosed:
            pass
        await ws.close()
    return events, ws.close_code


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.lists(wire_texts(), min_size=1, max_size=6))
def test_fuzzed_messages_over_a_real_socket(server, caplog, texts):
    caplog.set_level(logging.WARNING)
    events, close_code = asyncio.run(_exchange(server.ws_url, texts))
    codes = [e["code"] for e in events if e["type"] == "error"]
    assert set(codes) <= CLIENT_ERRORS, codes
    stopped = any(e["type"] == "session.done" for e in events)
    assert events and (events[-1]["type"] == "pong" or stopped), events[-3:]
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
