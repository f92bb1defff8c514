"""WebSocket protocol: handshake, every client command and its reply, every protocol error."""

import json
import socket
import struct

import pytest
import websockets

from conftest import (
    RawWS, OP_TEXT, OP_CONT, apublish, assert_iso, assert_user_stats, barrier, connect_user,
    close_all, handshake_status, is_int, recv_json, request, run, ws_connect,
)


# --------------------------------------------------------------------------------------------
# Handshake and welcome
# --------------------------------------------------------------------------------------------

def test_welcome_message(dealwire):
    d = dealwire("--heartbeat-interval", "7", "--stale-timeout", "30")

    async def main():
        ws, w = await connect_user(d.port, "alice")
        assert w["type"] == "connection_established"
        assert w["user_id"] == "alice"
        assert isinstance(w["connection_id"], str) and w["connection_id"]
        assert_iso(w["server_time"], "server_time")
        assert_iso(w["timestamp"])
        assert is_int(w["heartbeat_interval"]) and w["heartbeat_interval"] == 7
        await ws.close()

    run(main())


# struct tcp_info (linux/tcp.h): tcpi_data_segs_in, the segments with data this end received.
TCP_INFO_DATA_SEGS_IN = 152


def test_the_101_and_the_welcome_arrive_in_one_segment(daemon):
    """The daemon corks the socket from the upgrade to the welcome: one packet to carry and to
    read per connection where there were two (connect rate)."""
    ws = RawWS(daemon.port, "corked")
    try:
        assert ws.recv_json()["type"] == "connection_established"
        info = ws.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        (segs,) = struct.unpack_from("I", info, TCP_INFO_DATA_SEGS_IN)
        assert segs == 1, f"the 101 and the welcome came in {segs} segments"
    finally:
        ws.sock.close()


def test_welcome_default_heartbeat_interval_is_30(daemon):
    async def main():
        ws, w = await connect_user(daemon.port, "bob")
        assert w["heartbeat_interval"] == 30
        await ws.close()

    run(main())


def test_connection_ids_are_unique(daemon):
    async def main():
        pairs = [await connect_user(daemon.port, u) for u in ("u1", "u1", "u2")]
        ids = [w["connection_id"] for _, w in pairs]
        assert len(set(ids)) == 3, ids
        await close_all([ws for ws, _ in pairs])

    run(main())


@pytest.mark.parametrize("user_id", [
    "a",
    "A-Za-z0-9_.:@-",
    "user@example.com",
    "x" * 128,
])
def test_valid_user_ids_are_accepted(daemon, user_id):
    async def main():
        ws, w = await connect_user(daemon.port, user_id)
        assert w["user_id"] == user_id
        await ws.close()

    run(main())


@pytest.mark.parametrize("query", [
    None,                      # no query at all
    "",                        # empty query
    "foo=bar",                 # no user_id
    "user_id=",                # empty
    "user_id=" + "x" * 129,    # too long
    "user_id=a%20b",           # space
    "user_id=a%2Fb",           # slash
    "user_id=%C3%A9",          # non-ASCII
    "user_id=a%22b",           # quote
])
def test_invalid_user_id_is_refused_with_400(daemon, query):
    assert run(handshake_status(daemon.port, query=query or "")) == 400


def test_user_id_with_nul_is_refused(daemon):
    """libwebsockets drops a request whose URL decodes to a NUL while parsing it, before the
    daemon sees it: the handshake is refused by closing the connection (no 101), and the
    daemon keeps serving."""
    async def main():
        with pytest.raises((websockets.exceptions.InvalidStatusCode,
                            websockets.exceptions.InvalidMessage)):
            ws = await ws_connect(daemon.port, None, "/ws/events", "user_id=a%00b")
            await ws.close()
        ws, w = await connect_user(daemon.port, "after_nul")
        assert w["user_id"] == "after_nul"
        await ws.close()

    run(main())


@pytest.mark.parametrize("path", ["/ws/nope", "/nope", "/ws/events/extra", "/ws"])
def test_upgrade_on_other_path_is_refused_with_404(daemon, path):
    assert run(handshake_status(daemon.port, "alice", path=path)) == 404


# --------------------------------------------------------------------------------------------
# ping, ack echo
# --------------------------------------------------------------------------------------------

def test_ping_pong(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        for _ in range(3):
            reply = await request(ws, {"type": "ping"})
            assert reply["type"] == "pong", reply
            assert_iso(reply["timestamp"])
        await ws.close()

    run(main())


def test_unknown_type_is_acked_with_the_object_as_sent(daemon):
    sent = '{"type":"custom_event","z":1,"a":[1,"two",{"x":null}],"nested":{"b":true,"a":2.5},"s":"\\u00e9t\\u00e9 \\"q\\""}'

    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        await ws.send(sent)
        raw = await ws.recv()
        reply = json.loads(raw)
        assert reply["type"] == "ack", reply
        assert_iso(reply["timestamp"])
        assert reply["received"] == json.loads(sent)
        # The echo keeps the client's field order.
        ordered = json.loads(raw, object_pairs_hook=list)
        received = dict(ordered)["received"]
        assert [k for k, _ in received] == ["type", "z", "a", "nested", "s"]
        await ws.close()

    run(main())


# --------------------------------------------------------------------------------------------
# subscribe / unsubscribe
# --------------------------------------------------------------------------------------------

def subscribed_reply(channel):
    return {"type": "notification", "message": f"Subscribed to {channel} updates",
            "level": "success", "action": "subscribe", "channel": channel}


def unsubscribed_reply(channel):
    return {"type": "notification", "message": f"Unsubscribed from {channel} updates",
            "level": "info", "action": "unsubscribe", "channel": channel}


def without_timestamp(msg):
    assert_iso(msg.get("timestamp"))
    return {k: v for k, v in msg.items() if k != "timestamp"}


def test_subscribe_reply(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, {"type": "subscribe", "channel": "hot_deals"})
        assert without_timestamp(reply) == subscribed_reply("hot_deals")
        stats = await request(ws, {"type": "get_stats"})
        assert stats["stats"]["subscriptions"] == ["hot_deals"]
        await ws.close()

    run(main())


def test_subscribe_twice_is_idempotent(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        first = await request(ws, {"type": "subscribe", "channel": "deals.eu:1"})
        second = await request(ws, {"type": "subscribe", "channel": "deals.eu:1"})
        assert without_timestamp(first) == without_timestamp(second) == subscribed_reply("deals.eu:1")
        stats = await request(ws, {"type": "get_stats"})
        assert stats["stats"]["subscriptions"] == ["deals.eu:1"]
        # One membership: a channel publish reaches this connection once.
        answer = await apublish(daemon.port, {"target": {"channel": "deals.eu:1"},
                                              "message": {"type": "notification", "n": 1}})
        assert answer["recipients"] == 1
        msg = await recv_json(ws)
        assert msg["type"] == "notification" and msg["n"] == 1
        extra = await barrier(ws)
        assert extra == [], f"duplicate delivery: {extra!r}"
        await ws.close()

    run(main())


@pytest.mark.parametrize("channel", [
    "",
    "a b",
    "x" * 65,
    "slash/channel",
    "at@sign",
    "caf\u00e9",
    123,
    None,
    ["hot_deals"],
])
def test_subscribe_invalid_channel(daemon, channel):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, {"type": "subscribe", "channel": channel})
        assert reply["type"] == "error" and reply["code"] == "invalid_channel", reply
        assert_iso(reply["timestamp"])
        stats = await request(ws, {"type": "get_stats"})
        assert stats["stats"]["subscriptions"] == []
        pong = await request(ws, {"type": "ping"})
        assert pong["type"] == "pong"
        await ws.close()

    run(main())


def test_subscribe_without_channel_field(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, {"type": "subscribe"})
        assert reply["type"] == "error" and reply["code"] == "invalid_channel", reply
        stats = await request(ws, {"type": "get_stats"})
        assert stats["stats"]["subscriptions"] == []
        await ws.close()

    run(main())


def test_subscribe_longest_valid_channel(daemon):
    channel = "A-z_0.9:" * 8  # 64 characters
    assert len(channel) == 64

    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, {"type": "subscribe", "channel": channel})
        assert without_timestamp(reply) == subscribed_reply(channel)
        await ws.close()

    run(main())


def test_unsubscribe_reply_and_effect(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        await request(ws, {"type": "subscribe", "channel": "hot_deals"})
        await request(ws, {"type": "subscribe", "channel": "trips"})
        reply = await request(ws, {"type": "unsubscribe", "channel": "hot_deals"})
        assert without_timestamp(reply) == unsubscribed_reply("hot_deals")
        stats = await request(ws, {"type": "get_stats"})
        assert stats["stats"]["subscriptions"] == ["trips"]
        answer = await apublish(daemon.port, {"target": {"channel": "hot_deals"},
                                              "message": {"type": "deal_alert", "n": 1}})
        assert answer["recipients"] == 0
        assert await barrier(ws) == []
        await ws.close()

    run(main())


def test_unsubscribe_when_not_subscribed(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, {"type": "unsubscribe", "channel": "hot_deals"})
        assert reply["type"] == "error" and reply["code"] == "not_subscribed", reply
        assert_iso(reply["timestamp"])
        # Twice: the second unsubscribe of a channel is also an error.
        await request(ws, {"type": "subscribe", "channel": "hot_deals"})
        await request(ws, {"type": "unsubscribe", "channel": "hot_deals"})
        reply = await request(ws, {"type": "unsubscribe", "channel": "hot_deals"})
        assert reply["type"] == "error" and reply["code"] == "not_subscribed", reply
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await ws.close()

    run(main())


def test_subscriptions_are_per_connection(daemon):
    """A channel publish reaches the subscribed connection, not the user's other one."""
    async def main():
        a1, _ = await connect_user(daemon.port, "alice")
        a2, _ = await connect_user(daemon.port, "alice")
        await request(a1, {"type": "subscribe", "channel": "hot_deals"})
        answer = await apublish(daemon.port, {"target": {"channel": "hot_deals"},
                                              "message": {"type": "deal_alert", "n": 1}})
        assert answer["recipients"] == 1
        assert (await recv_json(a1))["n"] == 1
        assert await barrier(a2) == []
        await close_all([a1, a2])

    run(main())


# --------------------------------------------------------------------------------------------
# get_stats
# --------------------------------------------------------------------------------------------

def test_get_stats(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        other, _ = await connect_user(daemon.port, "alice")
        await request(ws, {"type": "subscribe", "channel": "hot_deals"})
        for i in range(3):
            await apublish(daemon.port, {"target": {"user_id": "alice"},
                                         "message": {"type": "notification", "i": i}})
            assert (await recv_json(ws))["i"] == i
        reply = await request(ws, {"type": "get_stats"})
        assert reply["type"] == "stats", reply
        assert reply["user_id"] == "alice"
        assert_iso(reply["timestamp"])
        stats = reply["stats"]
        assert_user_stats(stats, "alice")
        assert stats["connections"] == 2
        assert "hot_deals" in stats["subscriptions"]
        # welcome + subscribe reply + 3 notifications on this connection alone
        assert stats["messages_sent"] >= 5, stats
        assert stats["messages_failed"] == 0
        assert stats["messages_dropped"] == 0
        assert stats["queue_size"] <= 100
        await close_all([ws, other])

    run(main())


# --------------------------------------------------------------------------------------------
# Errors that keep the connection open
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "not json",
    "{",
    '{"type": "ping"',
    "{'type': 'ping'}",
    '{"type": "ping"} trailing',
    "",
])
def test_invalid_json(daemon, text):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, text)
        assert reply["type"] == "error" and reply["code"] == "invalid_json", reply
        assert isinstance(reply["message"], str) and reply["message"]
        assert_iso(reply["timestamp"])
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await ws.close()

    run(main())


@pytest.mark.parametrize("text", [
    "[1, 2]",
    '"ping"',
    "42",
    "null",
    "true",
    "{}",
    '{"type": 5}',
    '{"type": null}',
    '{"type": ["ping"]}',
    '{"channel": "hot_deals"}',
])
def test_invalid_message(daemon, text):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, text)
        assert reply["type"] == "error" and reply["code"] == "invalid_message", reply
        assert isinstance(reply["message"], str)
        assert_iso(reply["timestamp"])
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await ws.close()

    run(main())


def test_binary_frame_is_refused_with_an_error(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        reply = await request(ws, b'{"type":"ping"}')
        assert reply["type"] == "error" and reply["code"] == "binary_not_supported", reply
        assert_iso(reply["timestamp"])
        reply = await request(ws, b"\x00\x01\xff")
        assert reply["code"] == "binary_not_supported", reply
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await ws.close()

    run(main())


def test_many_errors_in_a_row_keep_the_connection(dealwire):
    daemon = dealwire("--rate-burst", "100")  # 51 messages at once: within the rate limit

    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        for i in range(50):
            await ws.send(["nope", "[]", b"bin"][i % 3])
        codes = [(await recv_json(ws))["code"] for _ in range(50)]
        assert codes == ["invalid_json", "invalid_message", "binary_not_supported"] * 16 + \
            ["invalid_json", "invalid_message"]
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await ws.close()

    run(main())


# --------------------------------------------------------------------------------------------
# Fragmented messages (reassembly)
# --------------------------------------------------------------------------------------------

def test_fragmented_ping_gets_pong(daemon):
    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        await ws.send(['{"ty', 'pe": "pi', 'ng"}'])
        reply = await recv_json(ws)
        assert reply["type"] == "pong", reply
        await ws.send(['{"type": "subscribe", ', '"channel": "hot_deals"}'])
        reply = await recv_json(ws)
        assert without_timestamp(reply) == subscribed_reply("hot_deals")
        await ws.close()

    run(main())


def test_utf8_character_split_across_fragments(daemon):
    """A valid multi-byte character cut between two fragments is valid UTF-8 once reassembled."""
    raw = RawWS(daemon.port, "alice")
    try:
        assert raw.recv_json()["type"] == "connection_established"
        body = '{"type":"custom","s":"\u00e9"}'.encode()
        cut = body.index(b"\xc3") + 1  # between the two bytes of é
        raw.send_frame(OP_TEXT, body[:cut], fin=False)
        raw.send_frame(OP_CONT, body[cut:], fin=True)
        reply = raw.recv_json()
        assert reply["type"] == "ack", reply
        assert reply["received"] == {"type": "custom", "s": "\u00e9"}
    finally:
        raw.close()
