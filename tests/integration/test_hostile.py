"""A hostile client, case by case (the second security round, docs/security.md "What one client
can cost"): each case runs beside a healthy control client that must keep getting its pongs
within the bound the docs promise and its messages on time, and each checks that the daemon
refused or bounded what the hostile client did, and counted it.

The cases: a get_stats whose cost grew with the square of a user's subscriptions; sockets that
escaped every deadline (CONNECT, a trickled body, an idle keep-alive); request bodies that held
memory without bound; Transfer-Encoding beside Content-Length (request smuggling); ambiguous
user_id queries; one user holding hundreds of connections; floods of protocol pings and empty
fragments; requests lws refuses before the daemon sees them. Numbers and control characters in
JSON are in test_json_strict.py.
"""

import base64
import json
import os
import select
import signal
import socket
import struct
import threading
import time

import pytest

from conftest import (
    OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, ServerClosed, http_get, proc_status,
    publish, t, wait_until,
)

# The longest a control client's pong may wait while a hostile client works. The defects this
# file keeps stalled every client for 0.6 to 33 s; what a request costs now is a few
# milliseconds (docs/security.md, measured with a release build). A test is not a benchmark:
# on a shared two-core machine a debug build serving 300 sockets at once, or the scheduler
# alone, can hold one pong for tens of milliseconds, so the bound sits between the two.
PONG_BOUND = 0.25
# The issue's own bound for its 500 x 64 case (a release build takes about 1 ms, a debug build
# about 5): a get_stats, a per-user document and a control pong beside them, each within 50 ms.
STATS_BOUND = 0.05


def scaled_bound():
    return t(PONG_BOUND)


class Control:
    """A healthy client on its own thread: a ping every 120 ms (under every --rate-limit used
    here), each pong timed. stop() returns the worst wait and checks that a message published
    to it arrives."""

    def __init__(self, port, user="control"):
        self.port = port
        self.user = user
        self.raw = RawWS(port, user)
        assert self.raw.recv_json()["type"] == "connection_established"
        self.waits = []
        self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.done.is_set():
                started = time.monotonic()
                self.raw.send_frame(OP_TEXT, b'{"type":"ping"}')
                msg = self.raw.recv_json(timeout=30)
                assert msg["type"] == "pong", msg
                self.waits.append(time.monotonic() - started)
                self.done.wait(0.12)  # pacing the pings, not synchronisation
        except Exception as exc:  # reported by stop()
            self.error = exc

    def stop(self, bound=None):
        """Stops pinging; asserts every pong came within bound (scaled) and that a message
        published now reaches the control client. Returns the worst wait."""
        self.done.set()
        self.thread.join(t(30))
        assert not self.thread.is_alive(), "the control client hung"
        if self.error:
            raise AssertionError(f"the control client failed: {self.error!r}")
        assert self.waits, "the control client got no pong at all"
        worst = max(self.waits)
        limit = bound if bound is not None else scaled_bound()
        assert worst <= limit, \
            f"a control pong waited {worst * 1000:.1f} ms (bound {limit * 1000:.0f} ms; " \
            f"{len(self.waits)} pongs)"
        text = f"on time {os.urandom(4).hex()}"
        answer = publish(self.port, {"target": {"user_id": self.user},
                                     "message": {"type": "notification", "message": text,
                                                 "level": "info"}})
        assert answer["recipients"] == 1, answer
        msg = self.raw.recv_json(timeout=5)
        assert msg["type"] == "notification" and msg["message"] == text, msg
        self.raw.close()
        return worst


def security(port):
    status, doc = http_get(port, "/api/websocket/stats")
    assert status == 200, (status, doc)
    return doc["security"]


def raw_socket(port, timeout=None):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout or t(10))


def read_all(sock, limit):
    """Everything the server sends until it closes: (seconds until EOF or reset, bytes), or
    (None, bytes) if it is still open after limit seconds."""
    started = time.monotonic()
    data = b""
    while True:
        left = limit - (time.monotonic() - started)
        if left <= 0:
            return None, data
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started, data
        if not chunk:
            return time.monotonic() - started, data
        data += chunk


def responses(data):
    """The HTTP responses in data, as (status, headers dict, body bytes)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"a truncated response: {data!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


# ---------------------------------------------------------------------------------------------
# 1. get_stats and the per-user document cost time linear in what they report
# ---------------------------------------------------------------------------------------------

USERS_CONNS, SUBS_EACH = 500, 64


def subscribe_frames(conn_index):
    """SUBS_EACH subscribes to channels of this connection's own, as one write."""
    frames = b""
    for k in range(SUBS_EACH):
        payload = json.dumps({"type": "subscribe", "channel": f"c{conn_index}.{k}"}).encode()
        mask = os.urandom(4)
        frames += (bytes([0x80 | OP_TEXT, 0x80 | len(payload)]) + mask +
                   bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return frames


def test_stats_of_a_user_with_500_connections_of_64_channels_do_not_stall(dealwire):
    """500 connections of one user from one address, each in 64 channels of its own: get_stats
    on five of them and the per-user document cost a few milliseconds each, and a control
    client's pongs never wait more than 50 ms. (At 6818b44 one get_stats took 6.5 s.)"""
    d = dealwire("--max-connections-per-user", USERS_CONNS, "--rate-burst", SUBS_EACH + 8)
    conns = []
    try:
        for i in range(USERS_CONNS):
            raw = RawWS(d.port, "big")
            conns.append(raw)
            raw.sock.sendall(subscribe_frames(i))
        total = USERS_CONNS * SUBS_EACH

        def all_subscribed():
            status, doc = http_get(d.port, "/api/websocket/users/big")
            return status == 200 and doc["subscription_count"] == total and doc

        doc = wait_until(all_subscribed, t(60), f"{total} subscriptions")
        assert doc["connections"] == USERS_CONNS
        assert len(doc["connection_ids"]) == USERS_CONNS
        assert doc["subscriptions_truncated"] is True
        assert len(doc["subscriptions"]) == 1000 == len(set(doc["subscriptions"]))

        for raw in conns:  # the subscribe notices, read so that only the stats remain
            for _ in range(SUBS_EACH + 1):
                raw.recv_json(timeout=30)
        control = Control(d.port)
        bound = t(STATS_BOUND)
        for raw in conns[:5]:
            started = time.monotonic()
            raw.send_frame(OP_TEXT, b'{"type":"get_stats"}')
            msg = raw.recv_json(timeout=30)
            took = time.monotonic() - started
            assert msg["type"] == "stats", msg
            stats = msg["stats"]
            assert stats["subscription_count"] == total, stats["subscription_count"]
            assert stats["connections"] == USERS_CONNS
            assert took <= bound, f"get_stats took {took * 1000:.1f} ms"
        for raw in conns[:5]:  # five at once: the control's pongs wait behind all of them
            raw.send_frame(OP_TEXT, b'{"type":"get_stats"}')
        for _ in range(3):
            started = time.monotonic()
            status, doc = http_get(d.port, "/api/websocket/users/big")
            took = time.monotonic() - started
            assert status == 200 and doc["subscription_count"] == total
            assert took <= bound, f"GET /api/websocket/users/big took {took * 1000:.1f} ms"
        for raw in conns[:5]:
            assert raw.recv_json(timeout=30)["type"] == "stats"
        control.stop(bound)
    finally:
        for raw in conns:
            raw.close()


def test_stats_of_one_connection_with_10000_subscriptions_do_not_stall(dealwire):
    """--max-subscriptions 10000 on one connection (0.63 s per get_stats at 6818b44)."""
    n = 10000
    d = dealwire("--max-subscriptions", n, "--rate-limit", 100000, "--rate-burst", n + 10)
    raw = RawWS(d.port, "wide")
    try:
        assert raw.recv_json()["type"] == "connection_established"
        frames = b""
        for k in range(n):
            payload = json.dumps({"type": "subscribe", "channel": f"w.{k}"}).encode()
            mask = os.urandom(4)
            frames += (bytes([0x80 | OP_TEXT, 0x80 | len(payload)]) + mask +
                       bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        sender = threading.Thread(target=raw.sock.sendall, args=(frames,), daemon=True)
        sender.start()
        for _ in range(n):  # reading the notices keeps the outbox from overflowing
            msg = raw.recv_json(timeout=30)
            assert msg["type"] == "notification" and msg["action"] == "subscribe", msg
        sender.join(t(30))
        control = Control(d.port)
        for _ in range(5):
            raw.send_frame(OP_TEXT, b'{"type":"get_stats"}')
            stats = raw.recv_json(timeout=30)
            assert stats["type"] == "stats", stats
            assert stats["stats"]["subscription_count"] == n
            assert len(stats["stats"]["subscriptions"]) == 1000
        status, doc = http_get(d.port, "/api/websocket/connections")
        assert status == 200
        (conn,) = [c for c in doc["connections"] if c["user_id"] == "wide"]
        assert conn["subscription_count"] == n and conn["subscriptions_truncated"] is True
        assert len(conn["subscriptions"]) == 100
        control.stop()
    finally:
        raw.close()


# ---------------------------------------------------------------------------------------------
# 2-3. Every socket that is not a WebSocket or a request being answered has a deadline
# ---------------------------------------------------------------------------------------------

TIMEOUT = 2  # --handshake-timeout for these cases


def closed_within(socks, limit):
    """Waits (bounded) until every socket is closed by the server; returns the seconds each
    took, None for one still open at limit."""
    started = time.monotonic()
    out = [None] * len(socks)
    open_ = dict(enumerate(socks))
    while open_ and time.monotonic() - started < limit:
        ready, _, _ = select.select(list(open_.values()), [], [], 0.2)
        for s in ready:
            i = next(k for k, v in open_.items() if v is s)
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                out[i] = time.monotonic() - started
                del open_[i]
    return out


def test_connect_requests_are_refused_at_once(dealwire):
    """CONNECT gets no answer from lws, which makes a raw socket of it with no timeout: 300
    such sockets stayed open past 45 s at 6818b44. Each gets 405 and a close now."""
    d = dealwire("--handshake-timeout", TIMEOUT)
    control = Control(d.port)
    socks = []
    try:
        for _ in range(300):
            s = raw_socket(d.port)
            s.sendall(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
            socks.append(s)
        for s in socks:
            at, data = read_all(s, t(5))
            (status, headers, body), = responses(data)
            assert status == 405 and "proxy" in json.loads(body)["error"], (status, body)
            assert headers["content-type"] == "application/json"
            assert at is not None, "a CONNECT socket stayed open"
    finally:
        for s in socks:
            s.close()
    control.stop()
    wait_until(lambda: security(d.port)["sockets"] <= 2, t(5), "the sockets released")


def test_a_connect_sent_in_pieces_is_closed_at_the_deadline(dealwire):
    """What lws has not parsed yet is under the socket's deadline, whatever it becomes."""
    d = dealwire("--handshake-timeout", TIMEOUT)
    control = Control(d.port)
    socks = []
    try:
        for _ in range(50):
            s = raw_socket(d.port)
            s.sendall(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1")
            socks.append(s)
        took = closed_within(socks, TIMEOUT + t(3))
        still = sum(1 for x in took if x is None)
        assert still == 0, f"{still} of 50 sockets still open after {TIMEOUT + t(3)} s"
        assert min(took) >= TIMEOUT - 0.5, f"closed too early: {min(took):.2f} s"
    finally:
        for s in socks:
            s.close()
    control.stop()


def test_a_trickled_body_is_closed_at_the_deadline(dealwire):
    """A body that keeps trickling one byte at a time (never complete, never silent) was held
    forever at 6818b44, with its buffer. The body must arrive whole within the timeout."""
    d = dealwire("--handshake-timeout", TIMEOUT)
    control = Control(d.port)
    s = raw_socket(d.port)
    try:
        s.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                  b" " * 99000)
        started = time.monotonic()
        closed_at = None
        while time.monotonic() - started < TIMEOUT + t(4):
            try:
                s.sendall(b" ")
            except OSError:
                closed_at = time.monotonic() - started
                break
            ready, _, _ = select.select([s], [], [], 0.25)  # one byte every 250 ms
            if ready:
                try:
                    if not s.recv(65536):
                        closed_at = time.monotonic() - started
                        break
                except OSError:
                    closed_at = time.monotonic() - started
                    break
        assert closed_at is not None, "the trickled body's socket is still open"
        assert TIMEOUT - 0.5 <= closed_at <= TIMEOUT + t(2), f"closed after {closed_at:.2f} s"
    finally:
        s.close()
    control.stop()
    wait_until(lambda: security(d.port)["body_bytes"] == 0, t(5), "the body's bytes released")


def test_idle_keep_alive_and_half_sent_requests_are_closed(dealwire):
    d = dealwire("--handshake-timeout", TIMEOUT)
    control = Control(d.port)
    idle = raw_socket(d.port)
    half = raw_socket(d.port)
    try:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        took = closed_within([idle, half], TIMEOUT + t(3))
        assert all(x is not None for x in took), f"still open: {took}"
    finally:
        idle.close()
        half.close()
    control.stop()


def test_a_request_on_a_worker_is_answered_past_the_deadline(dealwire):
    """The deadline is for the client's part: a publish answered after the timeout still
    gets its answer (here the answer is quick; the keep-alive connection then idles into its
    next deadline and is closed, not before)."""
    d = dealwire("--handshake-timeout", TIMEOUT)
    s = raw_socket(d.port)
    try:
        body = json.dumps({"target": "all", "message": {"type": "notification",
                                                        "message": "x", "level": "info"}})
        s.sendall(f"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                  f"{body}".encode())
        at, data = read_all(s, TIMEOUT + t(3))
        (status, _, _), = responses(data)
        assert status == 200
        assert at is not None and at >= TIMEOUT - 0.5, f"closed after {at}"
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# 3b. Request bodies share one memory budget
# ---------------------------------------------------------------------------------------------

def test_request_bodies_share_one_budget_then_503(dealwire):
    mib = 1024 * 1024
    d = dealwire("--max-publish-size", mib, "--max-body-memory", 2 * mib,
                 "--handshake-timeout", 30)
    control = Control(d.port)
    holders = []
    try:
        for _ in range(2):
            s = raw_socket(d.port)
            s.sendall(f"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {mib}\r\n\r\n"
                      .encode() + b" " * 1000)
            holders.append(s)
        wait_until(lambda: security(d.port)["body_bytes"] == 2 * mib, t(5), "two bodies held")
        third = raw_socket(d.port)
        third.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        at, data = read_all(third, t(5))
        third.close()
        (status, headers, body), = responses(data)
        assert status == 503 and "bodies" in json.loads(body)["error"], (status, body)
        assert at is not None, "the refused request's connection stayed open"
        assert security(d.port)["refused"]["body_memory"] == 1
        # The budget comes back when a body is done with.
        holders.pop().close()
        wait_until(lambda: security(d.port)["body_bytes"] == mib, t(5), "one body released")
        doc = publish(d.port, {"target": {"user_id": "nobody"},
                               "message": {"type": "notification", "message": "fits",
                                           "level": "info"}})
        assert doc["recipients"] == 0
    finally:
        for s in holders:
            s.close()
    control.stop()


# ---------------------------------------------------------------------------------------------
# 4. Conflicting framing: 400 and a closed connection
# ---------------------------------------------------------------------------------------------

def read_response(sock, limit):
    """One whole response (or what came before EOF): bytes."""
    data = b""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            n = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    n = int(value)
            if len(rest) >= n:
                return data
        ready, _, _ = select.select([sock], [], [], 0.1)
        if ready:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return data
            if not chunk:
                return data
            data += chunk
    return data


def test_transfer_encoding_with_content_length_is_400_and_a_close(daemon):
    """The smuggling shape of the review, sent as a client behind a proxy would: the request
    framed by Content-Length (4 bytes: "1\r\nG"), its answer awaited, then what a proxy that
    honours Transfer-Encoding would take as the rest of the same body, and a request after it.
    At 6818b44 the leftover bytes got a second response on the same connection."""
    control = Control(daemon.port)
    s = raw_socket(daemon.port)
    try:
        s.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 4\r\n\r\n1\r\nG")
        first = read_response(s, t(5))
        try:
            s.sendall(b"\r\n0\r\n\r\nGET /api/websocket/stats HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass  # closed already: what should happen
        at, rest = read_all(s, t(5))
    finally:
        s.close()
    got = responses(first + rest)
    assert [r[0] for r in got] == [400], f"expected one 400 and a close, got {got!r}"
    assert "Transfer-Encoding" in json.loads(got[0][2])["error"], got
    assert at is not None, "the connection stayed open after the refusal"
    control.stop()


@pytest.mark.parametrize("request_bytes,status", [
    (b"POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 411),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
     b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 411),
    (b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n{}{}"
     b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n"
     b"{}{}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n{}{}"
     b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
], ids=["te-only", "te-on-get", "cl-sign", "cl-twice", "cl-list"])
def test_ambiguous_framing_gets_an_error_and_a_closed_connection(daemon, request_bytes, status):
    control = Control(daemon.port)
    s = raw_socket(daemon.port)
    try:
        s.sendall(request_bytes)
        at, data = read_all(s, t(5))
    finally:
        s.close()
    got = responses(data)
    assert [r[0] for r in got] == [status], f"expected one {status} and a close, got {got!r}"
    assert "error" in json.loads(got[0][2]), got
    assert at is not None, "the connection stayed open after the refusal"
    control.stop()


# ---------------------------------------------------------------------------------------------
# Looser than documented: the user_id query
# ---------------------------------------------------------------------------------------------

def upgrade_status(port, query):
    s = raw_socket(port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws/events?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"closed without an answer: {data!r}"
            data += chunk
        return int(data.split(b" ")[1])
    finally:
        s.close()


@pytest.mark.parametrize("query", ["user_id=a;b", "user_id=a&user_id=b", "user_id=a&b",
                                   "b&user_id=a", "user_id=a;b=c;user_id=d"])
def test_ambiguous_user_id_queries_are_refused(daemon, query):
    assert upgrade_status(daemon.port, query) == 400
    assert upgrade_status(daemon.port, "user_id=a&v=1") == 101


# ---------------------------------------------------------------------------------------------
# --max-connections-per-user
# ---------------------------------------------------------------------------------------------

def test_connections_per_user_are_capped_at_32_by_default(daemon):
    control = Control(daemon.port)
    conns = [RawWS(daemon.port, "many") for _ in range(32)]
    try:
        assert upgrade_status(daemon.port, "user_id=many") == 429
        assert upgrade_status(daemon.port, "user_id=other") == 101
        sec = security(daemon.port)
        assert sec["refused"]["per_user"] == 1 and sec["limits"]["max_connections_per_user"] == 32
        answer = publish(daemon.port, {"target": {"user_id": "many"},
                                       "message": {"type": "notification", "message": "m",
                                                   "level": "info"}})
        assert answer["recipients"] == 32
        conns.pop().close()
        wait_until(lambda: upgrade_status(daemon.port, "user_id=many") == 101, t(5),
                   "a slot freed by a close")
    finally:
        for c in conns:
            c.close()
    control.stop()


def test_connections_per_user_setting(dealwire):
    d = dealwire("--max-connections-per-user", 2)
    conns = [RawWS(d.port, "two") for _ in range(2)]
    try:
        assert upgrade_status(d.port, "user_id=two") == 429
    finally:
        for c in conns:
            c.close()


# ---------------------------------------------------------------------------------------------
# Floods of frames that carry nothing: protocol pings and empty fragments
# ---------------------------------------------------------------------------------------------

RATE, BURST = 10, 5


def masked(opcode, payload, fin=True):
    mask = os.urandom(4)
    return (bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask +
            bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def flood_outcome(raw, frames):
    """Sends frames in one write and reads until the server closes: (pongs, close code)."""
    sender = threading.Thread(target=lambda: _sendall_quietly(raw.sock, frames), daemon=True)
    sender.start()
    pongs, code = 0, None
    try:
        while True:
            _, op, payload = raw.recv_frame(timeout=10)
            if op == OP_PONG:
                pongs += 1
            elif op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                break
    except (ServerClosed, ConnectionResetError):
        pass
    sender.join(t(10))
    return pongs, code


def _sendall_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server closed the connection: that is the point


def test_a_protocol_ping_flood_is_bounded(dealwire):
    """lws 4.1 answers protocol pings itself and tells the daemon nothing of them, so they
    cannot be charged to the rate limit (docs/security.md): what keeps a flood harmless is
    that lws holds at most one pong and drops the pings that arrive meanwhile. 5,000 pings
    get far fewer pongs, the daemon's memory does not grow, others are served on time."""
    d = dealwire("--rate-limit", RATE, "--rate-burst", BURST)
    control = Control(d.port)
    raw = RawWS(d.port, "pinger")
    try:
        assert raw.recv_json()["type"] == "connection_established"
        before = proc_status(d.pid, "VmRSS")
        raw.sock.sendall(masked(OP_PING, b"p") * 5000)
        raw.send_frame(OP_TEXT, b'{"type":"ping"}')  # after the flood, in order
        pongs = 0
        while True:
            _, op, payload = raw.recv_frame(timeout=10)
            if op == OP_PONG:
                assert payload == b"p"
                pongs += 1
            elif op == OP_TEXT:
                assert json.loads(payload)["type"] == "pong"
                break
        grew = proc_status(d.pid, "VmRSS") - before
    finally:
        raw.close()
    assert 1 <= pongs < 5000, pongs
    assert grew < 4096, f"RSS grew by {grew} KiB"
    control.stop()


def assert_flood_closed_1008(dealwire, user, frames):
    """frames, sent at once on a connection of user's, close it with 1008 (the rate limit's
    flood close) while a control client is served on time."""
    d = dealwire("--rate-limit", RATE, "--rate-burst", BURST)
    control = Control(d.port)
    raw = RawWS(d.port, user)
    try:
        assert raw.recv_json()["type"] == "connection_established"
        _, code = flood_outcome(raw, frames)
    finally:
        raw.close()
    assert code == 1008, f"closed with {code}"
    control.stop()
    assert security(d.port)["refused"]["rate_limit_closes"] == 1


def test_a_flood_of_unasked_pongs_is_rate_limited(dealwire):
    assert_flood_closed_1008(dealwire, "ponger", masked(OP_PONG, b"u") * 5000)


def test_an_empty_fragment_flood_is_rate_limited(dealwire):
    assert_flood_closed_1008(dealwire, "fragger", masked(OP_TEXT, b"", fin=False) +
                             masked(OP_CONT, b"", fin=False) * 20000)


def test_paced_pings_and_fragments_are_not_limited(dealwire):
    """A client under the rate keeps getting every pong and every fragmented message."""
    d = dealwire("--rate-limit", RATE, "--rate-burst", BURST)
    raw = RawWS(d.port, "polite")
    try:
        assert raw.recv_json()["type"] == "connection_established"
        for i in range(BURST * 2):
            raw.send_frame(OP_PING, b"n%d" % i)
            while True:
                _, op, payload = raw.recv_frame()
                if op == OP_PONG:
                    assert payload == b"n%d" % i
                    break
            raw.sock.sendall(masked(OP_TEXT, b'{"type":', fin=False) +
                             masked(OP_CONT, b"", fin=False) +
                             masked(OP_CONT, b'"ping"}'))
            assert raw.recv_json()["type"] == "pong"
            time.sleep(3.0 / RATE)  # pacing the client under the rate, not synchronisation
    finally:
        raw.close()
    assert security(d.port)["refused"]["rate_limited_messages"] == 0


# ---------------------------------------------------------------------------------------------
# Methods and targets the API does not serve
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_line,status", [
    (b"TRACE / HTTP/1.1", 501), (b"FOO /healthz HTTP/1.1", 501),
    (b"BREW /api/publish HTTP/1.1", 501),
    # docs/security.md: these two never reach the daemon's callbacks; lws answers 403 (with
    # its own small HTML body) and closes, so nothing of them is acted on.
    (b"OPTIONS * HTTP/1.1", 403), (b"GET http://127.0.0.1/healthz HTTP/1.1", 403),
])
def test_methods_and_targets_not_served_get_one_answer_and_a_close(daemon, request_line, status):
    control = Control(daemon.port)
    s = raw_socket(daemon.port)
    try:
        s.sendall(request_line + b"\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        at, data = read_all(s, t(5))
    finally:
        s.close()
    got = responses(data)
    assert [r[0] for r in got] == [status], got
    if status == 501:
        assert "method" in json.loads(got[0][2])["error"], got
    assert at is not None, "the connection stayed open"
    control.stop()


# --------------------------------------------------------------------------------------------
# A burst of ready sockets (every client of a deploy closing at once)
# --------------------------------------------------------------------------------------------

CLOSERS = 1500


def open_upgraded(port, n, prefix):
    """n WebSockets on raw sockets, all requests sent before any answer is read; each socket
    has read its 101 and its welcome."""
    socks = []
    for i in range(n):
        s = raw_socket(port)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws/events?user_id={prefix}{i} HTTP/1.1\r\nHost: x\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        socks.append(s)
    for s in socks:
        data = b""
        while b"connection_established" not in data:
            chunk = s.recv(4096)
            assert chunk, f"closed during the upgrade: {data!r}"
            data += chunk
        assert data.startswith(b"HTTP/1.1 101"), data[:40]
    return socks


def test_a_burst_of_closes_is_served_over_several_passes(dealwire):
    """1,500 clients close at once. Served in one pass of the loop, they held everyone else
    for the whole burst (70-210 ms in a release build for 15,000); past a pass's budget the
    daemon puts the rest off to later passes, so the control client keeps its pongs and its
    messages, and every closing client still gets its close echoed."""
    d = dealwire("--max-connections-per-ip", CLOSERS + 100)
    socks = open_upgraded(d.port, CLOSERS, "burst-")
    # Traffic to keep moving (the daemon defers only then): a message a client got.
    watcher = RawWS(d.port, "watcher")
    assert watcher.recv_json()["type"] == "connection_established"
    publish(d.port, {"target": {"user_id": "watcher"},
                     "message": {"type": "notification", "message": "hi", "level": "info"}})
    assert watcher.recv_json()["type"] == "notification"
    control = Control(d.port)
    close = bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + struct.pack("!H", 1000)
    # Every close frame in the daemon's receive queues before it runs again: one burst.
    os.kill(d.pid, signal.SIGSTOP)
    try:
        for s in socks:
            s.sendall(close)
    finally:
        os.kill(d.pid, signal.SIGCONT)
    for s in socks:
        data = b""
        s.settimeout(t(30))  # select() cannot watch descriptors above 1023
        while chunk := s.recv(4096):
            data += chunk
        assert data[:2] == b"\x88\x02" and data[2:4] == struct.pack("!H", 1000), data[:8]
        s.close()
    watcher.close()
    control.stop()
    assert security(d.port)["socket_events_deferred"] > 0
    wait_until(lambda: http_get(d.port, "/healthz")[1]["connections"] == 0, t(10),
               "every connection to be gone")
