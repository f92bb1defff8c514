"""Several nodes behind a real load balancer (docs/cluster.md), with real processes on loopback:
one PostgreSQL, one Redis, three dealwire nodes (--db, --redis) and HAProxy or nginx in front
of them, configured with the very configurations docs/cluster.md shows (conftest_lb.py reads
them from it). Clients connect only through the load balancer.

What is proved, for HAProxy and for nginx:
- clients that connect through the balancer land on every node (leastconn / least_conn); a
  broadcast published through it reaches each of them once; the HTTP API works through it;
- a node killed with SIGKILL in the middle of a stream of critical messages to its clients
  (one request each, through the balancer and straight to another node in turn): each of its
  clients, doing what docs/delivery.md asks of a client, reconnects through the balancer with
  the last seq it handled and, on another node, handles every critical message once, in seq
  order, those published while it was away included; the balancer sends nothing more to the
  dead node (HAProxy: its health check marks it down; nginx: a failed connection to it is
  passed to the next node and keeps it out for fail_timeout);
- a node stopped with SIGTERM (an upgrade): its clients get close 1001 through the balancer,
  reconnect through it to the other nodes and resume with nothing lost; started again on the
  same port, the node gets new connections again (HAProxy: once its check rises);
and, for HAProxy, the dashboard page loaded through the balancer: its node killed with SIGKILL,
the page's own client (web/dealwire.js) reconnects through the balancer to another node and
ends up holding every critical alert exactly once, seq for seq, without a reload.

Nothing waits by sleeping: WebSocket reads, WebDriverWait, and wait_until polls of the nodes'
statistics and of HAProxy's stats socket, each within a scaled deadline.
"""

import asyncio
import http.client
import json
import signal
import time
from collections import namedtuple

import pytest
import websockets.exceptions

from conftest import (
    barrier, close_all, close_code, expect_close, http_get, http_request, publish, recv_json,
    run, t, wait_until,
)
from conftest_lb import load_balancer, require_lb  # noqa: F401 (load_balancer: a fixture)
from conftest_pg import pg_db, postgres  # noqa: F401 (pytest fixtures)
from conftest_redis import redis_server  # noqa: F401 (pytest fixture)
from test_cluster import nodes as start_nodes, note
from test_resume import connect
from test_web import (  # noqa: F401 (browser, page: pytest fixtures)
    browser, console_errors, counter, critical_alert, inbox, open_page, page, page_last_seq,
    wait_connected, wait_handled,
)

KINDS = ["haproxy", "nginx"]

Cluster = namedtuple("Cluster", "server db url nodes lb")


@pytest.fixture
def cluster(request, dealwire, pg_db, redis_server, load_balancer):
    """Three nodes on one database and one Redis, and the load balancer request.param in
    front of them."""
    require_lb(request.param)
    server, db, url = pg_db
    # the balancer (127.0.0.1) names its clients: HAProxy in a PROXY header, nginx in XFF
    ds = start_nodes(dealwire, url, redis_server, 3, "--trusted-proxies", "127.0.0.1")
    return Cluster(server, db, url, ds, load_balancer(request.param, ds))


def restart(dealwire, node):
    """The node started again, with its arguments and on its port; ready when it returns."""
    d = dealwire(*node.args, port=node.port)
    wait_until(lambda: http_get(d.port, "/readyz")[0] == 200, t(30), "the restarted node ready")
    return d


def placement(nodes, users):
    """{user: the index of the node that holds the user's connection}, from each running
    node's GET /api/websocket/connections; a user on two nodes is an error."""
    where = {}
    for i, d in enumerate(nodes):
        if not d.running():
            continue
        status, doc = http_get(d.port, "/api/websocket/connections?limit=1000")
        assert status == 200 and not doc["truncated"], (status, doc)
        for conn in doc["connections"]:
            if conn["user_id"] in users:
                assert conn["user_id"] not in where, f"{conn['user_id']} is on two nodes"
                where[conn["user_id"]] = i
    return where


async def aplacement(nodes, users):
    return await asyncio.get_running_loop().run_in_executor(None, placement, nodes, users)


async def connect_all(port, users):
    """One connection per user through port, each opened after the previous one's welcome."""
    return [(await connect(port, u))[0] for u in users]


async def two_per_node(c, prefix):
    """Six users connected through the balancer, which puts two on each node: returns ({user:
    connection}, the index of the first user's node, the users on that node)."""
    users = [f"{c.lb.kind}-{prefix}{i}" for i in range(6)]
    conns = dict(zip(users, await connect_all(c.lb.port, users)))
    where = await aplacement(c.nodes, users)
    node = where[users[0]]
    on_it = [u for u in users if where[u] == node]
    assert len(on_it) == 2, where
    return conns, node, on_it


def critical(user, k):
    """Critical notification k to user, with a publish id (a retry publishes it once)."""
    return note(user, k, critical=True, id=f"{user}-{k}")


def publish_retrying(port, items, timeout=20):
    """POST items until a 200, within a deadline: a publish the balancer sent to a node on
    its way out is answered 502 or 503, or its connection fails; with the items' ids, a retry
    publishes each item once (docs/delivery.md, "Publishers: ids and retries")."""
    deadline = time.monotonic() + t(timeout)
    failures = []
    while time.monotonic() < deadline:
        try:
            r = http_request(port, "POST", "/api/publish", body=items, timeout=t(5))
        except (OSError, http.client.HTTPException) as exc:
            failures.append(repr(exc))
        else:
            if r.status == 200:
                return r.json
            assert r.status in (502, 503), (r.status, r.raw[:300])
            failures.append(r.status)
        time.sleep(0.02)  # pacing the retries, not waiting for an event
    raise AssertionError(f"no 200 within {t(timeout)}s: {failures[-5:]}")


async def apublish_retrying(port, items):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, publish_retrying, port, items)


class Client:
    """One user's client, doing what docs/delivery.md asks of one ("What a client should do"):
    it handles each seq once and in order; a seq not above the last one handled is ignored,
    and on a gap it sends `resume` once and ignores messages with a seq until `resumed`.
    (Messages sent by different nodes may cross: the gap rule puts them back in order.)"""

    def __init__(self, port, user, ws=None, on_handled=None):
        self.port, self.user = port, user
        self.ws = ws
        self.on_handled = on_handled  # called after each message handled
        self.handled = []  # the seqs handled, in the order handled
        self.resuming = False
        self.resumes = 0

    @property
    def last(self):
        return self.handled[-1] if self.handled else 0

    async def connect(self):
        """Connects (through port) with the last seq handled, once there is one."""
        self.ws, welcome = await connect(self.port, self.user,
                                         last_seq=self.last if self.handled else None)
        self.resuming = False
        return welcome

    async def take(self, m):
        if m["type"] == "resumed":
            assert m["recovered"] is True, m
            self.resuming = False
        seq = m.get("seq")
        if seq is None or self.resuming or seq <= self.last:
            return
        if seq > self.last + 1:
            self.resuming = True
            self.resumes += 1
            await self.ws.send(json.dumps({"type": "resume", "last_seq": self.last}))
            return
        assert m["n"] == seq, m  # each was published after the one before it was stored
        self.handled.append(seq)
        if self.on_handled:
            self.on_handled()

    async def read_through(self, last, timeout=20):
        """Reads until seq `last` is handled."""
        while self.last < last:
            await self.take(await recv_json(self.ws, timeout))

    async def read_until_closed(self):
        """Reads (and handles) until the connection closes; returns the ConnectionClosed."""
        try:
            while True:
                await self.take(await recv_json(self.ws, 20))
        except websockets.exceptions.ConnectionClosed as exc:
            return exc


# --------------------------------------------------------------------------------------------
# (a) Spread over the nodes; the API through the balancer
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cluster", KINDS, indirect=True)
def test_clients_spread_over_the_nodes_and_a_publish_reaches_each_once(cluster):
    c = cluster
    users = [f"{c.lb.kind}-a{i}" for i in range(9)]

    async def main():
        conns = await connect_all(c.lb.port, users)
        where = await aplacement(c.nodes, users)
        assert sorted(where) == sorted(users), where
        # Least connections: each new connection goes to the node with the fewest.
        assert sorted(list(where.values()).count(i) for i in range(3)) == [3, 3, 3], where

        # The API through the balancer: a broadcast, then one message to each user.
        answer = publish(c.lb.port, {"target": "all", "message": {
            "type": "notification", "message": "everyone", "level": "info"}})
        assert answer["recipients"] == 3, answer  # the connections of the node it reached
        for u in users:
            answer = publish(c.lb.port, critical(u, 1))
            assert answer["seq"] == 1, answer
        for u, ws in zip(users, conns):
            got = [await recv_json(ws, 10) for _ in range(2)]
            assert [(m["type"], m.get("message"), m.get("seq")) for m in got] == [
                ("notification", "everyone", None), ("notification", "m1", 1)], (u, got)
            assert await barrier(ws) == []  # nothing twice
        status, stats = http_get(c.lb.port, "/api/websocket/stats")
        assert status == 200 and stats["bus"]["enabled"] and stats["bus"]["connected"], stats
        assert stats["active_connections"] == 3, stats  # one node's
        status, ready = http_get(c.lb.port, "/readyz")
        assert (status, ready["status"]) == (200, "ready"), ready
        await close_all(conns)

    run(main())


# --------------------------------------------------------------------------------------------
# (b) A node killed: its clients resume through the balancer on the others
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cluster", KINDS, indirect=True)
def test_a_node_killed_its_clients_resume_through_the_balancer(cluster):
    """Critical messages stream to the clients of one node, one request each, odd ones through
    the balancer and even ones straight to another node; the node is killed in the middle of
    the stream. Its clients read all along, then reconnect through the balancer with the last
    seq they handled."""
    c = cluster
    total = 60

    async def main():
        loop = asyncio.get_running_loop()
        conns, dead, victims = await two_per_node(c, "b")
        users = list(conns)
        survivor = c.nodes[(dead + 1) % 3]
        under_way = asyncio.Event()

        def check():
            if all(len(x.handled) >= 15 for x in clients.values()):
                under_way.set()

        clients = {u: Client(c.lb.port, u, conns[u], check) for u in victims}

        def stream():
            for k in range(1, total + 1):
                for u in victims:
                    publish_retrying(c.lb.port if k % 2 else survivor.port, [critical(u, k)])

        readers = [asyncio.create_task(x.read_until_closed()) for x in clients.values()]
        publisher = loop.run_in_executor(None, stream)
        await asyncio.wait_for(under_way.wait(), t(20))
        c.nodes[dead].kill_9()
        closes = await asyncio.gather(*readers)
        assert all(close_code(exc) is None for exc in closes), closes  # it died: no close frame
        handled_then = {u: x.last for u, x in clients.items()}
        await asyncio.wait_for(publisher, t(60))
        assert all(n < total for n in handled_then.values()), handled_then  # a kill mid-stream

        for u, x in clients.items():
            welcome = await x.connect()
            assert welcome["recovered"] is True and welcome["last_seq"] == total, welcome
            await x.read_through(total)
            assert x.handled == list(range(1, total + 1)), (u, handled_then, x.handled)
            assert await barrier(x.ws) == []
            conns[u] = x.ws
        for u in users:
            if u not in victims:
                assert await barrier(conns[u]) == []
        moved = await aplacement(c.nodes, victims)
        assert sorted(moved) == sorted(victims) and dead not in moved.values(), moved

        # The balancer sends nothing more to the dead node: new clients land on the others.
        more = [f"{c.lb.kind}-b-new{i}" for i in range(4)]
        conns.update(zip(more, await connect_all(c.lb.port, more)))
        assert dead not in (await aplacement(c.nodes, more)).values()
        await close_all(conns.values())

    run(main())
    dead_port = next(d.port for d in c.nodes if not d.running())
    if c.lb.kind == "haproxy":
        wait_until(lambda: c.lb.server_status()[dead_port].startswith("DOWN"), t(10),
                   "HAProxy's health check to mark the dead node down")
    else:
        # A refused connection, or one closed by the dying node, disabled it for fail_timeout.
        at = f"upstream: \"http://127.0.0.1:{dead_port}/"
        assert any("upstream server temporarily disabled" in line and at in line
                   for line in c.lb.error_log().splitlines()), c.lb.error_log()


# --------------------------------------------------------------------------------------------
# (c) A node stopped for an upgrade: 1001, resume elsewhere, then back in the pool
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cluster", KINDS, indirect=True)
def test_a_node_stopped_for_an_upgrade_then_back_in_the_pool(cluster, dealwire):
    c = cluster

    async def main():
        loop = asyncio.get_running_loop()
        conns, stopped, victims = await two_per_node(c, "c")
        clients = {u: Client(c.lb.port, u, conns[u]) for u in victims}
        for u, x in clients.items():
            await apublish_retrying(c.lb.port, [critical(u, k) for k in range(1, 11)])
            await x.read_through(10)
        old = c.nodes[stopped]
        old.send_signal(signal.SIGTERM)
        for x in clients.values():
            exc, left = await expect_close(x.ws)
            assert close_code(exc) == 1001 and left == [], (exc, left)
        assert await loop.run_in_executor(None, old.wait, t(10)) == 0
        for u in victims:  # published while they are away
            await apublish_retrying(c.lb.port, [critical(u, k) for k in range(11, 21)])
        for u, x in clients.items():
            welcome = await x.connect()
            assert welcome["recovered"] is True and welcome["last_seq"] == 20, welcome
            await x.read_through(20)
            assert x.handled == list(range(1, 21)) and await barrier(x.ws) == [], x.handled
            conns[u] = x.ws
        assert stopped not in (await aplacement(c.nodes, victims)).values()
        if c.lb.kind == "haproxy":
            await loop.run_in_executor(None, lambda: wait_until(
                lambda: c.lb.server_status()[old.port].startswith("DOWN"), t(10),
                "HAProxy's health check to mark the stopped node down"))

        # Back on its port: new connections reach it again (HAProxy: once its check rises;
        # nginx: once fail_timeout has passed since its last failure). Every connection stays
        # open, so that least connections prefers the empty node as soon as it may.
        back = await loop.run_in_executor(None, restart, dealwire, old)
        nodes = [back if d is old else d for d in c.nodes]
        if c.lb.kind == "haproxy":
            await loop.run_in_executor(None, lambda: wait_until(
                lambda: c.lb.server_status()[back.port] == "UP", t(10),
                "HAProxy's health check to bring the node back"))
        deadline = loop.time() + t(10)
        for k in range(1000):
            user = f"{c.lb.kind}-c-new{k}"
            conns[user], _ = await connect(c.lb.port, user)
            if (await aplacement(nodes, [user]))[user] == stopped:
                break
            assert loop.time() < deadline, "no new connection reached the restarted node"
            await asyncio.sleep(0.05)  # nginx: polling for fail_timeout to pass; no event
        await close_all(conns.values())

    run(main())


# --------------------------------------------------------------------------------------------
# (d) The dashboard's client reconnects by itself through the balancer
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cluster", ["haproxy"], indirect=True)
def test_page_through_the_balancer_keeps_every_alert_through_a_kill_9(cluster, page):
    c = cluster
    user = "lb-web"
    open_page(page, c.lb.port, f"?user_id={user}")
    wait_connected(page, user)
    page.execute_script("window.__dwNoReload = true")  # gone if the page ever reloads
    publish(c.lb.port, [critical_alert(user, f"before-{n}") for n in range(20)])
    wait_handled(page, 20, "the first 20 alerts")

    dead = placement(c.nodes, [user])[user]
    c.nodes[dead].kill_9()
    survivor = c.nodes[(dead + 1) % 3]
    for n in range(20):  # while the page reconnects, one request each
        publish(survivor.port, critical_alert(user, f"after-{n}"))

    got = wait_handled(page, 40, "all 40 alerts after the reconnection", timeout=30)
    wait_connected(page, user, "connected again")
    stored = inbox(c.server, c.db, user)
    assert sorted(stored) == list(range(1, 41)), stored
    assert [h["seq"] for h in got] == list(range(1, 41)), [h["seq"] for h in got]
    assert {h["seq"]: h["dealId"] for h in got} == {s: deal for s, (deal, _) in stored.items()}
    assert page_last_seq(page) == (40, "40")
    assert counter(page, "reconnects") == 1
    assert page.execute_script("return window.__dwNoReload") is True
    assert dead not in placement(c.nodes, [user]).values()
    assert not [m for m in console_errors(page) if "WebSocket connection to" not in m]
