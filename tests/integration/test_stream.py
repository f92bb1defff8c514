"""The publish socket, /ws/publish (docs/protocol.md, "Publishing over a WebSocket"): publish
bodies as text frames, one answer frame per frame in order with its status and request_id,
errors that name the field, the operator token, flow control when the publisher outruns the
daemon, the heartbeat, shutdown, and the order of durable and live messages with a database.
Driven with Debian's python3-websockets and a raw socket client (conftest.RawWS)."""

import asyncio
import errno
import json
import signal
import socket

import pytest
import websockets

from conftest import (OP_PING, RawWS, ServerClosed, SCALE, close_code, connect_user, http_get,
                      recv_json, run, t, wait_until, ws_connect)
from conftest_pg import pg_db, postgres  # noqa: F401

PATH = "/ws/publish"
WINDOW = 64  # stream.c's DW_STREAM_WINDOW


def note(user, i, **extra):
    return {"target": {"user_id": user},
            "message": {"type": "notification", "message": f"n{i}", "level": "info"}, **extra}


async def publisher(port, **kw):
    return await ws_connect(port, path=PATH, **kw)


def stream_stats(port):
    status, body = http_get(port, "/api/websocket/stats")
    assert status == 200, body
    return body["publish_sockets"]


def test_frames_are_answered_in_order_and_delivered_in_order(daemon):
    """Frames sent back to back, without waiting for answers, in every form: each answered in
    its turn with its request_id, and each message reaches the client in the order sent."""
    n = 400

    async def main():
        ws, _ = await connect_user(daemon.port, "alice")
        pub = await publisher(daemon.port)
        expected = []
        for i in range(n):
            if i % 4 == 0:
                body = note("alice", i, request_id=f"r{i}")
                expected.append((f"r{i}", 1))
            elif i % 4 == 1:
                body = note("alice", i, request_id=i)
                expected.append((i, 1))
            elif i % 4 == 2:
                body = {"request_id": f"b{i}", "batch": [note("alice", i), note("nobody", i)]}
                expected.append((f"b{i}", 1))
            else:
                body = [note("alice", i)]  # a plain batch: no request_id
                expected.append((None, 1))
            await pub.send(json.dumps(body))
        for i, (rid, recipients) in enumerate(expected):
            answer = await recv_json(pub, timeout=10)
            assert answer["status"] == 200, answer
            assert answer.get("request_id") == rid, (i, answer)
            assert answer["recipients"] == recipients, answer
            if i % 4 >= 2:
                assert len(answer["results"]) == (2 if i % 4 == 2 else 1), answer
            else:
                assert isinstance(answer["id"], str) and answer["id"], answer
        got = [(await recv_json(ws, timeout=10))["message"] for _ in range(n)]
        assert got == [f"n{i}" for i in range(n)]
        await pub.close()
        await ws.close()

    run(main())
    stats = stream_stats(daemon.port)
    assert stats["opened"] == 1 and stats["frames"] == n and stats["answered"] == n, stats
    assert stats["refused"] == 0, stats
    wait_until(lambda: stream_stats(daemon.port)["open"] == 0, t(5), "the socket counted closed")


def test_errors_name_the_field_and_the_socket_stays_open(dealwire):
    d = dealwire("--max-publish-size", "2048")

    async def main():
        pub = await publisher(d.port)
        cases = [
            ({"request_id": "a", "target": "everyone", "message": {"type": "deal_alert"}},
             400, "target", "a"),
            ({"request_id": "b", "target": "all", "message": {"type": "nope"}},
             400, "message.type", "b"),
            ({"request_id": "c", "target": "all"}, 400, "message", "c"),
            ({"request_id": ["x"], "target": "all", "message": {"type": "deal_alert"}},
             400, "request_id", None),
            ({"request_id": "", "target": "all", "message": {"type": "deal_alert"}},
             400, "request_id", None),
            ({"request_id": "e", "batch": {"target": "all"}}, 400, "batch", "e"),
            ({"request_id": "f", "batch": [note("u", 1), {"target": "all"}]},
             400, "[1].message", "f"),
            ({"request_id": "g", "target": "all", "message": {"type": "deal_alert",
                                                              "price": 18446744073709551616}},
             400, "message.price", None),  # refused by the parser: no request_id read
        ]
        for body, status, field, rid in cases:
            await pub.send(json.dumps(body))
        await pub.send("{not json")
        await pub.send(b"\x00\x01")
        await pub.send(json.dumps(note("u", 0, request_id="big", pad="x" * 4096)))
        await pub.send(json.dumps(note("u", 0, request_id="long", pad="y" * 1500)))
        await pub.send(['{"request_id": "frag", ', '"target": "all", ',
                        '"message": {"type": "deal_alert"}}'])  # three WebSocket fragments
        await pub.send(json.dumps(note("u", 0, request_id="last")))
        for body, status, field, rid in cases:
            answer = await recv_json(pub)
            assert answer["status"] == status and answer.get("field") == field, (body, answer)
            assert answer.get("request_id") == rid, (body, answer)
            assert answer["error"], answer
        answer = await recv_json(pub)
        assert answer["status"] == 400 and "not valid JSON" in answer["error"], answer
        answer = await recv_json(pub)
        assert answer["status"] == 400 and "text frame" in answer["error"], answer
        answer = await recv_json(pub)
        assert answer["status"] == 413 and "too large" in answer["error"], answer
        for rid in ("long", "frag", "last"):
            answer = await recv_json(pub)
            assert answer["status"] == 200 and answer["request_id"] == rid, answer
        await pub.close()

    run(main())
    stats = stream_stats(d.port)
    assert stats["refused"] == 2, stats  # the binary frame and the one over the size


def test_operator_token_is_required_when_set(dealwire):
    d = dealwire("--api-token", "s3cret-token-for-tests")

    async def status_with(headers):
        try:
            pub = await publisher(d.port, extra_headers=headers)
        except websockets.exceptions.InvalidStatusCode as exc:
            return exc.status_code
        await pub.send(json.dumps(note("u", 1, request_id=1)))
        answer = await recv_json(pub)
        assert answer["status"] == 200 and answer["request_id"] == 1, answer
        await pub.close()
        return 101

    assert run(status_with({})) == 401
    assert run(status_with({"Authorization": "Bearer wrong"})) == 401
    assert run(status_with({"Authorization": "Bearer s3cret-token-for-tests"})) == 101
    # /ws/events does not take the operator token's place, nor the reverse.
    status, _ = http_get(d.port, "/api/websocket/stats",
                         headers={"Authorization": "Bearer s3cret-token-for-tests"})
    assert status == 200


def test_a_publisher_that_outruns_the_daemon_is_slowed_and_loses_nothing(daemon):
    """A publisher that never reads its answers: the daemon stops reading its socket once 64
    frames wait (the sender's kernel buffers fill and send() would block), holds no more than
    that, and once the publisher reads again every frame is answered, in order."""
    raw = RawWS(daemon.port, None, rcvbuf=4096, target=PATH)
    frames = []
    for i in range(200000):
        payload = json.dumps(note("nobody", i, request_id=i)).encode()
        frames.append(payload)
    raw.sock.setblocking(False)
    sent = 0
    pending = b""
    blocked = False
    for payload in frames:
        header = bytes([0x81, 0x80 | len(payload)]) if len(payload) < 126 else \
            bytes([0x81, 0x80 | 126, len(payload) >> 8, len(payload) & 0xFF])
        pending = header + b"\0\0\0\0" + payload  # a zero mask: the payload as it is
        try:
            k = raw.sock.send(pending)
        except BlockingIOError:
            k = 0
        if k < len(pending):
            pending = pending[k:]
            blocked = True
            break
        sent += 1
    assert blocked, "the daemon read 200,000 frames without slowing the publisher"
    # The frame cut in the middle counts: it is finished below.
    sent += 1
    stats = stream_stats(daemon.port)
    held = stats["frames"] - stats["answered"]
    assert held <= 2 * WINDOW, f"{held} frames held for one publisher: {stats}"
    raw.sock.setblocking(True)
    raw.sock.settimeout(t(10))
    raw.sock.sendall(pending)
    for i in range(sent):
        answer = raw.recv_json(timeout=10)
        assert answer["status"] == 200 and answer["request_id"] == i, (i, answer)
    raw.close()
    assert stream_stats(daemon.port)["frames"] == sent


def test_heartbeat_pings_an_idle_publisher_and_hangs_up_a_silent_one(dealwire):
    d = dealwire("--heartbeat-interval", "1", "--stale-timeout", "3")
    raw = RawWS(d.port, None, target=PATH)
    # Never answers: a ping comes, then the hang-up.
    fin, op, payload = raw.recv_frame(timeout=5)
    assert op == OP_PING and len(payload) == 8, (op, payload)
    with pytest.raises(ServerClosed):
        while True:
            raw.recv_frame(timeout=10)
    raw.close()

    async def answering():
        # websockets answers pings: still open after twice the stale timeout.
        pub = await publisher(d.port)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pub.recv(), 6 * SCALE)
        await pub.send(json.dumps(note("u", 1, request_id="alive")))
        assert (await recv_json(pub))["request_id"] == "alive"
        await pub.close()

    run(answering())


def test_shutdown_closes_with_1001_after_the_answers(dealwire):
    d = dealwire()

    async def main():
        pub = await publisher(d.port)
        for i in range(50):
            await pub.send(json.dumps(note("nobody", i, request_id=i)))
        answers = [await recv_json(pub) for _ in range(50)]
        assert [a["request_id"] for a in answers] == list(range(50))
        d.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as exc:
            await asyncio.wait_for(pub.recv(), t(10))
        assert close_code(exc.value) == 1001, exc.value

    run(main())
    assert d.wait(t(10)) == 0


def test_durable_and_live_frames_keep_the_order_they_were_sent_in(dealwire, pg_db):
    """With a database a critical frame waits for the inbox's write; the live frames behind it
    wait for it, so the client gets every message in the order the frames were sent, and the
    critical ones carry their seq."""
    server, db, url = pg_db
    d = dealwire("--db", url)
    wait_until(lambda: http_get(d.port, "/readyz")[0] == 200, t(20), "the database ready")
    n = 60

    async def main():
        ws, welcome = await connect_user(d.port, "carol")
        pub = await publisher(d.port)
        for i in range(n):
            if i % 3 == 0:
                body = {"request_id": i, "target": {"user_id": "carol"},
                        "message": {"type": "price_alert", "deal_id": f"d{i}",
                                    "current_price": i}}
            else:
                body = note("carol", i, request_id=i)
            await pub.send(json.dumps(body))
        seqs = []
        for i in range(n):
            answer = await recv_json(pub, timeout=20)
            assert answer["status"] == 200 and answer["request_id"] == i, answer
            if i % 3 == 0:
                seqs.append(answer["seq"])
            else:
                assert "seq" not in answer, answer
        assert seqs == list(range(1, n // 3 + 1)), seqs
        got = []
        for _ in range(n):
            m = await recv_json(ws, timeout=20)
            got.append(m.get("deal_id") or m.get("message"))
        want = [f"d{i}" if i % 3 == 0 else f"n{i}" for i in range(n)]
        assert got == want
        await pub.close()
        await ws.close()

    run(main())
