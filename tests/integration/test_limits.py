"""Limits on what a client may send: frame size (with fragments), UTF-8, subscriptions."""

import json

from conftest import (
    OP_CLOSE, OP_CONT, OP_TEXT, RawWS, close_code, connect_user, expect_close, http_get,
    request, run, t, wait_until,
)


def message_of_size(n):
    """A valid JSON object with an unknown type, exactly n bytes long."""
    base = json.dumps({"type": "padded", "pad": ""}, separators=(",", ":"))
    text = json.dumps({"type": "padded", "pad": "x" * (n - len(base))}, separators=(",", ":"))
    assert len(text.encode()) == n
    return text


def test_default_max_message_size_is_4096(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, message_of_size(4096))
        assert reply["type"] == "ack", reply
        await ws.send(message_of_size(4097))
        exc, _ = await expect_close(ws)
        assert close_code(exc) == 1009, f"closed with {exc!r}"

    run(main())


def test_configured_max_message_size(dealwire):
    d = dealwire("--max-message-size", "200")

    async def main():
        ws, _ = await connect_user(d.port, "alice")
        assert (await request(ws, message_of_size(200)))["type"] == "ack"
        await ws.send(message_of_size(201))
        exc, _ = await expect_close(ws)
        assert close_code(exc) == 1009, f"closed with {exc!r}"

    run(main())


def test_oversize_binary_frame_is_closed_1009(dealwire):
    d = dealwire("--max-message-size", "200")

    async def main():
        ws, _ = await connect_user(d.port, "alice")
        await ws.send(b"\x00" * 1000)
        exc, _ = await expect_close(ws)
        assert close_code(exc) == 1009, f"closed with {exc!r}"

    run(main())


def test_fragmented_message_over_limit_is_closed_1009(dealwire):
    """Three fragments of 100 bytes each are each under the limit but 300 bytes together."""
    d = dealwire("--max-message-size", "256")

    async def main():
        ws, _ = await connect_user(d.port, "alice")
        text = message_of_size(300)
        await ws.send([text[:100], text[100:200], text[200:]])
        exc, _ = await expect_close(ws)
        assert close_code(exc) == 1009, f"closed with {exc!r}"

    run(main())


def test_fragmented_message_under_limit_is_reassembled(dealwire):
    d = dealwire("--max-message-size", "256")

    async def main():
        ws, _ = await connect_user(d.port, "alice")
        text = message_of_size(256)
        reply = await request(ws, [text[:100], text[100:200], text[200:]])
        assert reply["type"] == "ack" and reply["received"] == json.loads(text), reply
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await ws.close()

    run(main())


def test_other_connections_survive_an_oversize_close(dealwire):
    d = dealwire("--max-message-size", "256")

    async def main():
        bad, _ = await connect_user(d.port, "alice")
        good, _ = await connect_user(d.port, "alice")
        await bad.send("x" * 1000)
        exc, _ = await expect_close(bad)
        assert close_code(exc) == 1009
        assert (await request(good, {"type": "ping"}))["type"] == "pong"
        wait_until(lambda: http_get(d.port, "/api/websocket/users/alice")[1]
                   .get("connections") == 1, t(5), "the closed connection to be removed")
        await good.close()

    run(main())


def read_close_code(raw):
    """Read frames until a close frame; returns its code (None if empty)."""
    for _ in range(100):
        fin, op, payload = raw.recv_frame(timeout=10)
        if op == OP_CLOSE:
            return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
    raise AssertionError("no close frame")


def test_invalid_utf8_is_closed_1007(daemon):
    raw = RawWS(daemon.port, "alice")
    try:
        assert raw.recv_json()["type"] == "connection_established"
        raw.send_frame(OP_TEXT, b"\xff\xfe")
        assert read_close_code(raw) == 1007
    finally:
        raw.close()


def test_invalid_utf8_inside_json_string_is_closed_1007(daemon):
    raw = RawWS(daemon.port, "alice")
    try:
        assert raw.recv_json()["type"] == "connection_established"
        raw.send_frame(OP_TEXT, b'{"type":"custom","s":"\xc3\x28"}')
        assert read_close_code(raw) == 1007
    finally:
        raw.close()


def test_invalid_utf8_in_a_later_fragment_is_closed_1007(daemon):
    raw = RawWS(daemon.port, "alice")
    try:
        assert raw.recv_json()["type"] == "connection_established"
        raw.send_frame(OP_TEXT, b'{"type":"custom",', fin=False)
        raw.send_frame(OP_CONT, b'"s":"\xed\xa0\x80"}', fin=True)  # a UTF-16 surrogate
        assert read_close_code(raw) == 1007
    finally:
        raw.close()


def test_max_subscriptions(dealwire):
    d = dealwire("--max-subscriptions", "3")

    async def main():
        ws, _ = await connect_user(d.port, "alice")
        for ch in ("c1", "c2", "c3"):
            assert (await request(ws, {"type": "subscribe", "channel": ch}))["type"] == \
                "notification"
        reply = await request(ws, {"type": "subscribe", "channel": "c4"})
        assert reply["type"] == "error" and reply["code"] == "too_many_subscriptions", reply
        # Subscribing again to a channel it already has is still fine at the limit.
        reply = await request(ws, {"type": "subscribe", "channel": "c2"})
        assert reply["type"] == "notification" and reply["action"] == "subscribe", reply
        stats = (await request(ws, {"type": "get_stats"}))["stats"]
        assert sorted(stats["subscriptions"]) == ["c1", "c2", "c3"]
        # After leaving one, there is room again.
        await request(ws, {"type": "unsubscribe", "channel": "c1"})
        reply = await request(ws, {"type": "subscribe", "channel": "c4"})
        assert reply["type"] == "notification", reply
        # The limit is per connection: another connection of the same user has its own.
        other, _ = await connect_user(d.port, "alice")
        for ch in ("d1", "d2", "d3"):
            assert (await request(other, {"type": "subscribe", "channel": ch}))["type"] == \
                "notification"
        await ws.close()
        await other.close()

    run(main())
