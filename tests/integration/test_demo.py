"""The demo data set and its market simulator (--demo-activity), against a real private
PostgreSQL (scripts/pg.sh) and real WebSocket clients: the dashboard's default user owns met
watches after every load; the simulator's ticks bring that user new hot deals and price alerts;
they run only while a client is connected; they change nothing but demo rows; the simulated
deals are capped; a tick skips while the database is down; and the setting's bad values and
its need for --load-demo-data (and --db) exit 2.

Nothing waits by sleeping: a test awaits the messages it expects, or the daemon's debug lines
("demo_activity round done ..." / "... round skipped: ..."), each with a deadline.
"""

import asyncio
import math
import re
from decimal import Decimal

import pytest

from conftest import SCALE, connect_user, free_port, problem_lines, recv_json, run, run_bad_start, t
from conftest_pg import PgServer, pg_db, postgres, require_postgres  # noqa: F401
from test_config_cli import assert_names, listen_args, run_cli
from test_monitors import BACK_RE, DOWN_RE, await_log, is_alert, is_price_alert, log_lines

USER = "demo-user-001"  # the dashboard's default user (web/dashboard.js)
SIM = "demo-deal-sim-"
SIM_CAP = 10000

LOADED_RE = re.compile(r" info  demo: demo data loaded: ")
TICK_RE = re.compile(
    r" debug monitor: demo_activity round done in [\d.]+ ms \(added (?P<added>\S+) "
    r"\((?P<off>[\d.]*) % off\); (?:(?P<dropped>\S+) (?P<old>[\d.]+) -> (?P<new>[\d.]+) under "
    r"(?P<watcher>\S+)'s (?P<threshold>[\d.]+)|no demo watch to go under); "
    r"(?P<raised>\S+) back up; (?P<pruned>\d+) pruned\)$")
IDLE_RE = re.compile(r" debug monitor: demo_activity round skipped: no connections$")
DB_SKIP_RE = re.compile(r" debug monitor: demo_activity round skipped: database unavailable")


def start(dealwire, url, activity=1, hot=1, watch=1):
    """A daemon with the demo data and the simulator, once the data is loaded. Trending is
    left out (3600 s): it would only add traffic."""
    d = dealwire("--db", url, "--load-demo-data", "--demo-activity", activity,
                 "--hot-deal-interval", hot, "--watch-interval", watch,
                 "--trending-interval", 3600, "--log-level", "debug")
    run(await_log(d, LOADED_RE, 1, 60))
    return d


def ticks(d):
    """The simulator's ticks so far, as dicts of TICK_RE's groups."""
    return [TICK_RE.search(line).groupdict() for line in log_lines(d, TICK_RE)]


async def more_lines(d, rx, n=2, timeout=20):
    """Waits for n more lines matching rx than there are now. With n = 2, a whole tick of that
    kind began and ended after the call."""
    await await_log(d, rx, len(log_lines(d, rx)) + n, timeout)


def sim_count(server, db):
    return int(server.value(f"SELECT count(*) FROM deals WHERE starts_with(id, '{SIM}')", db))


def no_warnings(d):
    bad = problem_lines(d)
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------------------------
# The load: the dashboard's default user
# --------------------------------------------------------------------------------------------

USER_WATCHES = f"""
SELECT d.category, w.deal_id, w.threshold_price, d.price, d.price <= w.threshold_price
FROM price_watches w JOIN deals d ON d.id = w.deal_id
WHERE w.user_id = '{USER}' ORDER BY d.category
"""
FIRST_OF_EACH_CATEGORY = """
SELECT DISTINCT ON (category) category, id FROM deals ORDER BY category, id
"""


def test_load_gives_the_dashboard_user_met_watches_every_time(dealwire, pg_db):
    server, db, url = pg_db
    d = dealwire("--db", url, "--load-demo-data", "--watch-interval", 1,
                 "--hot-deal-interval", 3600, "--trending-interval", 3600)
    run(await_log(d, LOADED_RE, 1, 60))

    rows = server.psql(USER_WATCHES, db)
    first = dict(server.psql(FIRST_OF_EACH_CATEGORY, db))
    assert [r[0] for r in rows] == ["activity", "car", "flight", "hotel", "package"], rows
    met = set()
    for category, deal, threshold, price, is_met in rows:
        assert deal == first[category], (category, deal, first)
        if category in ("flight", "hotel", "package"):
            # 10 % over the price, rounded up to whole dollars: met.
            assert Decimal(threshold) == math.ceil(Decimal(price) * Decimal("1.1")), rows
            assert is_met == "t", rows
            met.add(deal)
        else:
            # 10 % under, rounded down: not met yet.
            assert Decimal(threshold) == math.floor(Decimal(price) * Decimal("0.9")), rows
            assert is_met == "f", rows
    # The random watches go to the other users; the total is the documented one.
    assert server.value("SELECT count(*) FROM price_watches", db) == "1500"

    # The dashboard's user sees the three alerts as soon as it connects.
    async def main():
        ws, _ = await connect_user(d.port, USER)
        seen = {}
        while set(seen) != met:
            m = await recv_json(ws, 20)
            if is_price_alert(m):
                assert m["deal_id"] in met, m
                seen[m["deal_id"]] = m
        await ws.close()
        return seen

    seen = run(main())
    assert all(m["current_price"] <= m["threshold"] for m in seen.values()), seen
    assert d.stop() == 0

    # A database loaded before these watches existed (here: they were deleted) gets them on
    # the next load, and only them; the load after that adds nothing.
    server.psql(f"DELETE FROM price_watches WHERE user_id = '{USER}'", db)
    d2 = dealwire("--db", url, "--load-demo-data")
    lines = run(await_log(d2, LOADED_RE, 1, 60))
    assert lines[0].endswith("0 deals, 0 flights, 0 hotels, 5 watches"), lines
    assert server.psql(USER_WATCHES, db) == rows
    assert d2.stop() == 0
    d3 = dealwire("--db", url, "--load-demo-data")
    run(await_log(d3, r" info  demo: demo data already loaded$", 1, 60))
    assert server.value("SELECT count(*) FROM price_watches", db) == "1500"


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------

def test_simulator_brings_new_hot_deals_and_price_alerts(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)
    # The prices before any tick: no client has connected, so no tick has run.
    loaded = dict(server.psql(f"SELECT d.id, d.price FROM price_watches w JOIN deals d"
                              f" ON d.id = w.deal_id WHERE w.user_id = '{USER}'", db))
    assert len(loaded) == 5 and not ticks(d)

    async def main():
        ws, _ = await connect_user(d.port, USER)
        hot, alerts = [], []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + t(30)
        # Two hot deals and two price alerts at prices the simulator set.
        while len(hot) < 2 or len(alerts) < 2:
            m = await recv_json(ws, (deadline - loop.time()) / SCALE)
            if is_alert("hot_deal")(m) and m["deal_id"].startswith(SIM):
                hot.append(m)
            elif is_price_alert(m) and float(loaded.get(m["deal_id"], -1)) != m["current_price"]:
                alerts.append(m)
        # Stopped with the client still there and ticks running: a clean exit.
        assert await asyncio.get_running_loop().run_in_executor(None, d.stop) == 0
        await ws.close()
        return hot, alerts

    hot, alerts = run(main())
    done = ticks(d)
    added = {tk["added"]: tk for tk in done}
    for m in hot:
        assert m["deal_id"] in added, (m, done)
        assert 31 <= m["savings_percent"] <= 60, m
        assert m["category"] in ("flight", "hotel", "package", "car", "activity"), m
        assert m["title"] and m["price"] > 0 and m["discount"] > 0, m
        assert m["metadata"]["demo"] is True, m
        row = server.psql(f"SELECT savings_percent, now() - created_at < interval '5 minutes'"
                          f" FROM deals WHERE id = '{m['deal_id']}'", db)
        assert row == [[added[m["deal_id"]]["off"], "t"]], row
    moves = {(tk["dropped"], float(tk["new"])): tk for tk in done if tk["dropped"]}
    for m in alerts:
        tk = moves.get((m["deal_id"], m["current_price"]))
        assert tk, (m, done)  # a price a tick set
        assert tk["watcher"] == USER and float(tk["threshold"]) == m["threshold"], (m, tk)
        assert m["current_price"] < m["threshold"], m
        assert m["reasons"][0].startswith("Price dropped by $"), m
    assert len({(m["deal_id"], m["current_price"]) for m in alerts}) == len(alerts), alerts
    # The dashboard's user first: every tick moved one of its watches.
    assert all(tk["watcher"] == USER for tk in done if tk["dropped"]), done
    no_warnings(d)


def test_deals_grow_only_while_a_client_is_connected(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, hot=3600, watch=3600)

    async def main():
        await more_lines(d, IDLE_RE)  # a whole tick skipped, with nobody there
        assert sim_count(server, db) == 0 and not ticks(d)

        ws, _ = await connect_user(d.port, "someone")
        await more_lines(d, TICK_RE, 3)
        await ws.close()
        await more_lines(d, IDLE_RE)  # nobody again, for a whole tick
        grown = sim_count(server, db)
        assert grown >= 3 and grown == len(ticks(d)), (grown, ticks(d))

        await more_lines(d, IDLE_RE, 3)
        assert sim_count(server, db) == grown

        ws, _ = await connect_user(d.port, "someone")
        await more_lines(d, TICK_RE, 1)
        await ws.close()
        assert sim_count(server, db) > grown

    run(main())
    no_warnings(d)


# Rows that are not demo rows, each watched by the dashboard's user with a threshold 10 %
# under its price: if the simulator took a watch's deal without checking its id, these would
# be its first picks (the user's watches not met yet). The ids look like demo ids to a LIKE
# pattern with wildcards, or to a case-insensitive or unanchored match.
FOREIGN = ["real-deal-1", "demo_deal_00077", "DEMO-deal-00001", "xdemo-deal-00002", "demo-deal",
           "demo-dealer-3"]


def test_simulator_changes_only_demo_rows(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, hot=3600)
    values = ", ".join(f"('{i}', 'Not a demo deal {n}', 'hotel', {100 + n}, {200 + n},"
                       f" now() - interval '{n} hours')" for n, i in enumerate(FOREIGN))
    ids = ", ".join(f"'{i}'" for i in FOREIGN)
    server.psql(f"INSERT INTO deals (id, title, category, price, original_price, created_at)"
                f" VALUES {values};"
                f"INSERT INTO price_watches (user_id, deal_id, threshold_price)"
                f" SELECT '{USER}', id, round(price * 0.9, 2) FROM deals WHERE id IN ({ids});"
                # A user who is not a demo user, on a demo deal: never a watch the simulator
                # goes under.
                f"INSERT INTO price_watches (user_id, deal_id, threshold_price)"
                f" SELECT 'alice', id, round(price * 0.5, 2) FROM deals"
                f" WHERE id = 'demo-deal-04999'", db)
    foreign = ("SELECT id, title, category, price, original_price, inventory, metadata,"
               " created_at FROM deals WHERE NOT starts_with(id, 'demo-deal-') ORDER BY id")
    watches = "SELECT * FROM price_watches ORDER BY id"
    prices = "SELECT id, price FROM deals ORDER BY id"
    before = server.psql(foreign, db), server.psql(watches, db), dict(server.psql(prices, db))
    assert len(before[0]) == len(FOREIGN)

    async def main():
        ws, _ = await connect_user(d.port, USER)
        await more_lines(d, TICK_RE, 8)
        await ws.close()
        await more_lines(d, IDLE_RE)

    run(main())
    assert server.psql(foreign, db) == before[0]
    assert server.psql(watches, db) == before[1]  # the simulator never writes a watch
    after = dict(server.psql(prices, db))
    changed = {i for i in after if before[2].get(i) != after[i]}
    assert changed and all(i.startswith("demo-deal-") for i in changed), changed
    for tk in ticks(d):
        assert tk["dropped"].startswith("demo-deal-") and tk["watcher"] == USER, tk
        assert tk["raised"] == "nothing" or tk["raised"].startswith("demo-deal-"), tk
    no_warnings(d)


def test_simulated_deals_are_capped_oldest_first(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, hot=3600, watch=3600)
    # A full set of simulated deals, one a minute up to an hour ago, and a foreign deal older
    # than all of them.
    server.psql(f"INSERT INTO deals (id, title, category, price, original_price, created_at)"
                f" SELECT '{SIM}' || lpad(i::text, 7, '0'), 'Old simulated deal', 'car', 50,"
                f"  100, now() - interval '1 hour' - ({SIM_CAP} - i) * interval '1 minute'"
                f" FROM generate_series(1, {SIM_CAP}) AS i;"
                f"INSERT INTO deals (id, title, category, price, created_at)"
                f" VALUES ('real-oldest', 'Older than all', 'car', 50, now() - interval '1 year')",
                db)

    async def main():
        ws, _ = await connect_user(d.port, "someone")
        await more_lines(d, TICK_RE, 3)
        await ws.close()
        await more_lines(d, IDLE_RE)

    run(main())
    n = len(ticks(d))
    assert all(tk["pruned"] == "1" for tk in ticks(d)), ticks(d)
    assert sim_count(server, db) == SIM_CAP
    ids = [r[0] for r in server.psql(
        f"SELECT id FROM deals WHERE starts_with(id, '{SIM}') ORDER BY id", db)]
    # The n oldest went; the n new ones are numbered on.
    assert ids[0] == f"{SIM}{n + 1:07d}" and ids[-1] == f"{SIM}{SIM_CAP + n:07d}", ids[:2]
    assert server.value("SELECT count(*) FROM deals WHERE id = 'real-oldest'", db) == "1"
    assert server.value("SELECT count(*) FROM deals WHERE id ~ '^demo-deal-[0-9]{5}$'",
                        db) == "5000"
    no_warnings(d)


@pytest.fixture
def own_pg():
    """A server of the test's own, which it may stop and start (on the same port)."""
    require_postgres()
    server = PgServer(port=free_port()).start()
    yield server
    server.remove()


def test_a_tick_skips_while_the_database_is_down(dealwire, own_pg):
    d = start(dealwire, own_pg.url(), hot=3600, watch=3600)

    async def main():
        ws, _ = await connect_user(d.port, USER)
        await more_lines(d, TICK_RE, 1)
        own_pg.stop()
        await await_log(d, DOWN_RE)
        await more_lines(d, DB_SKIP_RE, 3)  # ticks keep coming, and skip
        own_pg.start()
        await await_log(d, BACK_RE, 1, 60)
        await more_lines(d, TICK_RE, 1, 60)
        await ws.close()

    run(main())
    assert d.running()
    assert len(log_lines(d, DOWN_RE)) == 1, d.stderr_text()
    assert not problem_lines(d, r" warn  monitor:| error "), d.stderr_text()


# --------------------------------------------------------------------------------------------
# The setting
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "-1", "3601", "1.5", "15s", ""])
def test_bad_values_exit_2_naming_the_flag(value):
    p = run_cli(listen_args() + ["--load-demo-data", f"--demo-activity={value}"])
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert_names(lines[0], "--demo-activity", value)
    assert "expected an integer in 0..3600" in lines[0], lines[0]


def test_bad_env_and_file_values_exit_2_naming_their_source(tmp_path):
    p = run_cli(listen_args(), env={"DEALWIRE_DEMO_ACTIVITY": "often"})
    assert p.returncode == 2, p.stderr
    assert re.fullmatch(r'dealwire: invalid value "often" for --demo-activity \(from '
                        r'DEALWIRE_DEMO_ACTIVITY\): expected an integer in 0\.\.3600\n',
                        p.stderr), p.stderr
    conf = tmp_path / "dealwire.conf"
    conf.write_text("load-demo-data = yes\ndemo-activity = 86400\n")
    p = run_cli(listen_args() + ["--config", str(conf)])
    assert p.returncode == 2, p.stderr
    assert f'"86400" for --demo-activity (from {conf}:2)' in p.stderr, p.stderr


NO_DB = "postgresql://postgres@127.0.0.1:1/none"  # never reached: the check comes first


@pytest.mark.parametrize("args,env,message", [
    (["--db", NO_DB, "--demo-activity", "5"], None,
     "dealwire: --demo-activity (from the command line) needs --load-demo-data"),
    (["--db", NO_DB], {"DEALWIRE_DEMO_ACTIVITY": "5"},
     "dealwire: --demo-activity (from DEALWIRE_DEMO_ACTIVITY) needs --load-demo-data"),
    (["--db", NO_DB, "--demo-activity", "5", "--load-demo-data=false"], None,
     "dealwire: --demo-activity (from the command line) needs --load-demo-data"),
    (["--load-demo-data", "--demo-activity", "5"], None,
     "dealwire: --demo-activity (from the command line) needs --db"),
], ids=["flag", "env", "load-off", "no-db"])
def test_demo_activity_needs_the_demo_data_and_a_database(args, env, message):
    if env is None:
        code, err = run_bad_start(args)
    else:
        p = run_cli(listen_args() + args, env=env)
        code, err = p.returncode, p.stderr
    assert code == 2, err
    assert err == message + "\n", err


def test_zero_is_off_and_needs_nothing(dealwire, pg_db):
    server, db, url = pg_db
    d = dealwire("--db", url, "--demo-activity", 0, "--hot-deal-interval", 1,
                 "--log-level", "debug")

    async def main():
        ws, _ = await connect_user(d.port, USER)
        await more_lines(d, r" debug monitor: hot_deals round done in ", 2)
        await ws.close()

    run(main())
    assert not log_lines(d, r"demo_activity|demo activity"), d.stderr_text()
    assert server.value("SELECT count(*) FROM deals", db) == "0"
