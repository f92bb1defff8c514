"""The demo data set against a real private PostgreSQL (scripts/pg.sh) and real WebSocket
clients: the dashboard's default user owns met watches after every load.

Nothing waits by sleeping: a test awaits the messages it expects, or the daemon's log lines,
each with a deadline.
"""

import math
import re
from decimal import Decimal

from conftest import connect_user, recv_json, run
from conftest_pg import pg_db, postgres  # noqa: F401
from test_monitors import await_log, is_price_alert

USER = "demo-user-001"  # the dashboard's default user (web/dashboard.js)

LOADED_RE = re.compile(r" info  demo: demo data loaded: ")


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
