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
    aget, apublish, barrier, connect_user, free_port, http_get, http_request, publish, recv_json,
    run, run_bad_start, t, wait_until,
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


def test_a_publisher_that_goes_to_any_node_keeps_its_order_on_every_node(dealwire, pg_db,
                                                                         redis_server):
    # As through a load balancer: each publish to the next node, sent once the previous one is
    # answered. Every client, on every node, gets them in the publisher's order: a node answers
    # once its messages are in Redis, so the next node's are behind them on every subscription.
    server, db, url = pg_db
    ds = nodes(dealwire, url, redis_server, 3)
    total = 300

    async def main():
        users = [(await connect_user(d.port, "olga"))[0] for d in ds]
        chans = []
        for d in ds:
            ws, _ = await connect_user(d.port, "oscar")
            await ws.send(json.dumps({"type": "subscribe", "channel": "ordered"}))
            assert (await recv_json(ws))["action"] == "subscribe"
            chans.append(ws)
        for k in range(1, total + 1):
            d = ds[k % 3]
            if k % 2:
                await apublish(d.port, note("olga", k))
            else:
                await apublish(d.port, {"target": {"channel": "ordered"},
                                        "message": {"type": "deal_alert", "deal_id": f"d{k}"}})
        for ws in users:
            got = [(await recv_json(ws, 10))["n"] for _ in range(total // 2)]
            assert got == list(range(1, total + 1, 2)), got
        for ws in chans:
            got = [(await recv_json(ws, 10))["deal_id"] for _ in range(total // 2)]
            assert got == [f"d{k}" for k in range(2, total + 1, 2)], got
        # Redis slow for a moment (every command waits 700 ms): the first node's answer waits
        # for it, so the second node's message, delivered at once to its own client, still
        # comes after the first one there.
        redis_server.cli("CLIENT", "PAUSE", "700", "ALL")
        await apublish(ds[0].port, note("olga", total + 1))
        await apublish(ds[1].port, note("olga", total + 2))
        for ws in users:
            assert [(await recv_json(ws, 10))["n"] for _ in range(2)] == [total + 1, total + 2]
        for ws in users + chans:
            assert await barrier(ws) == []
            await ws.close()

    run(main(), timeout=120)


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
        # Shared again: a's messages reach b's client again, from one on, all of them in order.
        for k in range(3, 200):
            await apublish(a.port, note("cat", k))
            assert (await recv_json(ca))["n"] == k
            try:
                first = (await recv_json(cb, 0.5))["n"]
            except asyncio.TimeoutError:
                continue  # a's publisher may still be reconnecting: the next one goes
            break
        else:
            raise AssertionError("b never got a's messages again")
        assert 3 <= first <= k, (first, k)
        for n in range(first + 1, k + 1):  # those published while b's first one was on its way
            assert (await recv_json(cb, 10))["n"] == n
        assert await barrier(cb) == []
        await ca.close()
        await cb.close()

    run(main(), timeout=120)
    status, stats = http_get(a.port, "/api/websocket/stats")
    assert stats["bus"]["dropped"] >= 1 and stats["bus"]["connected"] is True, stats["bus"]


CATCHING_UP_RE = re.compile(r" info  bus: Redis reachable again \(receiving\): catching up")


def test_redis_away_for_5_s_of_traffic_connected_clients_miss_nothing_critical(
        dealwire, pg_db, redis_server):
    # Redis stopped for 5 s while critical messages to one user are published on two nodes in
    # turn, and live ones too. The user has a client on each of three nodes, which does
    # nothing but read (no resume of its own): each gets some messages live (those of its own
    # node), with gaps. Once Redis is back, every node catches its client up from the inbox:
    # every client ends with every seq exactly once, and the live messages published meanwhile
    # are counted as dropped on the nodes that published them.
    server, db, url = pg_db
    a, b, c = nodes(dealwire, url, redis_server, 3)

    async def main():
        clients = [(await connect_user(d.port, "eve", max_queue=None))[0] for d in (a, b, c)]
        assert (await apublish(a.port, note("eve", 1, critical=True)))["seq"] == 1
        for ws in clients:
            assert (await recv_json(ws, 10))["seq"] == 1
        redis_server.stop()
        loop = asyncio.get_running_loop()
        end, k, live = loop.time() + 5, 1, 0
        while loop.time() < end:  # 5 s of traffic, paced: a bounded loop
            k += 1
            d = a if k % 2 else c
            assert (await apublish(d.port, note("eve", k, critical=True)))["seq"] == k
            if k % 10 == 0:
                live += 1
                await apublish(d.port, note("eve", 10000 + live))  # not critical
            await asyncio.sleep(0.05)
        redis_server.start()
        for d in (a, b, c):
            await await_log(d, CATCHING_UP_RE, 60)
        for ws in clients:
            seqs = [1]  # read above
            while len(set(seqs)) < k:
                try:
                    m = await recv_json(ws, 10)
                except asyncio.TimeoutError:
                    raise AssertionError(("missing", clients.index(ws), k,
                                          sorted(set(range(1, k + 1)) - set(seqs))))
                if "seq" in m:
                    seqs.append(m["seq"])
            assert sorted(seqs) == list(range(1, k + 1)), seqs  # each once
        # Nothing more (no duplicate, not a lost live one after the catch-up): only live ones
        # this node published itself could still be on their way, and they came before.
        for ws in clients:
            assert [m for m in await barrier(ws) if "seq" in m] == []
            await ws.close()
        return k, live

    k, live = run(main(), timeout=120)
    assert k > 20, k
    for d in (a, b, c):
        cu = http_get(d.port, "/api/websocket/stats")[1]["bus"]["catch_up"]
        assert cu["asked"] >= 1 and cu["rounds"] >= 1 and cu["connections"] >= 1, cu
        assert cu["failed"] == 0, cu
    caught = {d.port: http_get(d.port, "/api/websocket/stats")[1]["bus"]["catch_up"]["messages"]
              for d in (a, b, c)}
    assert caught[b.port] == k - 1, caught  # b's client got every one after seq 1 that way
    assert caught[a.port] >= (k - 1) // 2 - 1 and caught[c.port] >= (k - 1) // 2 - 1, caught
    dropped = sum(http_get(d.port, "/api/websocket/stats")[1]["bus"]["dropped"] for d in (a, c))
    assert dropped >= k - 1 + live, (dropped, k, live)


def client_id(redis, name):
    """The Redis client id of the connection named name (CLIENT LIST), or None."""
    for line in redis.cli("CLIENT", "LIST").splitlines():
        fields = dict(f.split("=", 1) for f in line.split(" ") if "=" in f)
        if fields.get("name") == name:
            return fields["id"]
    return None


def test_a_node_that_dropped_messages_makes_the_others_catch_up(dealwire, pg_db, redis_server):
    # Only a's publishing connection to Redis goes (an operator's CLIENT KILL, a proxy's idle
    # timeout): b's subscription never noticed anything, yet a's message lost on the way must
    # reach b's client. a tells the others it dropped messages once it publishes again.
    server, db, url = pg_db
    a, b = nodes(dealwire, url, redis_server, 2)
    a_node = http_get(a.port, "/api/websocket/stats")[1]["cluster"]["node"]

    async def main():
        cb, _ = await connect_user(b.port, "fay")
        assert (await apublish(a.port, note("fay", 1, critical=True)))["seq"] == 1
        assert (await recv_json(cb, 10))["seq"] == 1
        pub = client_id(redis_server, f"dealwire-pub@{a_node}")
        assert pub is not None, redis_server.cli("CLIENT", "LIST")
        redis_server.cli("CLIENT", "KILL", "ID", pub)
        assert (await apublish(a.port, note("fay", 2, critical=True)))["seq"] == 2
        m = await recv_json(cb, 20)  # caught up once a reconnects and says so
        assert (m["seq"], m["n"]) == (2, 2), m
        assert await barrier(cb) == []
        await cb.close()

    run(main())
    bus_a = http_get(a.port, "/api/websocket/stats")[1]["bus"]
    bus_b = http_get(b.port, "/api/websocket/stats")[1]["bus"]
    assert bus_a["dropped"] >= 1 and bus_a["drops_announced"] >= 1, bus_a
    assert bus_b["reconnects"] == 0 and bus_b["catch_up"]["asked"] >= 1, bus_b
    assert bus_b["catch_up"]["messages"] >= 1, bus_b


def cluster_of(port):
    return http_get(port, "/api/websocket/stats")[1]["cluster"]


def test_a_namesake_node_is_heard_not_skipped(dealwire, pg_db, redis_server):
    # Another process on the bus with this node's name (two containers given one --hostname):
    # its messages are still delivered here, and the node says loudly that names collide.
    server, db, url = pg_db
    (a,) = nodes(dealwire, url, redis_server, 1)
    name = cluster_of(a.port)["node"]

    async def main():
        ws, _ = await connect_user(a.port, "nina")
        text = json.dumps({"type": "deal_alert", "deal_id": "twin"})
        head = f"DW1 {name}/00000000000000ff u 1 0 0 nina"
        redis_server.cli("PUBLISH", "dealwire:bus", f"{head}\n{text}")
        assert (await recv_json(ws, 10))["deal_id"] == "twin"
        await await_log(a, re.compile(r" error bus: another node calls itself " + re.escape(name)))
        await ws.close()

    run(main())


def test_every_node_says_the_cluster_figures(dealwire, pg_db, redis_server):
    server, db, url = pg_db
    ds = nodes(dealwire, url, redis_server, 3)
    names = [cluster_of(d.port)["node"] for d in ds]
    assert len(set(names)) == 3 and all(n.endswith(f":{d.port}") for n, d in zip(names, ds))

    async def main():
        conns = []
        for i, d in enumerate(ds):  # 1, 2 and 3 connections; users u0, u1, u2
            for k in range(i + 1):
                conns.append((await connect_user(d.port, f"u{i}"))[0])
        want = {names[i]: i + 1 for i in range(3)}

        def settled(port):
            c = cluster_of(port)
            counts = {n["node"]: n["active_connections"] for n in c["nodes"]}
            return c["nodes_counted"] == 3 and counts == want and \
                c["active_connections"] == 6 and c["total_users"] == 3

        for d in ds:  # each node's figures reach the others within a few announcements
            await asyncio.get_running_loop().run_in_executor(
                None, wait_until, lambda: settled(d.port), t(20), "the cluster's figures")
        c = cluster_of(ds[0].port)
        assert [n["self"] for n in c["nodes"]].count(True) == 1
        me = next(n for n in c["nodes"] if n["self"])
        assert me["node"] == names[0] and c["node"] == names[0]
        for n in c["nodes"]:
            assert not n["stale"] and 0 <= n["seconds_since_heard"] < 10, n
        # to the millisecond in the text, not json-c's 17 digits
        heard = re.findall(r'"seconds_since_heard":([^,}]*)',
                           http_request(ds[0].port, "GET", "/api/websocket/stats").raw.decode())
        assert len(heard) == 3 and all(re.fullmatch(r"\d+\.\d{3}", h) for h in heard), heard
        status, doc = await aget(ds[1].port, "/api/websocket/connections")
        assert doc["active_connections"] == 2 and doc["cluster"]["active_connections"] == 6
        for ws in conns:
            await ws.close()

    run(main())
    # A node that stops says so: the others forget it at once, not when it goes stale.
    ds[2].stop()
    wait_until(lambda: names[2] not in [n["node"] for n in cluster_of(ds[0].port)["nodes"]],
               t(5), "the stopped node leaving the list")
    # and the others' next figures say their clients left
    wait_until(lambda: cluster_of(ds[0].port)["active_connections"] == 0, t(10),
               "the closed connections leaving the totals")
    assert cluster_of(ds[0].port)["nodes_counted"] == 2


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
