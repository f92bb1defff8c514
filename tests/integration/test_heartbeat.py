"""Heartbeat: protocol pings after --heartbeat-interval of client silence, hang-up after
--stale-timeout of silence, and no hang-up for a client that answers."""

import asyncio
import json
import socket
import time

from websockets.legacy.client import WebSocketClientProtocol

from conftest import (
    OP_CLOSE, OP_PING, OP_TEXT, SCALE, RawWS, connect_user, http_get, request, run, t,
)

HB = 1      # --heartbeat-interval, seconds
STALE = 3   # --stale-timeout, seconds


def start(dealwire):
    return dealwire("--heartbeat-interval", HB, "--stale-timeout", STALE)


def test_silent_client_is_pinged_then_disconnected(dealwire):
    d = start(dealwire)
    t0 = time.monotonic()
    raw = RawWS(d.port, "silent")
    pings, close_at, eof_at = [], None, None
    deadline = t0 + STALE + t(10)
    try:
        while time.monotonic() < deadline:
            try:
                fin, op, payload = raw.recv_frame((deadline - time.monotonic()) / SCALE)
            except (EOFError, ConnectionResetError):
                eof_at = time.monotonic() - t0
                break
            except socket.timeout:
                break
            now = time.monotonic() - t0
            if op == OP_PING:
                pings.append(now)  # never answered
            elif op == OP_CLOSE and close_at is None:
                close_at = now
    finally:
        raw.close()
    assert pings, "no protocol ping (opcode 0x9) was received"
    assert 0.5 * HB <= pings[0] <= HB + t(2), f"first ping after {pings[0]:.2f}s, expected ~{HB}s"
    assert eof_at is not None, f"silent client still connected after {STALE + t(10)}s"
    hung_up = close_at if close_at is not None else eof_at
    assert STALE - 0.5 <= hung_up <= STALE + t(3), \
        f"disconnected after {hung_up:.2f}s, expected ~{STALE}s (pings at {pings})"
    assert pings[0] < hung_up


class CountingProtocol(WebSocketClientProtocol):
    """Counts the protocol pings that websockets answers automatically."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pongs_sent = 0
        self.pong_event = asyncio.Event()

    async def pong(self, data=b""):
        self.pongs_sent += 1
        self.pong_event.set()
        await super().pong(data)


def test_client_that_answers_pings_stays_connected(dealwire):
    d = start(dealwire)

    async def main():
        ws, _ = await connect_user(d.port, "idle", create_protocol=CountingProtocol)
        t0 = asyncio.get_running_loop().time()
        # Stay idle (no client-side pings, no messages) for longer than the stale timeout,
        # waking only on each server ping that websockets answers.
        for _ in range(100):
            if asyncio.get_running_loop().time() - t0 > STALE + 1.5:
                break
            ws.pong_event.clear()
            try:
                await asyncio.wait_for(ws.pong_event.wait(), t(HB + 3))
            except asyncio.TimeoutError:
                elapsed = asyncio.get_running_loop().time() - t0
                state = "open" if ws.open else f"closed (code {ws.close_code})"
                raise AssertionError(
                    f"no server ping for {t(HB + 3)}s; after {elapsed:.1f}s the client had "
                    f"answered {ws.pongs_sent} pings and the connection is {state}") from None
        assert ws.pongs_sent >= 2, f"only {ws.pongs_sent} server pings in {STALE + 1.5}s"
        assert ws.open, "client answering pings was disconnected"
        reply = await request(ws, {"type": "ping"})
        assert reply["type"] == "pong"
        status, conns = http_get(d.port, "/api/websocket/connections")
        assert [c["user_id"] for c in conns["connections"]] == ["idle"]
        await ws.close()

    run(main(), timeout=STALE + 20)


def test_client_messages_count_as_activity(dealwire):
    """A client that never answers protocol pings but keeps sending messages is not stale."""
    d = start(dealwire)
    t0 = time.monotonic()
    raw = RawWS(d.port, "chatty")
    pongs = 0
    try:
        # Each time the server pings (i.e. the client was silent for HB), answer with a
        # JSON ping text message instead of a protocol pong.
        for _ in range(1000):
            if time.monotonic() - t0 > STALE + 2:
                break
            try:
                fin, op, payload = raw.recv_frame(HB + 3)
            except (EOFError, ConnectionResetError):
                raise AssertionError(f"disconnected after {time.monotonic() - t0:.2f}s "
                                     "although the client kept sending messages")
            if op == OP_PING:
                raw.send_frame(OP_TEXT, b'{"type":"ping"}')
            elif op == OP_TEXT and json.loads(payload)["type"] == "pong":
                pongs += 1
            elif op == OP_CLOSE:
                raise AssertionError(f"server closed: {payload!r}")
        assert pongs >= 2, f"only {pongs} pongs"
    finally:
        raw.close()


def test_a_client_that_sent_text_survives_answering_pings(dealwire):
    """The ping's payload is ASCII: lws checks the pong's payload as UTF-8 when the client's
    last message was text, and closed it 1007 "bad utf8" when the payload was the send time in
    raw bytes (found by test_metrics.py)."""
    d = start(dealwire)

    async def main():
        ws, _ = await connect_user(d.port, "talker")
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"  # a text message
        # Silent past the heartbeat and past the stale timeout: websockets answers the
        # protocol pings itself; the connection must outlive them (a close ends the wait).
        try:
            await asyncio.wait_for(ws.wait_closed(), STALE + 1)
        except asyncio.TimeoutError:
            pass
        assert not ws.closed, f"closed {ws.close_code} {ws.close_reason!r}"
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await ws.close()

    run(main(), timeout=STALE + 20)
