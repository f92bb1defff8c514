"""Black-box integration fixtures for dealwire.

The daemon under test is the real binary named by $DEALWIRE_BIN (or ./build/debug/src/dealwire
when that is unset outside CI).  Every daemon listens on 127.0.0.1 on a port picked free just
before start; its stderr goes to a file that is attached to the report of a failing test.

Run with the Debian interpreter, which has python3-websockets 10.4 and python3-pytest:

    DEALWIRE_BIN=/path/to/dealwire /usr/bin/python3 -m pytest tests/integration

$DEALWIRE_SANITIZER (non-empty) means an ASan/TSan build: every timeout is multiplied by 5 and
each daemon must exit 0 with no sanitizer report in its stderr.
"""

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import websockets
import websockets.exceptions

# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

SANITIZER = os.environ.get("DEALWIRE_SANITIZER", "")
SCALE = 5 if SANITIZER else 1


def t(seconds):
    """A timeout of `seconds` in a normal build, scaled for sanitizer builds."""
    return seconds * SCALE


REPO = Path(__file__).resolve().parents[2]
# Where a local debug build leaves the binary (the brief's path, then the CMake preset's).
DEFAULT_BINS = (REPO / "build" / "debug" / "src" / "dealwire",
                REPO / "build" / "debug" / "dealwire")

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "LeakSanitizer",
)


def daemon_binary():
    """Path of the binary under test; fails in CI when $DEALWIRE_BIN is unset."""
    env_bin = os.environ.get("DEALWIRE_BIN")
    if env_bin:
        if not (os.path.isfile(env_bin) and os.access(env_bin, os.X_OK)):
            pytest.fail(f"DEALWIRE_BIN={env_bin!r} is not an executable file")
        return env_bin
    if os.environ.get("CI"):
        pytest.fail("DEALWIRE_BIN is not set (required in CI)")
    for path in DEFAULT_BINS:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    pytest.skip(f"DEALWIRE_BIN is not set and none of {', '.join(map(str, DEFAULT_BINS))} "
                "exists; build dealwire first")


def daemon_env(extra=None):
    """The daemon's environment: ours without any DEALWIRE_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALWIRE_")}
    if extra:
        env.update(extra)
    return env


def free_port():
    """A loopback TCP port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# HTTP helpers (http.client, one connection per request)
# --------------------------------------------------------------------------------------------

HTTPResult = namedtuple("HTTPResult", "status json headers raw")


def http_request(port, method, path, body=None, headers=None, timeout=None):
    """Send one request; `body` may be bytes, str or a JSON-serialisable object.
    Returns HTTPResult(status, parsed JSON or None, headers as a lower-case dict, raw bytes)."""
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    hdrs = {}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout or t(10))
    try:
        send_error = None
        try:
            conn.request(method, path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError) as exc:
            send_error = exc  # the server may answer (e.g. 413) before reading a large body
        try:
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException, AttributeError):
            if send_error is not None:
                raise send_error from None
            raise
        raw = resp.read()
        resp_headers = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    parsed = None
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
    return HTTPResult(resp.status, parsed, resp_headers, raw)


def http_get(port, path, **kw):
    """GET path → (status, parsed JSON body or None)."""
    r = http_request(port, "GET", path, **kw)
    return r.status, r.json


def http_post(port, path, body, **kw):
    """POST a JSON body → (status, parsed JSON body or None)."""
    r = http_request(port, "POST", path, body=body, **kw)
    return r.status, r.json


def publish(port, body):
    """POST /api/publish; asserts 200 and returns the answer."""
    status, answer = http_post(port, "/api/publish", body)
    assert status == 200, f"publish {body!r} → {status} {answer!r}"
    return answer


async def apublish(port, body, executor=None):
    """publish() from asyncio, run in a thread so the event loop keeps reading sockets."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, publish, port, body)


async def aget(port, path, executor=None):
    """http_get() from asyncio."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, http_get, port, path)


# The start-up warnings of a daemon without --jwt-* and --api-token (development mode): every
# test daemon prints them, so checks for unexpected warnings leave them out.
DEV_MODE_WARNING = re.compile(r" warn  server: (auth is OFF|the /api/ endpoints are open)")


def problem_lines(daemon, pattern=r" (warn |error) "):
    """The daemon's stderr lines matching pattern, less the development-mode warnings."""
    rx = re.compile(pattern)
    return [line for line in daemon.stderr_text().splitlines()
            if rx.search(line) and not DEV_MODE_WARNING.search(line)]


def proc_status(pid, field):
    """A number from /proc/PID/status: proc_status(pid, "VmRSS") in KiB, "FDSize" in slots."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def wait_until(predicate, timeout, what):
    """Poll predicate() until true, within a bounded deadline (for states with no event)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Message checks
# --------------------------------------------------------------------------------------------

ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


def assert_iso(value, name="timestamp"):
    """value is an ISO-8601 UTC time ending in Z and close to now (so it really is UTC)."""
    assert isinstance(value, str) and ISO_RE.match(value), f"{name}={value!r} is not ISO-8601 UTC"
    base, _, frac = value[:-1].partition(".")
    when = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    now = datetime.now(timezone.utc)
    assert abs(now - when) < timedelta(minutes=10), f"{name}={value!r} is far from now ({now})"


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


USER_STATS_KEYS = (
    "user_id", "connections", "connected_at", "last_activity", "last_heartbeat",
    "messages_sent", "messages_failed", "messages_dropped", "queue_size", "queue_bytes",
    "subscriptions",
)


def assert_user_stats(stats, user_id):
    """The USER STATS object of the spec (WS get_stats and GET /api/websocket/users/<id>)."""
    assert isinstance(stats, dict), stats
    for key in USER_STATS_KEYS:
        assert key in stats, f"user stats lack {key!r}: {stats!r}"
    assert stats["user_id"] == user_id
    for key in ("connections", "messages_sent", "messages_failed", "messages_dropped",
                "queue_size", "queue_bytes"):
        assert is_int(stats[key]) and stats[key] >= 0, f"{key}={stats[key]!r}"
    for key in ("connected_at", "last_activity", "last_heartbeat"):
        assert_iso(stats[key], key)
    assert isinstance(stats["subscriptions"], list)
    assert all(isinstance(c, str) for c in stats["subscriptions"])


# --------------------------------------------------------------------------------------------
# WebSocket helpers (websockets 10.4, asyncio)
# --------------------------------------------------------------------------------------------

def run(coro, timeout=60):
    """Run a coroutine to completion with a bounded (scaled) timeout."""
    return asyncio.run(asyncio.wait_for(coro, t(timeout)))


def ws_url(port, user_id=None, path="/ws/events", query=None):
    if query is None:
        query = "" if user_id is None else f"user_id={user_id}"
    return f"ws://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")


async def ws_connect(port, user_id=None, path="/ws/events", query=None, **kw):
    """Open a websockets client connection (client-side pings off, no size limit)."""
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", None)
    kw.setdefault("open_timeout", t(10))
    kw.setdefault("close_timeout", t(2))
    return await websockets.connect(ws_url(port, user_id, path, query), **kw)


async def handshake_status(port, user_id=None, path="/ws/events", query=None):
    """Status of a websockets handshake: 101 when accepted, else the refusal's status code.
    A refusal that websockets cannot parse (e.g. not HTTP/1.1) fails with the reason."""
    try:
        ws = await ws_connect(port, user_id, path, query)
    except websockets.exceptions.InvalidStatusCode as exc:
        return exc.status_code
    except websockets.exceptions.InvalidMessage as exc:
        raise AssertionError(f"websockets could not read the handshake refusal: "
                             f"{exc.__cause__!r}") from None
    await ws.close()
    return 101


async def recv_json(ws, timeout=5):
    """Next message as JSON; it must be a text frame."""
    msg = await asyncio.wait_for(ws.recv(), t(timeout))
    assert isinstance(msg, str), f"expected a text frame, got {msg!r}"
    obj = json.loads(msg)
    assert isinstance(obj, dict), obj
    return obj


async def connect_user(port, user_id, **kw):
    """Connect and read the welcome; returns (ws, welcome)."""
    ws = await ws_connect(port, user_id, **kw)
    welcome = await recv_json(ws)
    assert welcome.get("type") == "connection_established", welcome
    return ws, welcome


async def request(ws, obj, timeout=5):
    """Send obj (a dict as JSON text; str, bytes or a list of fragments as given) and return
    the next message."""
    await ws.send(json.dumps(obj) if isinstance(obj, dict) else obj)
    return await recv_json(ws, timeout)


async def recv_until(ws, predicate, timeout=10, limit=100000):
    """Read until predicate(msg); returns (msg, [messages skipped before it])."""
    skipped = []
    deadline = asyncio.get_running_loop().time() + t(timeout)
    for _ in range(limit):
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        msg = await recv_json(ws, remaining / SCALE)
        if predicate(msg):
            return msg, skipped
        skipped.append(msg)
    raise AssertionError(f"no matching message within {t(timeout)}s; got {skipped[-5:]!r}")


async def barrier(ws, timeout=10):
    """Ping and read through the pong; returns the messages that arrived before it."""
    await ws.send(json.dumps({"type": "ping"}))
    _, before = await recv_until(ws, lambda m: m.get("type") == "pong", timeout)
    return before


async def expect_close(ws, timeout=10, limit=100000):
    """Read until the server closes; returns (ConnectionClosed, [messages read before])."""
    seen = []
    deadline = asyncio.get_running_loop().time() + t(timeout)
    for _ in range(limit):
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        try:
            msg = await asyncio.wait_for(ws.recv(), remaining)
        except websockets.exceptions.ConnectionClosed as exc:
            return exc, seen
        seen.append(msg)
    raise AssertionError(f"connection not closed within {t(timeout)}s; read {seen[-3:]!r}")


def close_code(exc):
    """The close code the server sent, or None when it sent no close frame."""
    return exc.rcvd.code if exc.rcvd is not None else None


async def close_all(conns):
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


# --------------------------------------------------------------------------------------------
# Raw WebSocket client (socket, hand-made handshake and frames)
# --------------------------------------------------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class ServerClosed(EOFError):
    """The server closed the TCP connection (EOF or reset)."""


class RawWS:
    """A minimal client for behaviour a well-behaved library would not produce: never reading,
    never answering pings, sending invalid UTF-8.  Frames are (fin, opcode, payload)."""

    def __init__(self, port, user_id, rcvbuf=None, timeout=None, target=None, headers=()):
        """target: the request target instead of /ws/events?user_id=<user_id>; headers:
        extra request header lines ("Name: value")."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Set before connect so the window is small and autotuning stays off.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout or t(10))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {target or '/ws/events?user_id=' + user_id} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            + "".join(f"{h}\r\n" for h in headers) +
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
        )
        self.sock.sendall(req.encode())
        deadline = time.monotonic() + (timeout or t(10))
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].split(" ")[1] == "101", f"handshake refused: {lines[0]!r}"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers.get("sec-websocket-accept") == accept, headers
        self.headers = headers

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("raw ws read timed out")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ServerClosed(repr(exc)) from None
        if not chunk:
            raise ServerClosed("EOF")
        self.buf += chunk

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame_rsv(self, timeout=10):
        """Next frame as (fin, rsv bits, opcode, payload); raises ServerClosed (an EOFError) at
        EOF or reset, socket.timeout."""
        deadline = time.monotonic() + t(timeout)
        b0, b1 = self._take(2, deadline)
        assert not b1 & 0x80, "server frames must not be masked (RFC 6455 5.1)"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8, deadline))[0]
        return bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, self._take(n, deadline)

    def recv_frame(self, timeout=10):
        """Next frame as (fin, opcode, payload); raises ServerClosed, socket.timeout."""
        fin, _, opcode, payload = self.recv_frame_rsv(timeout)
        return fin, opcode, payload

    def recv_json(self, timeout=10):
        """Next text frame as JSON, skipping control frames (which are not answered)."""
        deadline = time.monotonic() + t(timeout)
        while True:
            fin, op, payload = self.recv_frame(max(deadline - time.monotonic(), 0.001) / SCALE)
            if op == OP_TEXT:
                assert fin, "unexpected fragmented server message"
                return json.loads(payload)
            if op == OP_CLOSE:
                raise AssertionError(f"server closed: {payload!r}")

    def send_frame(self, opcode, payload, fin=True):
        """Send one masked frame."""
        header = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------------

class DaemonError(Exception):
    pass


BIND_FAILURE_RE = re.compile(r"bind|address already in use|EADDRINUSE", re.IGNORECASE)


class Daemon:
    """One dealwire process on 127.0.0.1:<free port> (or the port given), started by us and
    stopped by PID."""

    def __init__(self, binary, args, env, logdir, name, listen_via_env=False, port=None):
        self.binary = binary
        self.listen_via_env = listen_via_env
        self.fixed_port = port
        self.args = list(args)
        self.env = env
        self.logdir = Path(logdir)
        self.name = name
        self.proc = None
        self.port = None
        self.stderr_path = None
        self.stopped_by_us = False
        self.killed = False
        self.crashed_on_purpose = False

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        if self.stderr_path and self.stderr_path.exists():
            return self.stderr_path.read_text(errors="replace")
        return ""

    def start(self, attempts=5):
        last = ""
        for attempt in range(attempts):
            self.port = self.fixed_port or free_port()
            self.stderr_path = self.logdir / f"{self.name}.{attempt}.stderr"
            stdout_path = self.logdir / f"{self.name}.{attempt}.stdout"
            env = dict(self.env)
            if self.listen_via_env:
                cmd = [self.binary, *self.args]
                env.update(DEALWIRE_HOST="127.0.0.1", DEALWIRE_PORT=str(self.port))
            else:
                cmd = [self.binary, "--host", "127.0.0.1", "--port", str(self.port), *self.args]
            with open(self.stderr_path, "wb") as err, open(stdout_path, "wb") as out:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=err, env=env, start_new_session=True)
            if self._wait_ready():
                return self
            last = self.stderr_text()
            if not BIND_FAILURE_RE.search(last):
                break  # not a port race: retrying would not help
        self.stopped_by_us = True  # reported by the DaemonError below, not again at teardown
        raise DaemonError(f"dealwire {' '.join(self.args)} did not become ready "
                          f"(exit code {self.returncode}); stderr:\n{last}")

    def _wait_ready(self):
        """Poll /healthz until 200, within a bounded deadline. False if the process exited."""
        deadline = time.monotonic() + t(10)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _ = http_get(self.port, "/healthz", timeout=t(1))
                if status == 200:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        self.stop()
        raise DaemonError(f"dealwire not ready within {t(10)}s; stderr:\n{self.stderr_text()}")

    def send_signal(self, sig):
        if self.running():
            self.stopped_by_us = True
            os.kill(self.proc.pid, sig)

    def kill_9(self):
        """SIGKILL (a crash, as a test of what survives one) and wait. Its exit code is then
        not a problem at teardown; a sanitizer report in its stderr still is."""
        self.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=t(10))
        self.crashed_on_purpose = True

    def wait(self, timeout):
        """Wait for exit; returns the exit code or raises subprocess.TimeoutExpired."""
        return self.proc.wait(timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Signal, wait (bounded), then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout or t(10))
            except subprocess.TimeoutExpired:
                self.killed = True
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=t(10))
        return self.proc.returncode

    def exit_problems(self):
        """What is wrong with how this (exited) daemon ended, as a list of strings."""
        problems = []
        if self.killed:
            problems.append(f"{self.name}: did not exit after SIGTERM; killed")
        if not self.stopped_by_us:
            problems.append(f"{self.name}: exited on its own with code {self.returncode}")
        if SANITIZER:
            if self.returncode != 0 and not self.crashed_on_purpose:
                problems.append(f"{self.name}: exit code {self.returncode}, expected 0")
            text = self.stderr_text()
            for pattern in SANITIZER_PATTERNS:
                if pattern in text:
                    problems.append(f"{self.name}: stderr contains {pattern!r}")
        return problems


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the stderr of every daemon of a failed test to its report."""
    outcome = yield
    rep = outcome.get_result()
    daemons = getattr(item, "_dealwire_daemons", None)
    if rep.failed and daemons:
        for d in daemons:
            text = d.stderr_text()
            tail = text[-20000:]
            rep.sections.append((f"dealwire stderr ({d.name}, port {d.port}, "
                                 f"args {' '.join(d.args)})", tail or "(empty)"))


def daemons_of(request):
    """The list a daemon fixture puts its daemons in: their stderr goes into the report of a
    failed test (pytest_runtest_makereport)."""
    started = []
    request.node._dealwire_daemons = started
    return started


def stop_daemons(started):
    """A daemon fixture's teardown: stops each daemon (SIGTERM, bounded wait, SIGKILL) and
    fails the test if one exited badly (in sanitizer builds: not 0, or a sanitizer report)."""
    problems = []
    for d in started:
        if d.proc is None:
            continue
        d.stop()  # no-op when it already exited; then stopped_by_us stays False
        problems += d.exit_problems()
    if problems:
        details = "\n".join(f"--- {d.name} stderr ---\n{d.stderr_text()[-20000:]}"
                            for d in started)
        pytest.fail("\n".join(problems) + "\n" + details, pytrace=False)


def run_bad_start(args):
    """Runs dealwire with args, expecting it to refuse to start: (exit code, stderr)."""
    proc = subprocess.Popen([daemon_binary(), "--host", "127.0.0.1", "--port", str(free_port()),
                             *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=daemon_env(), start_new_session=True)
    try:
        _, err = proc.communicate(timeout=t(10))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=t(10))
        raise AssertionError(f"dealwire {args} kept running instead of exiting 2")
    return proc.returncode, err.decode(errors="replace")


@pytest.fixture
def dealwire(request, tmp_path):
    """Factory: dealwire("--heartbeat-interval", "1", env={...}) → a started Daemon
    (listen_via_env=True passes host and port as DEALWIRE_HOST/DEALWIRE_PORT instead; port=N
    listens on N, e.g. where a stopped daemon listened, instead of a free port).
    Every daemon is stopped (SIGTERM, bounded wait, SIGKILL) at teardown; in sanitizer builds
    its exit code must be 0 and its stderr free of sanitizer reports."""
    started = daemons_of(request)
    binary = daemon_binary()

    def factory(*args, env=None, listen_via_env=False, port=None):
        d = Daemon(binary, [str(a) for a in args], daemon_env(env), tmp_path,
                   f"dealwire{len(started)}", listen_via_env, port)
        started.append(d)
        return d.start()

    yield factory
    stop_daemons(started)


@pytest.fixture
def daemon(dealwire):
    """One daemon with default settings."""
    return dealwire()
