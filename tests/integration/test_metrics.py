"""GET /metrics (Prometheus text format, src/metrics.c): promtool accepts a live daemon's page
after real traffic, the values move as they must, the operator token guards it like /api/,
PostgreSQL and Redis health say up and then down, and the alerting rules and the Grafana
dashboard (docs/prometheus, docs/grafana) pass promtool and use only metrics that exist.

promtool is Debian's (scripts/promtool.sh unpacks it from the prometheus package without
installing the package): $DW_PROMTOOL, else build/promtool/promtool, else fetched now."""

import asyncio
import json
import os
import re
import subprocess

import pytest

from conftest import (REPO, RawWS, ServerClosed, barrier, close_all, close_code, connect_user,
                      expect_close, http_request, publish, run, t, wait_until, OP_TEXT, OP_PING)
from conftest_pg import PgServer, pg_db, postgres, require_postgres  # noqa: F401
from conftest_redis import redis_server  # noqa: F401
from test_monitors import SCHEMA_RE, await_log

RULES = REPO / "docs" / "prometheus" / "dealwire-rules.yml"
DASHBOARD = REPO / "docs" / "grafana" / "dealwire.json"
TOKEN = "operator-token-0123456789"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# --------------------------------------------------------------------------------------------
# promtool and the text format
# --------------------------------------------------------------------------------------------

def promtool():
    """The promtool binary: $DW_PROMTOOL, build/promtool/promtool, or scripts/promtool.sh's."""
    path = os.environ.get("DW_PROMTOOL") or str(REPO / "build" / "promtool" / "promtool")
    if os.access(path, os.X_OK):
        return path
    r = subprocess.run(["bash", str(REPO / "scripts" / "promtool.sh")], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        msg = f"promtool is not available (scripts/promtool.sh: {r.stderr.strip()[-500:]})"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return r.stdout.strip().splitlines()[-1]


def promtool_check(*args, stdin=None):
    r = subprocess.run([promtool(), "check", *args], input=stdin, capture_output=True, text=True,
                       timeout=t(60))
    assert r.returncode == 0, f"promtool check {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def scrape(port, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = http_request(port, "GET", "/metrics", headers=headers)
    assert r.status == 200, (r.status, r.raw[:300])
    assert r.headers["content-type"] == CONTENT_TYPE, r.headers
    return r.raw.decode()


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset of (label, value)): float} of every sample."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(LABEL_RE.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def sample_names(text):
    return {key[0] for key in parse(text)}


def histogram_count(samples, name, **labels):
    """_count, checked against the +Inf bucket and the buckets' order."""
    count = value(samples, name + "_count", **labels)
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in samples.items()
                     if k[0] == name + "_bucket" and
                     {x for x in k[1] if x[0] != "le"} == set(labels.items()))
    assert buckets[-1] == (float("inf"), count), buckets
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets
    return count


def closes(samples):
    return {dict(k[1])["reason"]: v for k, v in samples.items()
            if k[0] == "dealwire_connections_closed_total"}


# --------------------------------------------------------------------------------------------
# A live daemon after traffic
# --------------------------------------------------------------------------------------------

HB, STALE = 1, 3        # --heartbeat-interval, --stale-timeout: the silent client's hang-up
RATE, BURST = 10, 5     # --rate-limit, --rate-burst: the flooder's close
MAX_MSG = 1024          # --max-message-size: the oversized message's close


def flood(port, user):
    """A client that sends 60 pings at once: closed for flooding (rate_limit)."""
    ws = RawWS(port, user)
    try:
        assert ws.recv_json()["type"] == "connection_established"
        for _ in range(60):
            ws.send_frame(OP_TEXT, b'{"type":"ping"}')
        while True:  # until the server closes: its close frame, then EOF
            ws.recv_frame()
    except ServerClosed:
        pass
    finally:
        ws.close()


def silent(port, user):
    """A client that never answers a ping: hung up at --stale-timeout (heartbeat_timeout)."""
    ws = RawWS(port, user, timeout=t(STALE + 10))
    pings = 0
    try:
        while True:
            _, op, _ = ws.recv_frame(timeout=STALE + 10)
            pings += op == OP_PING
    except ServerClosed:
        pass
    finally:
        ws.close()
    assert pings >= 1, "the server hung up without pinging first"


def vanish(port, user):
    """A client that goes away without a close frame (connection_lost)."""
    ws = RawWS(port, user)
    assert ws.recv_json()["type"] == "connection_established"
    ws.close()


def test_metrics_after_traffic_pass_promtool_and_count_what_happened(dealwire):
    d = dealwire("--heartbeat-interval", HB, "--stale-timeout", STALE, "--rate-limit", RATE,
                 "--rate-burst", BURST, "--max-message-size", MAX_MSG,
                 "--max-connections-per-user", 1)
    text = scrape(d.port)
    promtool_check("metrics", stdin=text)
    before = parse(text)
    assert value(before, "dealwire_connections_open") == 0
    assert value(before, "dealwire_build_info", version=re.search(
        r'version="([^"]+)"', text).group(1), libwebsockets=re.search(
        r'libwebsockets="([^"]+)"', text).group(1)) == 1

    async def traffic():
        alice, _ = await connect_user(d.port, "alice")
        bob, _ = await connect_user(d.port, "bob")
        carol, _ = await connect_user(d.port, "carol")
        # A second connection of bob's: refused (--max-connections-per-user 1).
        with pytest.raises(Exception) as refused:
            await connect_user(d.port, "bob")
        assert "429" in str(refused.value), refused.value
        # A private channel: refused.
        await carol.send(json.dumps({"type": "subscribe", "channel": "user:alice"}))
        # 5 to alice, 3 to everyone: 5 + 3 * 3 = 14 deliveries.
        for n in range(5):
            publish(d.port, {"target": {"user_id": "alice"},
                             "message": {"type": "notification", "message": f"n{n}"}})
        for n in range(3):
            publish(d.port, {"target": "all",
                             "message": {"type": "deal_alert", "deal_id": f"d{n}",
                                         "title": "t", "price": 1.0}})
        for ws in (alice, bob, carol):
            await barrier(ws)
        mid = parse(scrape(d.port))
        assert value(mid, "dealwire_connections_open") == 3
        # Each way to close: the client's close, one over --max-message-size, a flood, a
        # client that vanishes, one that never answers pings.
        await alice.close()
        await bob.send("x" * (MAX_MSG + 1))
        exc, _ = await expect_close(bob)
        assert close_code(exc) == 1009, exc
        loop = asyncio.get_running_loop()
        await asyncio.gather(loop.run_in_executor(None, flood, d.port, "flooder"),
                             loop.run_in_executor(None, vanish, d.port, "ghost"),
                             loop.run_in_executor(None, silent, d.port, "mute"))
        await carol.close()

    run(traffic())
    wait_until(lambda: value(parse(scrape(d.port)), "dealwire_connections_open") == 0, t(10),
               "the closed connections gone from the gauge")
    text = scrape(d.port)
    promtool_check("metrics", stdin=text)
    after = parse(text)

    assert value(after, "dealwire_connections_opened_total") == 6  # alice bob carol + 3
    got = closes(after)
    assert got == {**{r: 0 for r in got}, "client_close": 2, "message_too_large": 1,
                   "rate_limit": 1, "connection_lost": 1, "heartbeat_timeout": 1}, got
    assert histogram_count(after, "dealwire_connection_duration_seconds") == 6
    # mute lived --stale-timeout at least
    assert value(after, "dealwire_connection_duration_seconds_sum") >= STALE
    assert value(after, "dealwire_messages_published_total", type="notification") == 5
    assert value(after, "dealwire_messages_published_total", type="deal_alert") == 3
    assert value(after, "dealwire_messages_sent_total", type="deal_alert") == 9
    # the 5 to alice, and no subscription notice (carol's subscribe was refused)
    assert value(after, "dealwire_messages_sent_total", type="notification") == 5
    assert value(after, "dealwire_messages_sent_total", type="connection_established") == 6
    assert value(after, "dealwire_messages_sent_total", type="error") >= 2  # forbidden, flood
    # Latency: every delivery of a published message, nothing else (no pong, no welcome).
    assert histogram_count(after, "dealwire_delivery_latency_seconds") == 14
    assert 0 < value(after, "dealwire_delivery_latency_seconds_sum") < t(5)
    assert value(after, "dealwire_refusals_total", reason="per_user") == 1
    assert value(after, "dealwire_refusals_total", reason="private_channel") == 1
    assert value(after, "dealwire_refusals_total", reason="rate_limited_message") >= BURST
    assert value(after, "dealwire_outbox_messages") == 0


def test_metrics_take_the_operator_token(dealwire):
    d = dealwire("--api-token", TOKEN)
    r = http_request(d.port, "GET", "/metrics")
    assert r.status == 401, r
    assert r.headers.get("www-authenticate") == "Bearer", r.headers
    r = http_request(d.port, "GET", "/metrics", headers={"Authorization": "Bearer wrong-token-0"})
    assert r.status == 401, r
    text = scrape(d.port, TOKEN)
    promtool_check("metrics", stdin=text)
    assert value(parse(text), "dealwire_refusals_total", reason="api_auth") == 2
    # /healthz stays open; /metrics answers GET only
    assert http_request(d.port, "GET", "/healthz").status == 200
    r = http_request(d.port, "POST", "/metrics", body="{}",
                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 405, r


# --------------------------------------------------------------------------------------------
# PostgreSQL and Redis, the rules and the dashboard
# --------------------------------------------------------------------------------------------

def test_rules_pass_promtool():
    r = promtool_check("rules", str(RULES))
    assert "SUCCESS" in r.stdout, r.stdout


def names_used(text):
    """Every dealwire_* metric name in a PromQL-bearing text."""
    return set(re.findall(r"\bdealwire_[a-zA-Z0-9_]+", text))


def dashboard_exprs():
    doc = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert len(exprs) >= 8, f"the dashboard has only {len(exprs)} queries"
    return exprs


def test_health_up_and_down_and_every_name_in_rules_and_dashboard_exists(dealwire,
                                                                         redis_server):
    require_postgres()
    pg = PgServer()
    try:
        pg.start()
        d = dealwire("--db", pg.url(pg.create_db()), "--redis", redis_server.url(),
                     "--log-level", "debug", "--hot-deal-interval", 1)
        run(await_log(d, SCHEMA_RE, 1, 30))
        wait_until(lambda: value(parse(scrape(d.port)), "dealwire_redis_up") == 1, t(10),
                   "the bus connected to Redis")
        text = scrape(d.port)
        promtool_check("metrics", stdin=text)
        live = parse(text)
        assert value(live, "dealwire_postgres_up") == 1
        assert value(live, "dealwire_postgres_schema_ready") == 1

        # What the workers count, read by the scrape on the I/O thread (TSan runs this): a
        # monitor round (rounds run while a client is connected) and a trip plan.
        async def rounds_while_connected():
            ws, _ = await connect_user(d.port, "watcher")
            await await_log(d, re.compile(r" monitor: hot_deals round done in "), 1, 20)
            await ws.close()

        run(rounds_while_connected())
        r = http_request(d.port, "POST", "/api/ai/trip/plan", body={"user_id": "u"})
        assert r.status == 400, r
        text = scrape(d.port)
        live = parse(text)
        assert value(live, "dealwire_monitor_rounds_total", monitor="hot_deals", result="ok") >= 1
        assert histogram_count(live, "dealwire_monitor_round_duration_seconds",
                               monitor="hot_deals") >= 1
        assert value(live, "dealwire_plans_total", outcome="invalid") == 1
        assert histogram_count(live, "dealwire_plan_duration_seconds") == 1

        present = sample_names(text)
        used = names_used(RULES.read_text())
        for expr in dashboard_exprs():
            used |= names_used(expr)
        missing = sorted(used - present)
        assert not missing, f"used by the rules or the dashboard, not on /metrics: {missing}"

        redis_server.stop()
        wait_until(lambda: value(parse(scrape(d.port)), "dealwire_redis_up") == 0, t(15),
                   "dealwire_redis_up 0 once Redis stopped")
        pg.stop()
        wait_until(lambda: value(parse(scrape(d.port)), "dealwire_postgres_up") == 0, t(30),
                   "dealwire_postgres_up 0 once PostgreSQL stopped")
        text = scrape(d.port)
        promtool_check("metrics", stdin=text)
        assert value(parse(text), "dealwire_postgres_outages_total") >= 1
    finally:
        pg.remove()
