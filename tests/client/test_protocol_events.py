"""The realtime JSON messages (client/protocol/events.py): strict parsing with specific error codes,
server events that dump to exactly the documented fields, and the client's event check."""

import json

import pytest

from client.protocol.errors import FramecastError, ProtocolError
from client.protocol.events import (
    SessionDone, SessionStart, SessionStarted, SessionUpdate, SessionUpdateApplied, Stats, parse_client_message,
    parse_server_event,
)


def parse(obj, limit=100):
    return parse_client_message(obj if isinstance(obj, str) else json.dumps(obj), max_prompt_chars=limit)


def code_of(obj, limit=100):
    with pytest.raises(FramecastError) as info:
        parse(obj, limit)
    return info.value.code, info.value.message


def test_valid_messages_parse():
    start = parse({"type": "session.start", "prompt": "a red ball", "seed": 3, "format": "fmp4", "extra": 1})
    assert isinstance(start, SessionStart) and start.seed == 3 and start.format == "fmp4"
    update = parse({"type": "session.update", "prompt": "blue", "event_id": "e1"})
    assert isinstance(update, SessionUpdate) and update.transition_chunks == 0
    assert parse({"type": "session.ping"}).type == "session.ping"


@pytest.mark.parametrize("message, code, field", [
    ("{not json", "bad_request", "JSON"),
    ("[1, 2]", "bad_request", "object"),
    ({"prompt": "x"}, "bad_request", "type"),
    ({"type": "session.dance"}, "unsupported", "session.dance"),
    ({"type": "session.start"}, "bad_request", "prompt"),
    ({"type": "session.start", "prompt": 5}, "bad_request", "prompt"),
    ({"type": "session.start", "prompt": "x", "seed": "5"}, "bad_request", "seed"),
    ({"type": "session.start", "prompt": "x", "seed": -1}, "bad_request", "seed"),
    ({"type": "session.start", "prompt": "x", "seed": True}, "bad_request", "seed"),
    ({"type": "session.start", "prompt": "x" * 101}, "too_large", "prompt"),
    ({"type": "session.update", "prompt": "x", "transition_chunks": 1.5}, "bad_request", "transition_chunks"),
])
def test_bad_messages_get_specific_codes(message, code, field):
    got_code, got_message = code_of(message)
    assert got_code == code and field in got_message


def test_audio_input_is_declared_in_session_start():
    start = parse({"type": "session.start", "prompt": "x", "audio": {"format": "pcm_s16le", "sample_rate": 16000}})
    assert start.audio.format == "pcm_s16le" and start.audio.sample_rate == 16000
    assert parse({"type": "session.start", "prompt": "x"}).audio is None
    assert code_of({"type": "session.start", "prompt": "x", "audio": {"sample_rate": "fast"}})[0] == "bad_request"


def test_server_events_dump_their_fields():
    started = SessionStarted(session_id="s", model="m", width=64, height=32, fps=16, chunk_frames=3, format="jpeg",
                             max_lead_s=1.0)
    assert started.dump() == {"type": "session.started", "session_id": "s", "model": "m", "width": 64, "height": 32,
                              "fps": 16, "chunk_frames": 3, "format": "jpeg", "max_lead_s": 1.0}
    assert SessionUpdateApplied(event_id=None, chunk_index=4, media_time_s=1.5, latency_s=0.4).dump()["event_id"] is None
    with pytest.raises(ValueError):
        SessionDone(reason="bored")
    with pytest.raises(ValueError):
        Stats(generated_fps=1.0, sent=1, dropped=0, queue_depth=0)  # chunk_latency_ms missing


def test_client_messages_leave_unset_fields_out():
    assert SessionStart.unchecked(prompt="p", seed=None, format="jpeg") == {"type": "session.start", "prompt": "p",
                                                                           "format": "jpeg"}
    assert SessionUpdate.unchecked(prompt="", event_id="e")["prompt"] == ""  # the server validates, not the client


def test_client_checks_known_server_events():
    assert parse_server_event('{"type": "pong"}') == {"type": "pong"}
    assert parse_server_event('{"type": "brand.new", "x": 1}')["x"] == 1  # newer servers may add events
    for bad in ('{"type": "session.started", "session_id": "s"}', "[1]", "{oops", '{"type": "stats", "sent": "many"}'):
        with pytest.raises(ProtocolError):
            parse_server_event(bad)
