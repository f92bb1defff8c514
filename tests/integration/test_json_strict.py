"""Strict JSON on the wire: numbers are delivered exactly as published or refused, never
altered; an unescaped control character (U+0000..U+001F) in a string is not JSON.

json-c, the daemon's parser, clamps integers past 64 bits without an error and takes raw
control characters in strings; the daemon must refuse both (docs/protocol.md, "Numbers and
strings"). Every check reads the raw text of the frames, since Python's json would hide a
changed spelling (1.10 and 1.1 load the same). Each case runs beside a control client that
must keep getting pongs.
"""

import asyncio
import json

import pytest

from conftest import barrier, connect_user, http_request, recv_json, request, run


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

async def publish_raw(port, body):
    """POST body (a str, sent as is) to /api/publish from asyncio; returns the HTTPResult."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None, lambda: http_request(port, "POST", "/api/publish", body=body.encode()))


async def assert_control_healthy(control):
    """The control client, untouched by the case, still gets a pong for a ping."""
    reply = await request(control, {"type": "ping"})
    assert reply["type"] == "pong", reply


def single(message_text):
    """A publish body for alice, with message_text (raw JSON text) as the message."""
    return '{"target":{"user_id":"alice"},"message":' + message_text + "}"


# Values at the edges of what json-c holds exactly (int64, and uint64 above INT64_MAX), and
# numbers json-c keeps as text. Spelled as the publisher wrote them.
EXACT_VALUES = [
    "0", "-1", "9223372036854775807", "9223372036854775808", "18446744073709551615",
    "-9223372036854775808", "1e400", "1.10", "-0.0", "1E+9", "0.30000000000000004",
]

OUT_OF_RANGE = ["18446744073709551616", "-9223372036854775809", "123456789012345678901234567890"]


# --------------------------------------------------------------------------------------------
# POST /api/publish
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    (single('{"type":"deal_alert","price":123456789012345678901234567890}'), "message.price"),
    (single('{"type":"deal_alert","price":18446744073709551616}'), "message.price"),
    (single('{"type":"deal_alert","price":-9223372036854775809}'), "message.price"),
    (single('{"type":"deal_alert","meta":{"ids":[1,2,99999999999999999999]}}'),
     "message.meta.ids[2]"),
    ("[" + single('{"type":"deal_alert","price":1}') + ","
     + single('{"type":"deal_alert","price":2}') + ","
     + single('{"type":"deal_alert","price":3}') + ","
     + single('{"type":"deal_alert","price":123456789012345678901234567890}') + "]",
     "[3].message.price"),
])
def test_publish_integer_outside_64_bits_is_400_and_sends_nothing(daemon, body, field):
    async def main():
        control, _ = await connect_user(daemon.port, "control")
        alice, _ = await connect_user(daemon.port, "alice")
        r = await publish_raw(daemon.port, body)
        assert r.status == 400, r
        assert r.json is not None, r.raw
        assert r.json.get("field") == field, r.json
        assert "64-bit" in r.json["error"], r.json
        assert await barrier(alice) == [], "a refused publish was delivered"
        await assert_control_healthy(control)
        await alice.close()
        await control.close()

    run(main())


@pytest.mark.parametrize("body, field", [
    (single('{"type":"deal_alert","title":"a\x01b"}'), "message.title"),
    (single('{"type":"deal_alert","tags":["ok","\x1f"]}'), "message.tags[1]"),
    ("[" + single('{"type":"deal_alert"}') + "," + single('{"type":"deal_alert","t":"\t"}') + "]",
     "[1].message.t"),
])
def test_publish_raw_control_character_is_400_and_sends_nothing(daemon, body, field):
    async def main():
        control, _ = await connect_user(daemon.port, "control")
        alice, _ = await connect_user(daemon.port, "alice")
        r = await publish_raw(daemon.port, body)
        assert r.status == 400, r
        assert r.json is not None, r.raw
        assert r.json.get("field") == field, r.json
        assert r.json["error"].startswith("body is not valid JSON"), r.json
        assert "control character" in r.json["error"], r.json
        assert await barrier(alice) == [], "a refused publish was delivered"
        await assert_control_healthy(control)
        await alice.close()
        await control.close()

    run(main())


def test_publish_delivers_numbers_byte_exact(daemon):
    """Each value arrives spelled as published, in the raw text of the frame."""
    members = ",".join(f'"v{i}":{v}' for i, v in enumerate(EXACT_VALUES))
    message = ('{"type":"deal_alert",' + members + ',"big":"123456789012345678901234567890",'
               '"esc":"a\\u0001b\\u001f"}')

    async def main():
        control, _ = await connect_user(daemon.port, "control")
        alice, _ = await connect_user(daemon.port, "alice")
        r = await publish_raw(daemon.port, single(message))
        assert r.status == 200, r
        assert r.json["recipients"] == 1, r.json
        raw = await alice.recv()
        assert isinstance(raw, str)
        # The message as published, then the server's timestamp.
        assert raw.startswith(message[:-1] + ',"timestamp":'), raw
        got = json.loads(raw)
        assert got["v4"] == 18446744073709551615 and got["v5"] == -9223372036854775808
        assert got["esc"] == "a\x01b\x1f"
        await assert_control_healthy(control)
        await alice.close()
        await control.close()

    run(main())


# --------------------------------------------------------------------------------------------
# WebSocket frames
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_ws_integer_outside_64_bits_is_invalid_number(daemon, value):
    async def main():
        control, _ = await connect_user(daemon.port, "control")
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, '{"type":"x","n":' + value + "}")
        assert reply["type"] == "error", reply
        assert reply["code"] == "invalid_number", reply
        assert '"n"' in reply["message"], reply
        # Deeper: the message names the path.
        reply = await request(ws, '{"type":"x","a":{"b":[0,' + value + "]}}")
        assert reply["code"] == "invalid_number", reply
        assert '"a.b[1]"' in reply["message"], reply
        # The connection stays open and keeps working.
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await assert_control_healthy(control)
        await ws.close()
        await control.close()

    run(main())


@pytest.mark.parametrize("value", EXACT_VALUES)
def test_ws_ack_echoes_numbers_byte_exact(daemon, value):
    sent = '{"type":"x","n":' + value + ',"a":[' + value + "]}"

    async def main():
        control, _ = await connect_user(daemon.port, "control")
        ws, _ = await connect_user(daemon.port, "alice")
        await ws.send(sent)
        raw = await ws.recv()
        assert json.loads(raw)["type"] == "ack", raw
        assert '"received":' + sent in raw, raw
        await assert_control_healthy(control)
        await ws.close()
        await control.close()

    run(main())


@pytest.mark.parametrize("frame, field", [
    ('{"type":"x","s":"a\x01b"}', "s"),
    ('{"type":"x","m":{"list":["ok","\x1f"]}}', "m.list[1]"),
    ('{"type":"x","s":"line\nbreak"}', "s"),
])
def test_ws_raw_control_character_is_invalid_json(daemon, frame, field):
    async def main():
        control, _ = await connect_user(daemon.port, "control")
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, frame)
        assert reply["type"] == "error", reply
        assert reply["code"] == "invalid_json", reply
        assert "control character" in reply["message"], reply
        assert f'"{field}"' in reply["message"], reply
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await assert_control_healthy(control)
        await ws.close()
        await control.close()

    run(main())


def test_ws_escaped_control_character_and_del_are_fine(daemon):
    sent = '{"type":"x","s":"a\\u0001b\\u001f","d":"\x7f"}'

    async def main():
        control, _ = await connect_user(daemon.port, "control")
        ws, _ = await connect_user(daemon.port, "alice")
        await ws.send(sent)
        reply = await recv_json(ws)
        assert reply["type"] == "ack", reply
        assert reply["received"] == {"type": "x", "s": "a\x01b\x1f", "d": "\x7f"}
        await assert_control_healthy(control)
        await ws.close()
        await control.close()

    run(main())
