"""The monitors against a real private PostgreSQL (scripts/pg.sh) and real WebSocket clients:
each rule at its edges (hot deals: 29 / 30 / 31 %, a discount of exactly 200 $, the one-hour
window; trending: 3 active watches; price watches: at the threshold, a cent over, inventory at
and over its threshold), announce-once across a restart and between two nodes, price alerts
repeated only on a price change, no round while nobody is connected, a database stopped and
restarted under a running daemon, hostile strings in every column the monitors read or write,
and a price-watch round at 100,000 active watches (timed).

Periods are the flags' minimum, 1 s. Nothing waits by sleeping: a test awaits the messages it
expects, and proves that something was NOT sent with a barrier: it waits until a round that
started after the change has finished (the daemon's debug line "<monitor> round done"), then
publishes a marker to everyone and checks what arrived before the marker.
"""

import asyncio
import json
import re
import socket
import uuid

from conftest import (
    SCALE, apublish, barrier, close_all, connect_user, free_port, problem_lines, recv_json,
    recv_until, run, t,
)
from conftest_pg import PgServer, pg_db, postgres, require_postgres  # noqa: F401

SCHEMA_RE = re.compile(r" migrate: schema (at version \d+:|up to date at version \d+$)")
DOWN_RE = re.compile(r" warn  store: database (unreachable|connection lost)")
BACK_RE = re.compile(r" info  store: database reachable again")
ROUND_RE = re.compile(r" debug monitor: (\w+) round done in ([\d.]+) ms \((.*)\)$")


def log_lines(d, pattern):
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    return [line for line in d.stderr_text().splitlines() if rx.search(line)]


async def await_log(d, pattern, count=1, timeout=20):
    """Wait until at least count lines of d's stderr match pattern; returns them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + t(timeout)
    while True:
        lines = log_lines(d, pattern)
        if len(lines) >= count:
            return lines
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {count} line(s) matching {pattern!r}")
        await asyncio.sleep(0.05)


def round_re(name):
    return re.compile(rf" debug monitor: {name} round done in ")


async def after_next_round(d, name, timeout=20):
    """Returns once a round of monitor `name` that started after this call has finished: the
    one in progress now (if any) logs the next line, the one after it the line after that."""
    n = len(log_lines(d, round_re(name)))
    await await_log(d, round_re(name), n + 2, timeout)


async def quiet_since(d, conns, monitors):
    """Barrier: after the next full round of each monitor, publish a marker to everyone and
    return, per connection, the messages that arrived before it."""
    for name in monitors:
        await after_next_round(d, name)
    marker = uuid.uuid4().hex
    await apublish(d.port, {"target": "all", "message": {
        "type": "notification", "message": "marker", "level": "info", "marker": marker}})
    out = []
    for ws in conns:
        _, before = await recv_until(ws, lambda m: m.get("marker") == marker, 15)
        out.append(before)
    return out


async def collect(ws, predicate, key, want, timeout=20):
    """Read until the messages matching predicate cover the set `want` of key(msg); returns
    {key: [messages]} of every matching message read (duplicates show as lists of 2+)."""
    seen = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + t(timeout)
    while not set(want) <= set(seen):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"saw {sorted(seen)}, wanted {sorted(want)}")
        msg = await recv_json(ws, remaining / SCALE)
        if predicate(msg):
            seen.setdefault(key(msg), []).append(msg)
    return seen


def is_alert(alert_type):
    return lambda m: m.get("type") == "deal_alert" and m.get("alert_type") == alert_type


def is_price_alert(m):
    return m.get("type") == "price_alert"


def start(dealwire, url, hot=3600, trending=3600, watch=3600, extra=()):
    """A daemon on url with the given periods and debug logging, once its schema is ready."""
    d = dealwire("--db", url, "--hot-deal-interval", hot, "--trending-interval", trending,
                 "--watch-interval", watch, "--log-level", "debug", *extra)
    run(await_log(d, SCHEMA_RE, 1, 30))
    return d


LEADS_RE = re.compile(r" info  leader: \S+ leads the monitors ")
PEERS_RE = re.compile(r" warn  leader: \d+ other dealwire nodes? shares? this database without")


async def leader_of(*daemons, timeout=15):
    """(the daemon that leads the monitors, the others), once one says so."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + t(timeout)
    while True:
        leading = [d for d in daemons if log_lines(d, LEADS_RE)]
        if leading:
            assert len(leading) == 1, "two nodes lead the monitors"
            return leading[0], *[d for d in daemons if d is not leading[0]]
        if loop.time() > deadline:
            raise AssertionError("no node leads the monitors")
        await asyncio.sleep(0.05)


def no_warnings(d):
    bad = problem_lines(d)
    assert not bad, "\n".join(bad)


def node_of(d):
    return f"{socket.gethostname()}:{d.port}"


# --------------------------------------------------------------------------------------------
# Hot deals
# --------------------------------------------------------------------------------------------

HOT_DEALS = """
INSERT INTO deals (id, title, category, price, original_price, metadata, created_at) VALUES
 ('h-31pct',   'NYC to Paris', 'flight', 69,    100,     '{"origin": "NYC"}', now()),
 ('n-29pct',   '29 %',         'flight', 71,    100,     '{}', now()),
 ('n-30pct',   'exactly 30 %', 'flight', 70,    100,     '{}', now()),
 ('h-30.1pct', '30.1 %',       'hotel',  69.90, 100,     '{}', now()),
 ('n-200',     'exactly 200',  'hotel',  1000,  1200,    '{}', now()),
 ('h-200.01',  '200.01',       'hotel',  1000,  1200.01, '{}', now()),
 ('n-61min',   'too old',      'hotel',  10,    100,     '{}', now() - interval '61 minutes'),
 ('h-59min',   'recent',       'hotel',  10,    100,     '{}', now() - interval '59 minutes'),
 ('n-noorig',  'no original',  'car',    10,    NULL,    '{}', now()),
 ('n-up',      'price went up','car',    200,   150,     '{}', now())
"""
HOT = {"h-31pct", "h-30.1pct", "h-200.01", "h-59min"}


def test_hot_deal_rule_at_its_edges_to_everyone_once(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, hot=1)

    async def main():
        alice, _ = await connect_user(d.port, "alice")
        bob, _ = await connect_user(d.port, "bob")
        server.psql(HOT_DEALS, db)
        for ws in (alice, bob):
            seen = await collect(ws, is_alert("hot_deal"), lambda m: m["deal_id"], HOT)
            assert all(len(v) == 1 for v in seen.values()), seen
            m = seen["h-31pct"][0]
            assert m == {**m, "type": "deal_alert", "deal_id": "h-31pct", "title": "NYC to Paris",
                         "price": 69, "category": "flight", "metadata": {"origin": "NYC"},
                         "alert_type": "hot_deal", "savings_percent": 31, "discount": 31}, m
            assert seen["h-200.01"][0]["discount"] == 200.01
            assert seen["h-30.1pct"][0]["savings_percent"] == 30.1
        # Two more rounds: nothing else, and nothing twice.
        for before in await quiet_since(d, [alice, bob], ["hot_deals"]):
            assert not [m for m in before if m.get("type") == "deal_alert"], before
        await close_all([alice, bob])

    run(main())
    rows = server.psql("SELECT deal_id, node FROM hot_deal_announcements ORDER BY 1", db)
    assert rows == [[deal, node_of(d)] for deal in sorted(HOT)], rows
    no_warnings(d)


def test_no_round_while_nobody_is_connected(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, hot=1)
    idle = r" debug monitor: hot_deals round skipped: no connections"

    async def main():
        server.psql("INSERT INTO deals (id, title, category, price, original_price)"
                    " VALUES ('q1', 'Quiet', 'hotel', 10, 100)", db)
        n = len(log_lines(d, idle))
        await await_log(d, idle, n + 2)  # a whole round skipped after the insert
        assert server.value("SELECT count(*) FROM hot_deal_announcements", db) == "0"
        assert not log_lines(d, round_re("hot_deals"))
        # Still hot: announced as soon as someone is there.
        ws, _ = await connect_user(d.port, "alice")
        await collect(ws, is_alert("hot_deal"), lambda m: m["deal_id"], {"q1"})
        await ws.close()

    run(main())
    no_warnings(d)


def test_hot_deals_announced_once_across_a_restart_and_between_two_nodes(dealwire, pg_db):
    server, db, url = pg_db
    d1 = start(dealwire, url, hot=1)

    async def first():
        ws, _ = await connect_user(d1.port, "alice")
        server.psql("INSERT INTO deals (id, title, category, price, original_price)"
                    " VALUES ('r1', 'Before the restart', 'hotel', 10, 100)", db)
        await collect(ws, is_alert("hot_deal"), lambda m: m["deal_id"], {"r1"})
        await ws.close()

    run(first())
    assert d1.stop() == 0

    # Two nodes on the same database, a client on each: one leads the monitors and announces
    # every new deal, once, to its clients; r1 (announced before the restart) nobody. Both say
    # loudly that the other's clients miss its live alerts.
    d2 = start(dealwire, url, hot=1)
    d3 = start(dealwire, url, hot=1)
    fresh = {f"r{i}" for i in range(2, 12)}
    leader, other = run(leader_of(d2, d3))

    async def second():
        cl, _ = await connect_user(leader.port, "alice")
        co, _ = await connect_user(other.port, "bob")
        values = ", ".join(f"('{i}', 'After', 'hotel', 10, 100)" for i in sorted(fresh))
        server.psql(f"INSERT INTO deals (id, title, category, price, original_price)"
                    f" VALUES {values}", db)
        got = await collect(cl, is_alert("hot_deal"), lambda m: m["deal_id"], fresh)
        (before,) = await quiet_since(leader, [cl], ["hot_deals"])
        ids = [m["deal_id"] for ms in got.values() for m in ms]
        ids += [m["deal_id"] for m in before if is_alert("hot_deal")(m)]
        assert sorted(ids) == sorted(fresh), ids  # each once, r1 never
        assert not [m for m in await barrier(co) if is_alert("hot_deal")(m)]
        await close_all([cl, co])

    run(second())
    rows = dict(server.psql("SELECT deal_id, node FROM hot_deal_announcements", db))
    assert set(rows) == fresh | {"r1"}
    assert rows["r1"] == node_of(d1)
    assert {rows[i] for i in fresh} == {node_of(leader)}
    assert log_lines(other, round_re("hot_deals")) == []
    for d in (d2, d3):
        run(await_log(d, PEERS_RE))
        bad = [line for line in problem_lines(d) if not PEERS_RE.search(line)]
        assert not bad, "\n".join(bad)


def test_the_next_node_leads_when_the_leader_dies(dealwire, pg_db):
    # The leader killed with SIGKILL: its session ends, PostgreSQL releases the lock, and the
    # other node leads within a few seconds (one monitor period is 60 s by default) and
    # announces the next hot deal, once; the dead node's last one is not announced again.
    server, db, url = pg_db
    d1 = start(dealwire, url, hot=1)
    d2 = start(dealwire, url, hot=1)
    leader, other = run(leader_of(d1, d2))

    async def main():
        co, _ = await connect_user(other.port, "carl")
        cl, _ = await connect_user(leader.port, "dina")
        server.psql("INSERT INTO deals (id, title, category, price, original_price)"
                    " VALUES ('k1', 'Before', 'hotel', 10, 100)", db)
        await collect(cl, is_alert("hot_deal"), lambda m: m["deal_id"], {"k1"})
        leader.kill_9()
        await await_log(other, LEADS_RE, 1, 10)
        server.psql("INSERT INTO deals (id, title, category, price, original_price)"
                    " VALUES ('k2', 'After', 'hotel', 10, 100)", db)
        got = await collect(co, is_alert("hot_deal"), lambda m: m["deal_id"], {"k2"})
        (before,) = await quiet_since(other, [co], ["hot_deals"])
        ids = [m["deal_id"] for ms in got.values() for m in ms]
        ids += [m["deal_id"] for m in before if is_alert("hot_deal")(m)]
        assert ids == ["k2"], ids
        await co.close()

    run(main(), timeout=90)
    rows = dict(server.psql("SELECT deal_id, node FROM hot_deal_announcements", db))
    assert rows == {"k1": node_of(leader), "k2": node_of(other)}, rows
    nodes = server.psql("SELECT node, leader FROM dealwire_nodes ORDER BY node", db)
    assert [node_of(other), "t"] in nodes, nodes


def test_a_node_alone_leads_and_leaves_the_nodes_table_at_its_stop(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)
    run(await_log(d, LEADS_RE, 1, 10))
    assert server.psql("SELECT node, leader, redis FROM dealwire_nodes", db) == \
        [[node_of(d), "t", "f"]]
    assert not log_lines(d, PEERS_RE)
    assert d.stop() == 0
    assert server.value("SELECT count(*) FROM dealwire_nodes", db) == "0"


# --------------------------------------------------------------------------------------------
# Trending
# --------------------------------------------------------------------------------------------

def test_trending_needs_three_active_watches(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, trending=1)
    server.psql("""
        INSERT INTO deals (id, title, category, price, original_price, created_at) VALUES
         ('t4', 'Four watchers', 'hotel', 80, 100, now() - interval '1 day'),
         ('t3', 'Three watchers', 'flight', 300, NULL, now() - interval '1 day'),
         ('t2', 'Two active, one not', 'hotel', 80, 100, now() - interval '1 day');
        INSERT INTO price_watches (user_id, deal_id, threshold_price, active) VALUES
         ('u1', 't4', 1, true), ('u2', 't4', 1, true), ('u3', 't4', 1, true),
         ('u4', 't4', 1, true), ('u1', 't3', 1, true), ('u2', 't3', 1, true),
         ('u3', 't3', 1, true), ('u1', 't2', 1, true), ('u2', 't2', 1, true),
         ('u3', 't2', 1, false);
    """, db)

    async def main():
        ws, _ = await connect_user(d.port, "alice")
        seen = await collect(ws, is_alert("trending"), lambda m: m["deal_id"], {"t3", "t4"})
        assert seen["t3"][0] == {**seen["t3"][0], "title": "Three watchers", "price": 300,
                                 "category": "flight", "alert_type": "trending"}
        assert "discount" not in seen["t3"][0]  # no original price
        (before,) = await quiet_since(d, [ws], ["trending"])
        trending = [m["deal_id"] for m in before if is_alert("trending")(m)]
        # Every round sends both, the most watched first; t2 never.
        assert trending and trending == ["t4", "t3"] * (len(trending) // 2), trending
        await ws.close()

    run(main())
    no_warnings(d)


# --------------------------------------------------------------------------------------------
# Price watches
# --------------------------------------------------------------------------------------------

WATCH_DEALS = """
INSERT INTO deals (id, title, category, price, original_price, inventory) VALUES
 ('w-at',       'At the threshold', 'hotel',  150,    200,  50),
 ('w-above',    'A cent above',     'hotel',  150.01, 200,  50),
 ('w-below',    'Hilton NYC',       'hotel',  120,    200,  50),
 ('w-inv',      'Five rooms',       'hotel',  500,    NULL, 5),
 ('w-inv6',     'Six rooms',        'hotel',  500,    NULL, 6),
 ('w-both',     'Both reasons',     'flight', 90,     NULL, 2),
 ('w-inactive', 'Inactive watch',   'hotel',  10,     NULL, 1),
 ('w-invonly',  'Inventory only',   'hotel',  80,     NULL, 1),
 ('w-bob',      'Bob''s deal',      'car',    10,     NULL, NULL);
INSERT INTO price_watches (user_id, deal_id, threshold_price, inventory_threshold, active) VALUES
 ('alice', 'w-at',       150,  NULL, true),
 ('alice', 'w-above',    150,  NULL, true),
 ('alice', 'w-below',    150,  NULL, true),
 ('alice', 'w-inv',      100,  5,    true),
 ('alice', 'w-inv6',     100,  5,    true),
 ('alice', 'w-both',     100,  3,    true),
 ('alice', 'w-inactive', 100,  NULL, false),
 ('alice', 'w-invonly',  NULL, 1,    true),
 ('bob',   'w-bob',      20,   NULL, true);
"""


def alert_fields(m):
    keys = ("deal_id", "title", "current_price", "threshold", "drop_amount", "drop_percent",
            "reasons")
    return {k: m.get(k) for k in keys}


def test_price_watch_rule_at_its_edges_and_again_only_on_a_price_change(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, watch=1)

    async def main():
        alice, _ = await connect_user(d.port, "alice")
        bob, _ = await connect_user(d.port, "bob")
        carol, _ = await connect_user(d.port, "carol")  # watches nothing
        server.psql(WATCH_DEALS, db)

        want = {
            "w-at": ("At the threshold", 150, 150, 0, 0, ["Price is at your threshold of $150"]),
            "w-below": ("Hilton NYC", 120, 150, 30, 20, ["Price dropped by $30"]),
            "w-inv": ("Five rooms", 500, 100, 0, 0, ["Only 5 rooms left"]),
            "w-both": ("Both reasons", 90, 100, 10, 10,
                       ["Price dropped by $10", "Only 2 seats left"]),
            "w-invonly": ("Inventory only", 80, 80, 0, 0, ["Only 1 room left"]),
        }
        seen = await collect(alice, is_price_alert, lambda m: m["deal_id"], set(want))
        for deal, (title, price, threshold, drop, pct, reasons) in want.items():
            assert len(seen[deal]) == 1, seen[deal]
            assert alert_fields(seen[deal][0]) == {
                "deal_id": deal, "title": title, "current_price": price, "threshold": threshold,
                "drop_amount": drop, "drop_percent": pct, "reasons": reasons}, seen[deal][0]
        msg, _ = await recv_until(bob, is_price_alert)
        assert alert_fields(msg) == {"deal_id": "w-bob", "title": "Bob's deal",
                                     "current_price": 10, "threshold": 20, "drop_amount": 10,
                                     "drop_percent": 50, "reasons": ["Price dropped by $10"]}

        # Unchanged prices: nothing again, for anyone; nothing of alice's to the others.
        for who, before in zip(("alice", "bob", "carol"),
                               await quiet_since(d, [alice, bob, carol], ["price_watches"])):
            assert not [m for m in before if is_price_alert(m)], (who, before)

        # A new price alerts again; an inventory change alone does not; a price a cent above
        # the threshold that comes down does.
        server.psql("UPDATE deals SET price = 110 WHERE id = 'w-below';"
                    "UPDATE deals SET inventory = 4 WHERE id = 'w-inv';"
                    "UPDATE deals SET price = 149 WHERE id = 'w-above'", db)
        seen = await collect(alice, is_price_alert, lambda m: m["deal_id"],
                             {"w-below", "w-above"})
        assert set(seen) == {"w-below", "w-above"}, seen
        assert alert_fields(seen["w-below"][0]) == {
            "deal_id": "w-below", "title": "Hilton NYC", "current_price": 110, "threshold": 150,
            "drop_amount": 40, "drop_percent": 26.7, "reasons": ["Price dropped by $40"]}
        assert seen["w-above"][0]["reasons"] == ["Price dropped by $1"]

        # Out of the rule and back at the same price: matching again alerts again.
        server.psql("UPDATE deals SET price = 151 WHERE id = 'w-at'", db)
        (before,) = await quiet_since(d, [alice], ["price_watches"])
        assert not [m for m in before if is_price_alert(m)], before
        assert server.value("SELECT count(*) FROM price_watch_alerts a JOIN price_watches w"
                            " ON w.id = a.watch_id WHERE w.deal_id = 'w-at'", db) == "0"
        server.psql("UPDATE deals SET price = 150 WHERE id = 'w-at'", db)
        msg, _ = await recv_until(alice, is_price_alert)
        assert msg["deal_id"] == "w-at" and msg["current_price"] == 150, msg
        (before,) = await quiet_since(d, [alice], ["price_watches"])
        assert not [m for m in before if is_price_alert(m)], before
        await close_all([alice, bob, carol])

    run(main())
    recorded = dict(server.psql(
        "SELECT w.deal_id, a.price FROM price_watch_alerts a JOIN price_watches w"
        " ON w.id = a.watch_id", db))
    assert recorded == {"w-at": "150.00", "w-above": "149.00", "w-below": "110.00",
                        "w-inv": "500.00", "w-both": "90.00", "w-invonly": "80.00",
                        "w-bob": "10.00"}, recorded
    no_warnings(d)


# --------------------------------------------------------------------------------------------
# Outages
# --------------------------------------------------------------------------------------------

def test_monitors_resume_after_the_database_restarts(dealwire):
    require_postgres()
    server = PgServer(port=free_port()).start()
    try:
        d = start(dealwire, server.url(), hot=1, watch=1)
        skipped = r" debug monitor: (hot_deals|price_watches) round skipped: database unavailable"

        async def main():
            ws, _ = await connect_user(d.port, "alice")
            server.psql("INSERT INTO deals (id, title, category, price, original_price)"
                        " VALUES ('o1', 'Before', 'hotel', 10, 100)")
            await collect(ws, is_alert("hot_deal"), lambda m: m["deal_id"], {"o1"})

            server.stop()
            await await_log(d, DOWN_RE)
            await await_log(d, skipped, 3)  # rounds keep coming, and skip

            server.start()
            await await_log(d, BACK_RE, 1, 60)
            server.psql("INSERT INTO deals (id, title, category, price, original_price)"
                        " VALUES ('o2', 'After', 'hotel', 10, 100);"
                        "INSERT INTO price_watches (user_id, deal_id, threshold_price)"
                        " VALUES ('alice', 'o2', 10)")
            await collect(ws, is_alert("hot_deal"), lambda m: m["deal_id"], {"o2"}, 60)
            msg, _ = await recv_until(ws, is_price_alert, 60)
            assert msg["deal_id"] == "o2"
            await ws.close()

        run(main())
        assert d.running()
        assert len(log_lines(d, DOWN_RE)) == 1, d.stderr_text()
        assert not problem_lines(d, r" warn  monitor:| error "), d.stderr_text()
    finally:
        server.remove()


def test_a_failing_round_warns_once_then_at_most_once_a_minute(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, hot=1, watch=1)
    failed = r" warn  monitor: price_watches round failed: ERROR 42P01: "

    async def main():
        ws, _ = await connect_user(d.port, "alice")
        await after_next_round(d, "price_watches")
        server.psql("DROP TABLE price_watch_alerts", db)
        await await_log(d, failed)
        n = len(log_lines(d, round_re("hot_deals")))
        await await_log(d, round_re("hot_deals"), n + 4)  # a few watch rounds failed meanwhile
        await ws.close()

    run(main())
    assert len(problem_lines(d, r" warn ")) == 1, d.stderr_text()
    assert d.running()


# --------------------------------------------------------------------------------------------
# Hostile strings
# --------------------------------------------------------------------------------------------

# SQL, quoting, placeholders, format directives, backslashes and non-ASCII, in every column the
# monitors read (deals: id, title, category, metadata; price_watches: user_id, deal_id) and
# through the values they write (hot_deal_announcements.deal_id, price_watch_alerts).
EVIL_ID = "x'); DROP TABLE deals; --$1 %s%n \\ é"
EVIL_TITLE = "Robert'); DELETE FROM price_watches; -- \" $2::text %x%n\t☃"
EVIL_CATEGORY = "hotel' OR '1'='1"
EVIL_META = {"k": "'; TRUNCATE hot_deal_announcements; --", "$1": "%s"}
EVIL_USER = "mallory:'--@x"  # a user id a client can connect as (no quote: see below)
BAD_USER = "eve'; DROP TABLE price_watch_alerts; --"  # not a valid user id: reaches nobody


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def test_hostile_strings_stay_data(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, hot=1, trending=1, watch=1)
    evil_user = EVIL_USER.replace("'", "")  # user ids are [A-Za-z0-9_.:@-]
    server.psql(f"""
        INSERT INTO deals (id, title, category, price, original_price, inventory, metadata)
        VALUES ({sql_str(EVIL_ID)}, {sql_str(EVIL_TITLE)}, {sql_str(EVIL_CATEGORY)}, 10, 100,
                2, {sql_str(json.dumps(EVIL_META))});
        INSERT INTO price_watches (user_id, deal_id, threshold_price, inventory_threshold)
        VALUES ({sql_str(evil_user)}, {sql_str(EVIL_ID)}, 20, 2),
               ({sql_str(BAD_USER)}, {sql_str(EVIL_ID)}, 20, NULL),
               ('u3', {sql_str(EVIL_ID)}, 20, NULL);
    """, db)

    async def main():
        ws, _ = await connect_user(d.port, evil_user)
        want = {"hot_deal", "trending", "price_alert"}
        seen = await collect(ws, lambda m: m.get("type") in ("deal_alert", "price_alert"),
                             lambda m: m.get("alert_type", m["type"]), want)
        for kind in ("hot_deal", "trending"):
            m = seen[kind][0]
            assert (m["deal_id"], m["title"], m["category"], m["metadata"]) == \
                (EVIL_ID, EVIL_TITLE, EVIL_CATEGORY, EVIL_META), m
        p = seen["price_alert"][0]
        assert (p["deal_id"], p["title"], p["current_price"]) == (EVIL_ID, EVIL_TITLE, 10), p
        # The category is not "hotel", so the inventory has no unit.
        assert p["reasons"] == ["Price dropped by $10", "Only 2 left"], p
        await quiet_since(d, [ws], ["hot_deals", "price_watches"])
        await ws.close()

    run(main())
    assert server.psql("SELECT deal_id FROM hot_deal_announcements", db) == [[EVIL_ID]]
    assert server.value("SELECT count(*) FROM deals", db) == "1"
    assert server.value("SELECT count(*) FROM price_watches", db) == "3"
    # All three watches matched and were recorded, the one nobody can receive included.
    assert server.value("SELECT count(*) FROM price_watch_alerts", db) == "3"
    no_warnings(d)


# --------------------------------------------------------------------------------------------
# Scale
# --------------------------------------------------------------------------------------------

def test_price_watch_round_at_100k_active_watches(dealwire, pg_db, record_property):
    """100,000 active watches on 20,000 deals, about half matching: the first round claims and
    sends every alert (batches of 20,000), the next ones find nothing new. Both must fit in
    the default 30 s period with room to spare; the times are printed and recorded."""
    server, db, url = pg_db
    d = start(dealwire, url, watch=1, trending=1)
    server.psql("""
        INSERT INTO deals (id, title, category, price, original_price, inventory, created_at)
        SELECT 'p' || i, 'Deal ' || i, CASE WHEN i % 2 = 0 THEN 'hotel' ELSE 'flight' END,
               100 + i % 100, 250, i % 50, now() - interval '1 day'
        FROM generate_series(1, 20000) AS i;
        INSERT INTO price_watches (user_id, deal_id, threshold_price, inventory_threshold)
        SELECT 'user' || (i % 10000), 'p' || (1 + i % 20000), 100 + i % 200,
               CASE WHEN i % 3 = 0 THEN 5 END
        FROM generate_series(1, 100000) AS i;
        ANALYZE deals; ANALYZE price_watches;
    """, db)
    matching = int(server.value(
        "SELECT count(*) FROM price_watches w JOIN deals d ON d.id = w.deal_id WHERE w.active"
        " AND (d.price <= w.threshold_price OR d.inventory <= w.inventory_threshold)", db))
    # The client: the user with the most matching watches.
    user, mine = server.psql(
        "SELECT w.user_id, count(*) FROM price_watches w JOIN deals d ON d.id = w.deal_id"
        " WHERE w.active"
        " AND (d.price <= w.threshold_price OR d.inventory <= w.inventory_threshold)"
        " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1", db)[0]
    mine = int(mine)
    assert server.value("SELECT count(*) FROM price_watches WHERE active", db) == "100000"

    def rounds(name):
        out = []
        for line in log_lines(d, ROUND_RE):
            m = ROUND_RE.search(line)
            if m.group(1) == name:
                out.append((float(m.group(2)), m.group(3)))
        return out

    async def main():
        ws, _ = await connect_user(d.port, user)
        n = len(rounds("price_watches"))
        await await_log(d, round_re("price_watches"), n + 3, 120)
        (before,) = await quiet_since(d, [ws], ["price_watches"])
        got = [m for m in before if is_price_alert(m)]
        assert mine > 0 and len(got) == mine, (len(got), mine)
        assert all(m["current_price"] <= m["threshold"] or m["reasons"][-1].startswith("Only")
                   for m in got), got
        await ws.close()

    run(main())
    done = rounds("price_watches")
    first = next(r for r in done if not r[1].startswith("0 price alerts"))
    steady = [ms for ms, what in done if what.startswith("0 price alerts")]
    trending = [ms for ms, _ in rounds("trending")]
    assert first[1].startswith(f"{matching} price alerts, {mine} deliveries"), (first, matching)
    report = (f"price_watches at 100,000 active watches ({matching} matching): first round "
              f"{first[0]:.0f} ms ({first[1]}); steady state median "
              f"{sorted(steady)[len(steady) // 2]:.0f} ms over {len(steady)} rounds; trending "
              f"median {sorted(trending)[len(trending) // 2]:.0f} ms")
    print(report)
    record_property("monitor_100k", report)
    # "Within one period with room to spare": a third of the default 30 s at most.
    assert first[0] < 10000 and max(steady) < 10000, report
