"""Several nodes over Redis (--redis; docs/operations.md, "Several nodes"), with real processes
on loopback: three daemons on one PostgreSQL and one Redis. A message published on any node
reaches the matching connections on every node, exactly once each, in the publisher's order;
the monitors' leader announces to the clients of every node; a bad or unreachable --redis stops
the start with exit 2; Redis away for a while: every node goes on serving its own clients, and
the nodes share their messages again once it is back.
"""

import asyncio
import json
import re

from conftest import (
    apublish, barrier, connect_user, free_port, publish, recv_json, run, run_bad_start, t,
)
from conftest_pg import pg_db, postgres  # noqa: F401
from conftest_redis import redis_server  # noqa: F401
from test_inbox import SCHEMA_RE, await_log
from test_monitors import LEADS_RE, PEERS_RE, is_alert, leader_of, log_lines, problem_lines


def nodes(dealwire, url, redis, n=3, *extra):
    ds = [dealwire("--db", url, "--redis", redis.url(), "--log-level", "debug", *extra)
          for _ in range(n)]
    for d in ds:
        run(await_log(d, SCHEMA_RE))
    return ds


def note(user, n, **kw):
    return dict({"target": {"user_id": user},
                 "message": {"type": "notification", "message": f"m{n}", "level": "info",
                             "n": n}}, **kw)


def test_a_publish_on_one_node_reaches_every_node_once(dealwire, pg_db, redis_server):
    server, db, url = pg_db
    a, b, c = nodes(dealwire, url, redis_server)

    async def main():
        cb, _ = await connect_user(b.port, "ann")
        cc, _ = await connect_user(c.port, "ann")
        other, _ = await connect_user(c.port, "ben")
        await other.send(json.dumps({"type": "subscribe", "channel": "hot_deals"}))
        assert (await recv_json(other))["action"] == "subscribe"
        # To a user (on two other nodes), to a channel, to everyone; live and critical.
        answer = await apublish(a.port, note("ann", 1))
        assert answer["recipients"] == 0  # this node's connections: a has none
        await apublish(a.port, {"target": {"channel": "hot_deals"},
                                "message": {"type": "deal_alert", "deal_id": "d1"}})
        await apublish(a.port, {"target": "all",
                                "message": {"type": "notification", "message": "all",
                                            "level": "info"}})
        crit = await apublish(a.port, note("ann", 2, critical=True))
        assert crit["seq"] == 1
        for ws in (cb, cc):
            got = [await recv_json(ws, 10) for _ in range(3)]
            assert [(m["type"], m.get("n"), m.get("seq")) for m in got] == \
                [("notification", 1, None), ("notification", None, None),
                 ("notification", 2, 1)], got
        got = [await recv_json(other, 10) for _ in range(2)]
        assert [m["type"] for m in got] == ["deal_alert", "notification"], got
        # Nothing twice: a ping's pong comes next on every connection.
        for ws in (cb, cc, other):
            assert await barrier(ws) == []
            await ws.close()

    run(main())
    for d in (a, b, c):
        assert not log_lines(d, PEERS_RE), "nodes with a bus warned about each other"
        assert not problem_lines(d), problem_lines(d)


def test_1000_broadcasts_to_300_clients_on_three_nodes_once_each_and_in_order(
        dealwire, pg_db, redis_server):
    server, db, url = pg_db
    ds = nodes(dealwire, url, redis_server, 3, "--max-connections-per-ip", "2000")
    total, clients = 1000, 300

    async def main():
        conns = [(await connect_user(ds[i % 3].port, f"u{i}", max_queue=None))[0]
                 for i in range(clients)]
        # One publisher on node 0, 10 messages per request, in order.
        for i in range(0, total, 10):
            await apublish(ds[0].port, [{"target": "all", "message": {
                "type": "notification", "message": "b", "level": "info", "i": k}}
                for k in range(i, i + 10)])

        async def read(ws):
            return [(await recv_json(ws, 30))["i"] for _ in range(total)]

        results = await asyncio.gather(*(read(ws) for ws in conns))
        for got in results:
            assert got == list(range(total))
        for ws in conns[:30]:  # nothing more behind them
            assert await barrier(ws) == []
        await asyncio.gather(*(ws.close() for ws in conns))

    run(main(), timeout=180)


def test_the_leader_announces_to_the_clients_of_every_node(dealwire, pg_db, redis_server):
    server, db, url = pg_db
    ds = nodes(dealwire, url, redis_server, 3, "--hot-deal-interval", "1")
    leader, *others = run(leader_of(*ds))

    async def main():
        conns = [(await connect_user(d.port, f"w{i}"))[0] for i, d in enumerate(others)]
        server.psql("INSERT INTO deals (id, title, category, price, original_price)"
                    " VALUES ('x1', 'Everywhere', 'hotel', 10, 100)", db)
        for ws in conns:
            m = await recv_json(ws, 20)
            assert is_alert("hot_deal")(m) and m["deal_id"] == "x1", m
            assert await barrier(ws) == []
            await ws.close()

    run(main())
    assert log_lines(leader, LEADS_RE)
    assert server.psql("SELECT redis FROM dealwire_nodes", db) == [["t"]] * 3


def test_redis_away_each_node_serves_its_own_then_they_share_again(dealwire, pg_db,
                                                                     redis_server):
    server, db, url = pg_db
    a, b = nodes(dealwire, url, redis_server, 2)

    async def main():
        ca, _ = await connect_user(a.port, "cat")
        cb, _ = await connect_user(b.port, "cat")
        await apublish(a.port, note("cat", 1))
        assert (await recv_json(ca))["n"] == 1 and (await recv_json(cb, 10))["n"] == 1
        redis_server.stop()
        # Each node goes on with its own clients.
        assert (await apublish(a.port, note("cat", 2)))["recipients"] == 1
        assert (await recv_json(ca))["n"] == 2
        await await_log(a, re.compile(r" warn  bus: (Redis unreachable|lost Redis)"))
        redis_server.start()
        await await_log(b, re.compile(r" info  bus: Redis reachable again \(receiving\)"), 60)
        # Shared again: a's next message reaches b's client.
        for k in range(3, 200):
            await apublish(a.port, note("cat", k))
            assert (await recv_json(ca))["n"] == k
            try:
                m = await recv_json(cb, 0.5)
            except asyncio.TimeoutError:
                continue  # a's publisher may still be reconnecting: the next one goes
            assert m["n"] >= 3 and m["n"] == k, m
            break
        else:
            raise AssertionError("b never got a's messages again")
        await ca.close()
        await cb.close()

    run(main(), timeout=120)
    from conftest import http_get
    status, stats = http_get(a.port, "/api/websocket/stats")
    assert stats["bus"]["dropped"] >= 1 and stats["bus"]["connected"] is True, stats["bus"]


def test_a_bad_or_unreachable_redis_stops_the_start(pg_db):
    server, db, url = pg_db
    code, err = run_bad_start(["--db", url, "--redis", "http://127.0.0.1:1"])
    assert code == 2 and "--redis" in err and "redis://" in err, err
    code, err = run_bad_start(["--redis", "redis://127.0.0.1:1"])
    assert code == 2 and "--redis" in err and "--db" in err, err
    port = free_port()
    code, err = run_bad_start(["--db", url, "--redis", f"redis://127.0.0.1:{port}"])
    assert code == 2 and f"cannot reach Redis at 127.0.0.1:{port}" in err, err


def test_a_node_killed_its_client_resumes_on_another_with_nothing_lost(dealwire, pg_db,
                                                                        redis_server):
    # A client on node A handles critical messages published on node B; A dies (SIGKILL); the
    # client reconnects to B (as through a load balancer) with its last seq and gets the rest,
    # then live ones: every seq once, in order. The user's seq stays gap-free with two nodes
    # writing for the user at once.
    server, db, url = pg_db
    a, b = nodes(dealwire, url, redis_server, 2)

    async def main():
        ws, welcome = await connect_user(a.port, "dora", max_queue=None)
        seen = []
        for k in range(1, 51):
            await apublish(b.port if k % 2 else a.port, note("dora", k, critical=True))
        while len(seen) < 20:
            seen.append((await recv_json(ws, 10))["seq"])
        a.kill_9()
        await asyncio.gather(*(apublish(b.port, note("dora", k, critical=True))
                               for k in range(51, 61)))
        ws2, welcome = await connect_user(b.port, "dora", max_queue=None,
                                          query=f"user_id=dora&last_seq={seen[-1]}")
        assert welcome["recovered"] is True and welcome["last_seq"] == 60, welcome
        while seen[-1] < 60:
            seen.append((await recv_json(ws2, 10))["seq"])
        assert seen == list(range(1, 61))
        assert await barrier(ws2) == []
        await ws2.close()

    run(main())
