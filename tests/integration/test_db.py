"""The daemon and its PostgreSQL database, against a real private server (scripts/pg.sh):
migrations applied once at start-up and recorded, re-runs that change nothing, two nodes
starting at once on an empty database, the demo data set, a migration the server refuses
(exit 1), a bad --db (exit 2), and the hub serving through an outage of the database, with
one log line when it goes down and one when it is back."""

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import (
    SANITIZER_PATTERNS, apublish, barrier, connect_user, daemon_binary, daemon_env, free_port,
    http_get, problem_lines, recv_until, run, t, wait_until,
)
from conftest_pg import REPO, PgServer, pg_db, postgres, require_postgres  # noqa: F401

# What sql/ holds: [(version, name)] in order, from the file names.
MIGRATIONS = sorted(
    (int(m.group(1)), m.group(2))
    for m in (re.fullmatch(r"(\d+)_([a-z0-9_]+)\.sql", p.name) for p in (REPO / "sql").iterdir())
    if m
)
LATEST = MIGRATIONS[-1][0]

TABLES = {"deals", "price_watches", "hot_deal_announcements", "flights", "hotels", "trip_plans",
          "alert_inbox", "schema_migrations"}

DOWN_RE = re.compile(r" warn  store: database (unreachable|connection lost)")
BACK_RE = re.compile(r" info  store: database reachable again")


def log_lines(daemon, pattern):
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    return [line for line in daemon.stderr_text().splitlines() if rx.search(line)]


def wait_log(daemon, pattern, timeout, count=1):
    """Wait until at least count lines of the daemon's stderr match pattern; returns them."""
    return wait_until(lambda: len(log_lines(daemon, pattern)) >= count and
                      log_lines(daemon, pattern), t(timeout),
                      f"{count} stderr line(s) matching {pattern!r}")


def schema_ready_re():
    return rf" migrate: schema (at version {LATEST}:|up to date at version {LATEST}$)"


def recorded(server, db):
    return [(int(v), n) for v, n, _ in
            server.psql("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1", db)]


# --------------------------------------------------------------------------------------------
# Migrations
# --------------------------------------------------------------------------------------------

def test_migrations_applied_once_recorded_and_rerun_is_a_noop(dealwire, pg_db):
    server, db, url = pg_db
    d = dealwire("--db", url)
    wait_log(d, schema_ready_re(), 15)
    assert recorded(server, db) == MIGRATIONS
    applied = log_lines(d, r" migrate: applied migration ")
    assert len(applied) == len(MIGRATIONS), applied
    stamps = server.psql("SELECT version, applied_at FROM schema_migrations ORDER BY 1", db)

    tables = {r[0] for r in server.psql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db)}
    assert TABLES <= tables, TABLES - tables

    # Indexes for the monitors' queries.
    indexes = dict(server.psql(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'", db))
    assert "(created_at)" in indexes["deals_created_at_idx"]
    assert "(deal_id) WHERE active" in indexes["price_watches_deal_active_idx"]
    assert "(user_id)" in indexes["price_watches_user_idx"]

    # savings_percent and discount are derived from the prices.
    rows = server.psql(
        "INSERT INTO deals (id, title, category, price, original_price) VALUES"
        " ('d1', 'NYC to Paris', 'flight', 299, 549), ('d2', 'Hilton', 'hotel', 120, NULL),"
        " ('d3', 'Up', 'hotel', 200, 150)"
        " RETURNING id, savings_percent, discount", db)
    assert rows == [["d1", "45.5", "250.00"], ["d2", "0.0", "0.00"], ["d3", "0.0", "0.00"]]
    server.psql("UPDATE deals SET price = 449 WHERE id = 'd1'", db)
    assert server.psql("SELECT savings_percent, discount FROM deals WHERE id = 'd1'", db) == \
        [["18.2", "100.00"]]

    # Started again, through DATABASE_URL this time: nothing is applied, nothing changes.
    d.stop()
    d2 = dealwire(env={"DATABASE_URL": url})
    wait_log(d2, rf" migrate: schema up to date at version {LATEST}$", 15)
    assert not log_lines(d2, r" migrate: applied migration ")
    assert server.psql("SELECT version, applied_at FROM schema_migrations ORDER BY 1", db) == \
        stamps
    assert server.value("SELECT count(*) FROM deals", db) == "3"


def test_two_daemons_starting_at_once_on_an_empty_database(dealwire, pg_db):
    server, db, url = pg_db
    with ThreadPoolExecutor(2) as pool:
        daemons = list(pool.map(lambda _: dealwire("--db", url, "--load-demo-data"), range(2)))
    for d in daemons:
        wait_log(d, r" demo: demo data (loaded|already loaded)", 30)
        assert not problem_lines(d), d.stderr_text()

    applied = [line for d in daemons for line in log_lines(d, r" migrate: applied migration ")]
    assert len(applied) == len(MIGRATIONS), applied
    assert recorded(server, db) == MIGRATIONS
    loaded = [line for d in daemons for line in log_lines(d, r" demo: demo data loaded")]
    assert len(loaded) == 1, loaded
    assert server.value("SELECT count(*) FROM deals", db) == "5000"
    assert server.value("SELECT count(*) FROM price_watches", db) == "1500"


def test_a_migration_the_server_refuses_exits_1(pg_db):
    server, db, url = pg_db
    # A table in the way of migration 2: it fails, and is rolled back whole.
    server.psql("CREATE TABLE flights (x integer)", db)
    r = subprocess.run([daemon_binary(), "--host", "127.0.0.1", "--port", str(free_port()),
                        "--db", url], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=daemon_env(), timeout=t(30))
    assert r.returncode == 1, r.stderr
    assert re.search(r' error migrate: migration 002_travel failed: ERROR 42P07: relation '
                     r'"flights" already exists', r.stderr), r.stderr
    assert recorded(server, db) == MIGRATIONS[:1]
    assert server.value("SELECT to_regclass('hotels') IS NULL", db) == "t"
    for pattern in SANITIZER_PATTERNS:
        assert pattern not in r.stderr, r.stderr


def test_a_bad_db_setting_exits_2_without_echoing_it():
    r = subprocess.run([daemon_binary(), "--host", "127.0.0.1", "--port", str(free_port()),
                        "--db", "postgresql://u:s3cret@127.0.0.1/db?bogus=1"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       env=daemon_env(), timeout=t(30))
    assert r.returncode == 2, r.stderr
    assert "invalid value for --db" in r.stderr and "bogus" in r.stderr, r.stderr
    assert "s3cret" not in r.stderr


# --------------------------------------------------------------------------------------------
# Demo data
# --------------------------------------------------------------------------------------------

def test_load_demo_data_fills_the_tables_once(dealwire, pg_db):
    server, db, url = pg_db
    d = dealwire("--db", url, "--load-demo-data")
    wait_log(d, r" demo: demo data loaded: ", 30)

    def counts():
        return server.psql(
            "SELECT (SELECT count(*) FROM deals), (SELECT count(*) FROM flights),"
            " (SELECT count(*) FROM hotels), (SELECT count(*) FROM price_watches)", db)[0]

    first = counts()
    assert first == ["5000", str(12 * 11 * 14 * 2), str(12 * 25), "1500"], first

    # Realistic enough for the monitors and the planner to find their cases.
    assert server.value("SELECT count(DISTINCT origin) FROM flights", db) == "12"
    assert server.value("SELECT count(DISTINCT city) FROM hotels", db) == "12"
    assert int(server.value("SELECT count(*) FROM deals WHERE created_at > now() - interval"
                            " '1 hour' AND (savings_percent > 30 OR discount > 200)", db)) > 0
    assert int(server.value("SELECT count(*) FROM (SELECT deal_id FROM price_watches WHERE"
                            " active GROUP BY deal_id HAVING count(*) >= 3) AS t", db)) >= 5
    assert server.value("SELECT count(*) FROM flights f JOIN hotels h ON h.city ="
                        " f.destination WHERE f.origin = 'NYC' AND f.destination = 'PAR'",
                        db) != "0"

    d.stop()
    d2 = dealwire("--db", url, "--load-demo-data")
    wait_log(d2, r" demo: demo data already loaded$", 30)
    assert counts() == first


# --------------------------------------------------------------------------------------------
# Outages
# --------------------------------------------------------------------------------------------

async def hub_serves(port, user):
    """A client connects, pings, and receives a message published to it."""
    ws, _ = await connect_user(port, user)
    try:
        await barrier(ws)
        answer = await apublish(port, {"target": {"user_id": user}, "message": {
            "type": "notification", "message": "hi", "level": "info"}})
        assert answer["recipients"] == 1, answer
        await recv_until(ws, lambda m: m.get("type") == "notification", 5)
    finally:
        await ws.close()


def test_hub_serves_through_database_outages(dealwire):
    require_postgres()
    server = PgServer(port=free_port())  # not started yet: the daemon comes up first
    try:
        d = dealwire("--db", server.url())

        # Down at start-up: the hub serves, one line says so, the retries stay quiet.
        run(hub_serves(d.port, "alice"))
        wait_log(d, DOWN_RE, 5)
        status, ready = http_get(d.port, "/readyz")
        assert (status, ready["status"], ready["database"]) == (503, "not_ready", "down"), ready
        time.sleep(3.2)  # attempts at 0, 1 and 3 s
        assert len(log_lines(d, DOWN_RE)) == 1, d.stderr_text()
        assert not log_lines(d, r" migrate: ")
        run(hub_serves(d.port, "bob"))

        # The server comes up: the next attempt (backoff 4 s) applies the migrations.
        server.start()
        wait_log(d, schema_ready_re(), 30)
        assert recorded(server, "dealwire") == MIGRATIONS
        status, ready = http_get(d.port, "/readyz")
        assert (status, ready["status"], ready["database"]) == (200, "ready", "up"), ready
        assert ready["schema_version"] == LATEST
        assert len(log_lines(d, BACK_RE)) == 1, d.stderr_text()

        # A restart of the server: the keeper's probe notices within its period, one line;
        # the hub serves meanwhile; the store reconnects when the server is back.
        server.stop()
        wait_log(d, DOWN_RE, 15, count=2)
        assert http_get(d.port, "/readyz")[0] == 503
        run(hub_serves(d.port, "carol"))
        server.start()
        wait_log(d, BACK_RE, 30, count=2)
        time.sleep(1)
        assert len(log_lines(d, DOWN_RE)) == 2, d.stderr_text()
        assert len(log_lines(d, BACK_RE)) == 2, d.stderr_text()
        assert not log_lines(d, r" error "), d.stderr_text()
        assert http_get(d.port, "/readyz")[0] == 200
        run(hub_serves(d.port, "dave"))
    finally:
        server.remove()
