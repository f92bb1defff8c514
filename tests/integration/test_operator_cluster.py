"""The operator API on a user acts on every node (docs/cluster.md, "The operator API acts on
every node"): real daemons on one PostgreSQL and one Redis, on loopback. A disconnect, a ban,
a subscribe and an unsubscribe sent to one node reach the user's connections on the others
(the close code and reason, the refused upgrade, the server's subscription notice and then the
channel's publishes), in the operator's order whichever node each request goes to. With Redis
away the node that got the request still acts on its own connections and says the action was
not forwarded. What another node does is awaited (a close, a notice, a polled handshake or
document), never slept through.
"""

import asyncio
import json
import socket

from conftest import (
    aget, apublish, barrier, close_all, close_code, connect_user, expect_close, handshake_status,
    http_get, recv_json, run, t, wait_until,
)
from conftest_pg import pg_db, postgres  # noqa: F401
from conftest_redis import redis_server  # noqa: F401
from test_cluster import nodes
from test_operator import aop, user_doc
from test_metrics import parse, scrape, value


def bus_stats(port):
    status, stats = http_get(port, "/api/websocket/stats")
    assert status == 200, stats
    return stats["bus"]


async def poll(predicate, what, timeout=10):
    """wait_until from asyncio, so that the clients' sockets are read meanwhile."""
    await asyncio.get_running_loop().run_in_executor(
        None, wait_until, predicate, t(timeout), what)


async def all_heard(ds):
    """Until every node lists the others (the answer's "nodes" counts them)."""
    def heard(port):
        status, stats = http_get(port, "/api/websocket/stats")
        return stats["cluster"]["nodes_counted"] == len(ds)

    for d in ds:
        await poll(lambda: heard(d.port), "the nodes hearing each other", 20)


def deal(channel, n):
    return {"target": {"channel": channel}, "message": {"type": "deal_alert", "n": n}}


def test_disconnect_on_one_node_closes_the_user_on_every_node(dealwire, pg_db, redis_server):
    server, db, url = pg_db
    a, b, c = nodes(dealwire, url, redis_server, 3)
    reason = "maintenance \u2014 back soon"

    async def main():
        await all_heard([a, b, c])
        on_a, _ = await connect_user(a.port, "alice")
        on_b, _ = await connect_user(b.port, "alice")
        on_c, _ = await connect_user(c.port, "alice")
        bob, _ = await connect_user(b.port, "bob")
        answer = await aop(a.port, "alice", "disconnect", {"code": 4005, "reason": reason})
        # It counts its own connection; the others do not answer.
        assert answer["connections"] == 1 and answer["forwarded"] is True, answer
        assert answer["nodes"] == 2 and answer["banned_until"] is None, answer
        for ws in (on_a, on_b, on_c):
            exc, _ = await expect_close(ws)
            assert close_code(exc) == 4005 and exc.rcvd.reason == reason, exc
        assert await barrier(bob) == [], "bob was touched"
        # Not forwarded again: each of the others got it once, from a.
        await poll(lambda: bus_stats(b.port)["operator_actions"]["received"] == 1 and
                   bus_stats(c.port)["operator_actions"]["received"] == 1, "the counts")
        assert bus_stats(a.port)["operator_actions"] == {"sent": 1, "received": 0, "dropped": 0}
        for d in (b, c):
            assert bus_stats(d.port)["operator_actions"] == \
                {"sent": 0, "received": 1, "dropped": 0}
        # ... and so says /metrics
        for d, sent, received in ((a, 1, 0), (b, 0, 1)):
            samples = parse(scrape(d.port))
            assert value(samples, "dealwire_bus_operator_actions_sent_total") == sent
            assert value(samples, "dealwire_bus_operator_actions_received_total") == received
        # The default code and reason go as they are too.
        on_b, _ = await connect_user(b.port, "alice")
        answer = await aop(c.port, "alice", "disconnect")
        assert answer["connections"] == 0 and answer["forwarded"] is True, answer
        exc, _ = await expect_close(on_b)
        assert close_code(exc) == 4003, exc
        assert exc.rcvd.reason == "disconnected by the operator", exc
        await bob.close()

    run(main())


def test_a_ban_set_on_one_node_refuses_the_user_on_another_until_lifted(dealwire, pg_db,
                                                                         redis_server):
    server, db, url = pg_db
    a, b = nodes(dealwire, url, redis_server, 2)

    async def main():
        on_b, _ = await connect_user(b.port, "alice")
        answer = await aop(a.port, "alice", "disconnect", {"ban_seconds": 3600})
        assert answer["connections"] == 0 and answer["forwarded"] is True, answer
        assert answer["banned_until"], answer
        exc, _ = await expect_close(on_b)  # b took the ban before it closed alice
        assert close_code(exc) == 4003, exc
        assert await handshake_status(b.port, "alice") == 403
        assert await handshake_status(a.port, "alice") == 403
        # The same end on both nodes: an absolute time went over the bus.
        status, doc = user_doc(b.port, "alice")
        assert status == 200 and doc["banned_until"] == answer["banned_until"], doc
        # A ban of a user connected nowhere reaches b as well.
        await aop(a.port, "carol", "disconnect", {"ban_seconds": 3600})
        await poll(lambda: user_doc(b.port, "carol")[0] == 200, "carol's ban on b")
        assert await handshake_status(b.port, "carol") == 403
        # Lifted on a: b admits alice again (polled).
        lifted = await aop(a.port, "alice", "disconnect", {"ban_seconds": 0})
        assert lifted["banned_until"] is None and lifted["forwarded"] is True, lifted
        await poll(lambda: user_doc(b.port, "alice")[0] == 404, "the ban lifted on b")
        on_b, _ = await connect_user(b.port, "alice")
        assert await handshake_status(b.port, "carol") == 403, "carol's ban was lifted too"
        await on_b.close()

    run(main())


def test_subscribe_and_unsubscribe_on_one_node_act_on_every_node(dealwire, pg_db, redis_server):
    server, db, url = pg_db
    a, b = nodes(dealwire, url, redis_server, 2)

    async def main():
        on_b, _ = await connect_user(b.port, "alice")
        bob, _ = await connect_user(b.port, "bob")
        answer = await aop(a.port, "alice", "subscribe", {"channel": "deals"})
        assert answer["connections"] == 0 and answer["forwarded"] is True, answer
        notice = await recv_json(on_b, 10)
        assert notice["action"] == "subscribe" and notice["channel"] == "deals", notice
        assert notice["by"] == "server", notice
        await apublish(a.port, deal("deals", 1))
        assert (await recv_json(on_b, 10))["n"] == 1
        status, doc = user_doc(b.port, "alice")
        assert doc["subscriptions"] == ["deals"], doc

        answer = await aop(a.port, "alice", "unsubscribe", {"channel": "deals"})
        assert answer["forwarded"] is True, answer
        notice = await recv_json(on_b, 10)
        assert notice["action"] == "unsubscribe" and notice["by"] == "server", notice
        await apublish(a.port, deal("deals", 2))
        await apublish(b.port, {"target": {"user_id": "alice"},
                                "message": {"type": "notification", "message": "after",
                                            "level": "info"}})
        # The channel's publish (before the note, in Redis' order) did not come.
        assert (await recv_json(on_b, 10))["message"] == "after"
        assert await barrier(bob) == [], "bob was touched"
        # Without awaiting the notices: a publish right after a subscribe's answer reaches the
        # connection on b (b does the action before what comes behind it on the bus), and one
        # right after an unsubscribe's does not.
        for k in range(10):
            await aop(a.port, "alice", "subscribe", {"channel": "deals"})
            await apublish(a.port, deal("deals", 10 + k))
            await aop(a.port, "alice", "unsubscribe", {"channel": "deals"})
            await apublish(a.port, deal("deals", 100 + k))
        for k in range(10):
            got = [await recv_json(on_b, 10) for _ in range(3)]
            assert [m.get("action") or m.get("n") for m in got] == \
                ["subscribe", 10 + k, "unsubscribe"], got
        assert await barrier(on_b) == []
        await close_all([on_b, bob])

    run(main())


def publish_raw(redis, lines):
    """PUBLISHes each of lines on the bus's channel, all in one write (what another node's
    publisher sends back to back), and reads Redis' answers."""
    def command(*args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        return b"".join(out)

    with socket.create_connection(("127.0.0.1", redis.port), timeout=t(10)) as s:
        s.sendall(b"".join(command("PUBLISH", "dealwire:bus", line) for line in lines))
        got = b""
        while got.count(b"\r\n") < len(lines):
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
    assert all(r.startswith(b":") for r in got.split(b"\r\n")[:-1]), got


def test_what_follows_an_action_on_the_bus_waits_until_it_is_done(dealwire, pg_db,
                                                                   redis_server):
    # Another node's subscribe, then a publish to the channel, back to back on the bus (as
    # another node sends them, an operator's subscribe answered then a publish): b's I/O thread
    # does the subscribe before b's bus thread delivers the publish. Likewise an unsubscribe.
    server, db, url = pg_db
    (b,) = nodes(dealwire, url, redis_server, 1, "--max-connections-per-user", "100")
    other = "10.0.0.9:8000/00000000000000aa"

    def op_line(action):
        return f"DW1 {other} o 0 0 0 alice\n" + json.dumps({"action": action, "channel": "deals"})

    def deal_line(n):
        return f"DW1 {other} c 1 0 0 deals\n" + json.dumps({"type": "deal_alert", "n": n})

    async def main():
        # Many connections, so that doing an action takes the I/O thread a while.
        conns = [(await connect_user(b.port, "alice"))[0] for _ in range(100)]
        rounds = 5
        publish_raw(redis_server, [line for k in range(rounds) for line in (
            op_line("subscribe"), deal_line(k), op_line("unsubscribe"), deal_line(100 + k))])
        want = [x for k in range(rounds) for x in ("subscribe", k, "unsubscribe")]
        for ws in conns:
            got = [await recv_json(ws, 10) for _ in range(3 * rounds)]
            assert [m.get("action") or m.get("n") for m in got] == want, got
        assert await barrier(conns[0]) == [] and await barrier(conns[-1]) == []
        assert bus_stats(b.port)["operator_actions"]["received"] == 2 * rounds
        await close_all(conns)

    run(main())


def test_an_operator_going_to_every_node_in_turn_keeps_its_order(dealwire, pg_db,
                                                                  redis_server):
    # As through a load balancer: each request to the next node, sent once the previous one
    # is answered. The user's connection on a third node sees them in that order.
    server, db, url = pg_db
    ds = nodes(dealwire, url, redis_server, 3)
    rounds = 20

    async def main():
        ws, _ = await connect_user(ds[2].port, "alice")
        for k in range(rounds):
            await aop(ds[k % 2].port, "alice", "subscribe", {"channel": "flip"})
            await aop(ds[(k + 1) % 2].port, "alice", "unsubscribe", {"channel": "flip"})
        got = [(await recv_json(ws, 10))["action"] for _ in range(2 * rounds)]
        assert got == ["subscribe", "unsubscribe"] * rounds, got
        assert await barrier(ws) == []
        status, doc = user_doc(ds[2].port, "alice")
        assert doc["subscriptions"] == [], doc
        await ws.close()

    run(main())


def test_redis_away_the_action_is_done_here_and_not_forwarded(dealwire, pg_db, redis_server):
    server, db, url = pg_db
    a, b = nodes(dealwire, url, redis_server, 2)

    async def main():
        on_a, _ = await connect_user(a.port, "alice")
        on_b, _ = await connect_user(b.port, "alice")
        redis_server.stop()
        await poll(lambda: not bus_stats(a.port)["connected"], "a losing Redis")
        answer = await aop(a.port, "alice", "disconnect", {"code": 4006, "ban_seconds": 3600})
        assert answer["connections"] == 1 and answer["forwarded"] is False, answer
        assert answer["nodes"] == 0 and answer["banned_until"], answer
        exc, _ = await expect_close(on_a)
        assert close_code(exc) == 4006, exc
        assert await handshake_status(a.port, "alice") == 403
        # b never heard of it: its connection stays, and alice may come to b.
        assert await barrier(on_b) == []
        assert await handshake_status(b.port, "alice") == 101
        answer = await aop(a.port, "bob", "subscribe", {"channel": "deals"})
        assert answer["forwarded"] is False and answer["nodes"] == 0, answer
        status, stats = await aget(a.port, "/api/websocket/stats")
        assert stats["bus"]["operator_actions"]["sent"] == 0, stats["bus"]
        await on_b.close()

    run(main(), timeout=120)
