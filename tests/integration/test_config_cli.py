"""Command line, environment and config file: --help/--version, exit code 2 on bad values,
precedence (flag > env > file), and both event loops."""

import re
import subprocess

import pytest

from conftest import (
    SANITIZER_PATTERNS, apublish, close_code, connect_user, daemon_binary, daemon_env,
    expect_close, free_port, http_get, recv_json, request, run, t,
)


def run_cli(args, env=None, timeout=5):
    """Run the binary to completion; a daemon that keeps running is a failure."""
    binary = daemon_binary()
    try:
        return subprocess.run([binary, *args], env=daemon_env(env), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=t(timeout))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"dealwire {' '.join(args)} (env {env}) was still running after "
                             f"{t(timeout)}s; expected it to exit") from None


def assert_no_sanitizer_report(text):
    for pattern in SANITIZER_PATTERNS:
        assert pattern not in text, f"sanitizer report in stderr:\n{text}"


def test_help_exits_0():
    p = run_cli(["--help"])
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    for flag in ("--host", "--port", "--workers", "--heartbeat-interval", "--stale-timeout",
                 "--queue-size", "--max-message-size", "--max-subscriptions",
                 "--max-publish-size", "--shutdown-timeout", "--log-level", "--event-loop",
                 "--config"):
        assert flag in out, f"--help does not mention {flag}"
    assert_no_sanitizer_report(p.stderr)


def test_version_exits_0():
    p = run_cli(["--version"])
    assert p.returncode == 0, p.stderr
    assert re.search(r"\d+\.\d+", p.stdout + p.stderr), p.stdout
    assert_no_sanitizer_report(p.stderr)


def listen_args():
    return ["--host", "127.0.0.1", "--port", str(free_port())]


BAD_FLAGS = [
    # (args, flag named in the message, value named in the message or None)
    (["--port", "abc"], "port", "abc"),
    (["--port", "70000"], "port", "70000"),
    (["--port", "-1"], "port", "-1"),
    (["--queue-size", "0"], "queue-size", "0"),
    (["--queue-size", "-5"], "queue-size", "-5"),
    (["--queue-size", "12abc"], "queue-size", "12abc"),
    (["--log-level", "loud"], "log-level", "loud"),
    (["--event-loop", "kqueue"], "event-loop", "kqueue"),
    (["--workers", "many"], "workers", "many"),
    (["--heartbeat-interval", "soon"], "heartbeat-interval", "soon"),
    (["--stale-timeout", "0"], "stale-timeout", "0"),
    (["--max-message-size", "big"], "max-message-size", "big"),
    (["--max-subscriptions", "0"], "max-subscriptions", "0"),
    (["--max-publish-size", "x"], "max-publish-size", "x"),
    (["--shutdown-timeout", "later"], "shutdown-timeout", "later"),
    (["--bogus-flag", "1"], "--bogus-flag", None),
    (["--queue-size"], "queue-size", None),  # missing value
]


def assert_names(line, flag, value):
    env_name = "DEALWIRE_" + flag.lstrip("-").upper().replace("-", "_")
    assert flag in line or env_name in line, f"message does not name {flag}: {line!r}"
    if value is not None:
        assert value in line, f"message does not name the value {value!r}: {line!r}"


@pytest.mark.parametrize("args,flag,value", BAD_FLAGS, ids=[" ".join(a) for a, _, _ in BAD_FLAGS])
def test_bad_flag_exits_2_with_one_line(args, flag, value):
    # A valid listen address first, so a daemon that ignored the bad value would start serving.
    p = run_cli(listen_args() + args)
    assert p.returncode == 2, f"exit code {p.returncode}; stderr: {p.stderr!r}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {p.stderr!r}"
    assert_names(lines[0], flag, value)


BAD_ENV = [
    ({"DEALWIRE_PORT": "abc"}, "port", "abc"),
    ({"DEALWIRE_QUEUE_SIZE": "0"}, "queue-size", "0"),
    ({"DEALWIRE_LOG_LEVEL": "loud"}, "log-level", "loud"),
    ({"DEALWIRE_EVENT_LOOP": "select"}, "event-loop", "select"),
    ({"DEALWIRE_HEARTBEAT_INTERVAL": "often"}, "heartbeat-interval", "often"),
]


@pytest.mark.parametrize("env,flag,value", BAD_ENV, ids=[next(iter(e)) for e, _, _ in BAD_ENV])
def test_bad_env_exits_2_with_one_line(env, flag, value):
    args = ["--host", "127.0.0.1"] if "DEALWIRE_PORT" in env else listen_args()
    p = run_cli(args, env=env)
    assert p.returncode == 2, f"exit code {p.returncode}; stderr: {p.stderr!r}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {p.stderr!r}"
    assert_names(lines[0], flag, value)


def test_bad_value_in_config_file_exits_2(tmp_path):
    conf = tmp_path / "dealwire.conf"
    conf.write_text("# dealwire test config\nheartbeat-interval = 5\nqueue-size = zero\n")
    p = run_cli(listen_args() + ["--config", str(conf)])
    assert p.returncode == 2, f"exit code {p.returncode}; stderr: {p.stderr!r}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "queue-size" in lines[0] and "zero" in lines[0], lines[0]


def test_missing_config_file_exits_2(tmp_path):
    p = run_cli(listen_args() + ["--config", str(tmp_path / "missing.conf")])
    assert p.returncode == 2, f"exit code {p.returncode}; stderr: {p.stderr!r}"
    assert "missing.conf" in p.stderr


# --------------------------------------------------------------------------------------------
# Settings reach the daemon: heartbeat_interval in the welcome shows which source won.
# --------------------------------------------------------------------------------------------

def welcome_heartbeat(port):
    async def main():
        ws, w = await connect_user(port, "cfg")
        await ws.close()
        return w["heartbeat_interval"]

    return run(main())


def test_env_sets_flags(dealwire):
    d = dealwire(env={"DEALWIRE_HEARTBEAT_INTERVAL": "7", "DEALWIRE_STALE_TIMEOUT": "20"})
    assert welcome_heartbeat(d.port) == 7


def test_env_sets_host_and_port(dealwire):
    d = dealwire(listen_via_env=True)
    assert http_get(d.port, "/healthz")[0] == 200


def test_flag_wins_over_env(dealwire):
    d = dealwire("--heartbeat-interval", "9", "--stale-timeout", "20",
                 env={"DEALWIRE_HEARTBEAT_INTERVAL": "7"})
    assert welcome_heartbeat(d.port) == 9


def test_config_file(dealwire, tmp_path):
    conf = tmp_path / "dealwire.conf"
    conf.write_text("# comment\n\nheartbeat-interval = 5\nstale-timeout = 20\n")
    d = dealwire("--config", str(conf))
    assert welcome_heartbeat(d.port) == 5


def test_env_wins_over_config_file(dealwire, tmp_path):
    conf = tmp_path / "dealwire.conf"
    conf.write_text("heartbeat-interval = 5\nstale-timeout = 20\n")
    d = dealwire("--config", str(conf), env={"DEALWIRE_HEARTBEAT_INTERVAL": "6"})
    assert welcome_heartbeat(d.port) == 6


def test_flag_wins_over_config_file(dealwire, tmp_path):
    conf = tmp_path / "dealwire.conf"
    conf.write_text("heartbeat-interval = 5\nstale-timeout = 20\n")
    d = dealwire("--config", str(conf), "--heartbeat-interval", "4")
    assert welcome_heartbeat(d.port) == 4


def assert_oversize_message_closes_1009(d):
    """d runs with a 100-byte --max-message-size: a 200-byte message is closed with 1009."""
    async def main():
        ws, _ = await connect_user(d.port, "alice")
        await ws.send('{"type":"x","pad":"' + "y" * 200 + '"}')
        exc, _ = await expect_close(ws)
        assert close_code(exc) == 1009, repr(exc)

    run(main())


def test_env_max_message_size(dealwire):
    """A limit set only in the environment is enforced."""
    assert_oversize_message_closes_1009(dealwire(env={"DEALWIRE_MAX_MESSAGE_SIZE": "100"}))


# --------------------------------------------------------------------------------------------
# Both event loops serve the basic path
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loop", ["poll", "uv"])
def test_event_loop_serves_basic_path(dealwire, loop):
    d = dealwire("--event-loop", loop, "--workers", "2")

    async def main():
        ws, w = await connect_user(d.port, "alice")
        assert w["user_id"] == "alice"
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        assert (await request(ws, {"type": "subscribe", "channel": "hot_deals"}))["type"] == \
            "notification"
        answer = await apublish(d.port, {"target": {"channel": "hot_deals"},
                                         "message": {"type": "deal_alert", "deal_id": "d1"}})
        assert answer["recipients"] == 1
        msg = await recv_json(ws)
        assert msg["type"] == "deal_alert" and msg["deal_id"] == "d1"
        answer = await apublish(d.port, {"target": {"user_id": "alice"},
                                         "message": {"type": "price_alert", "deal_id": "d2"}})
        assert answer["recipients"] == 1
        assert (await recv_json(ws))["deal_id"] == "d2"
        await ws.close()

    run(main())


@pytest.mark.parametrize("loop", ["poll", "uv"])
def test_event_loop_sends_the_servers_close_code(dealwire, loop):
    """A close the server starts (here 1009, too large) reaches the client with its code:
    with the libuv loop, closing by returning -1 from WRITEABLE lost the close frame."""
    assert_oversize_message_closes_1009(
        dealwire("--event-loop", loop, "--max-message-size", "100"))


@pytest.mark.parametrize("level", ["debug", "info", "warn", "error"])
def test_log_levels_run(dealwire, level):
    d = dealwire("--log-level", level, "--workers", "1")
    assert http_get(d.port, "/healthz")[0] == 200


@pytest.mark.parametrize("loop", ["uv", "poll"])
def test_a_port_in_use_exits_1_at_once(dealwire, loop):
    """With the libuv loop, lws 4.1 hands back a context it is already destroying when the
    port cannot be bound; taken for success, the daemon spun at 100 % CPU, deaf to SIGTERM."""
    first = dealwire()
    # With poll, lws_create_context itself leaks 72 bytes on its way out of a failed bind
    # (lws 4.1.6, nothing of ours holds them); the leak check stays on for uv, where the
    # daemon's own unwinding is what is tested.
    env = {"ASAN_OPTIONS": "detect_leaks=0"} if loop == "poll" else None
    p = run_cli(["--host", "127.0.0.1", "--port", str(first.port), "--event-loop", loop], env=env)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert f"cannot listen on 127.0.0.1:{first.port}" in p.stderr, p.stderr
    assert_no_sanitizer_report(p.stderr)
    status, _ = http_get(first.port, "/healthz")
    assert status == 200
