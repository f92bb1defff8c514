"""--log-format: the daemon's stderr as an operator's tools read it.

With --log-format json every stderr line is one JSON object (json.loads, no duplicate keys)
with "time" (RFC 3339, UTC, milliseconds), "level", "module", "event" and "message", and the
events an operator alerts on carry their fields: start-up (version, listening address),
connections opened and closed, upgrades refused (reason, address, status, user when known),
closes the server initiates (reason, conn, user, address), SIGHUP, the shutdown.
DEALWIRE_LOG_FORMAT does the same; the text format stays as it was; a bad value is refused at
start-up.
"""

import json
import re
import signal

from conftest import (connect_user, expect_close, close_code, handshake_status, run,
                      run_bad_start, t, wait_until, ws_connect)

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (error|warn |info |debug) "
                          r"[a-z_]+: ")
JWT_SECRET = "log-format-test-secret-0123456789abcdef"  # --jwt-secret: at least 32 bytes


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {pairs!r}"
    return dict(pairs)


def json_lines(daemon):
    """Every stderr line of a stopped daemon, parsed; fails on the first that is not one JSON
    object with the members every line has."""
    raw = daemon.stderr_path.read_bytes()
    assert raw.endswith(b"\n"), raw[-200:]
    lines = []
    for line in raw.split(b"\n")[:-1]:
        obj = json.loads(line.decode("utf-8"), object_pairs_hook=no_duplicates)
        assert isinstance(obj, dict), line
        assert TIME_RE.match(obj["time"]), obj
        assert obj["level"] in ("error", "warn", "info", "debug"), obj
        for key in ("module", "event", "message"):
            assert isinstance(obj[key], str) and obj[key], obj
        assert "truncated" not in obj, obj
        lines.append(obj)
    return lines


def events(lines, name, **fields):
    """The lines of event `name` whose fields include `fields`."""
    return [o for o in lines
            if o["event"] == name and all(o.get(k) == v for k, v in fields.items())]


def one(lines, name, **fields):
    found = events(lines, name, **fields)
    assert found, f"no {name} {fields} in:\n" + "\n".join(map(json.dumps, lines))
    return found[-1]


def test_json_lines_for_a_session(dealwire):
    d = dealwire("--log-format", "json", "--log-level", "debug", "--rate-limit", "1",
                 "--rate-burst", "2", "--max-connections-per-user", "1")

    async def session():
        # A connection, then its user again (refused: one connection per user).
        ws, _ = await connect_user(d.port, "alice")
        assert await handshake_status(d.port, "alice") == 429
        # A refusal before the user is known.
        assert await handshake_status(d.port, query="") == 400
        # A flood: the server closes the connection (rate limit).
        flooder, _ = await connect_user(d.port, "flood.er")
        for _ in range(10):
            await flooder.send(json.dumps({"type": "ping"}))
        exc, _ = await expect_close(flooder)
        assert close_code(exc) == 1008
        await ws.close()

    run(session())
    assert d.stop() == 0
    lines = json_lines(d)
    assert len(lines) >= 8

    start = one(lines, "start")
    assert start["level"] == "info" and start["module"] == "main", start
    assert re.match(r"^\d+\.\d+", start["version"]), start
    listening = one(lines, "listening")
    assert (listening["host"], listening["port"], listening["tls"]) == ("127.0.0.1", d.port, 0)
    assert listening["version"] == start["version"]
    assert listening["message"].startswith(f"listening on 127.0.0.1:{d.port} ")

    opened = one(lines, "conn.open", user="alice")
    assert opened["address"] == "127.0.0.1" and isinstance(opened["conn"], int), opened
    assert opened["message"] == f"connection {opened['conn']} (user alice): opened", opened

    full = one(lines, "upgrade.refused", status=429)
    assert (full["user"], full["address"], full["level"]) == ("alice", "127.0.0.1", "debug")
    assert full["reason"] == "user connection limit", full
    anonymous = one(lines, "upgrade.refused", status=400)
    assert anonymous["reason"] == "user_id query parameter is required", anonymous
    assert anonymous["address"] == "127.0.0.1" and "user" not in anonymous, anonymous

    flood = one(lines, "conn.close", user="flood.er")
    assert (flood["reason"], flood["level"], flood["module"]) == ("rate limit", "info", "conn")
    assert flood["address"] == "127.0.0.1" and isinstance(flood["conn"], int), flood
    assert flood["message"] == f"connection {flood['conn']} (user flood.er): message flood, " \
                               "closing", flood
    closed = one(lines, "conn.closed", conn=flood["conn"])
    assert closed["reason"] == "rate limit exceeded" and closed["user"] == "flood.er", closed
    assert one(lines, "conn.closed", user="alice")["reason"] is None  # the client closed it

    assert one(lines, "signal")["signal"] == "TERM"
    assert isinstance(one(lines, "shutdown")["connections"], int)
    stopped = one(lines, "stopped")
    assert stopped["exit_code"] == 0 and lines[-1] is stopped, lines[-3:]


def test_json_from_the_environment_at_info(dealwire):
    """DEALWIRE_LOG_FORMAT=json at info: a refused token (401), a SIGHUP without TLS, SIGINT."""
    d = dealwire("--jwt-secret", JWT_SECRET, env={"DEALWIRE_LOG_FORMAT": "json"})

    async def refused():
        return await handshake_status(d.port, query="token=not.a.jwt")

    assert run(refused()) == 401
    d.send_signal(signal.SIGHUP)
    wait_until(lambda: '"event":"tls.reload"' in d.stderr_text(), t(10), "the tls.reload line")
    assert d.stop(signal.SIGINT) == 0
    lines = json_lines(d)
    refusal = one(lines, "upgrade.refused", status=401)
    assert refusal["level"] == "info" and refusal["address"] == "127.0.0.1", refusal
    assert refusal["reason"] and refusal["reason"] in refusal["message"], refusal
    assert one(lines, "tls.reload")["result"] == "off"
    assert [o["signal"] for o in events(lines, "signal")] == ["HUP", "INT"]
    assert not events(lines, "conn.open")  # debug only


def test_text_format_is_unchanged(dealwire):
    d = dealwire()

    async def once():
        ws = await ws_connect(d.port, "bob")
        await ws.close()

    run(once())
    assert d.stop() == 0
    text = d.stderr_text()
    lines = text.splitlines()
    assert lines, text
    for line in lines:
        assert TEXT_LINE_RE.match(line), line
        assert not line.startswith("{"), line
    assert any(re.search(r" info  main: dealwire \S+ starting$", line) for line in lines), text
    assert any(f" info  server: listening on 127.0.0.1:{d.port} (" in line for line in lines)
    assert re.search(r" info  main: stopped$", text, re.M), text


def test_bad_log_format_is_refused():
    code, err = run_bad_start(["--log-format", "yaml"])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "--log-format" in lines[0] and '"yaml"' in lines[0], lines[0]
    assert "text, json" in lines[0], lines[0]
