"""Resuming from the durable inbox (docs/delivery.md) against a real private PostgreSQL: the
welcome carries the user's last_seq and whether the history is all there; a connection opened
with ?last_seq=N, or a {"type":"resume"} command, gets every stored message after N in order,
then live messages, with no gap and no message twice; a connection without last_seq gets what
nobody acknowledged (offline delivery); each device resumes on its own; the daemon killed with
SIGKILL in the middle of a burst loses nothing a publisher was told was stored.
"""

import asyncio
import http.client
import json
import threading
import time

import websockets

from conftest import (
    apublish, barrier, connect_user, free_port, http_post, publish, recv_json, run, t,
    ws_connect,
)
from conftest_pg import PgServer, pg_db, postgres, require_postgres  # noqa: F401
from test_inbox import SCHEMA_RE, alert, await_log, start


async def connect(port, user, last_seq=None, **kw):
    """Connects as user (with ?last_seq= when given); returns (ws, welcome)."""
    query = f"user_id={user}" + ("" if last_seq is None else f"&last_seq={last_seq}")
    kw.setdefault("max_queue", None)
    ws = await ws_connect(port, query=query, **kw)
    welcome = await recv_json(ws, 10)
    assert welcome["type"] == "connection_established", welcome
    return ws, welcome


async def read_n(ws, n, timeout=20):
    """The next n messages, as parsed JSON."""
    return [await recv_json(ws, timeout) for _ in range(n)]


async def read_through_pong(ws):
    """Every message before the pong that answers a ping sent now."""
    return await barrier(ws, 20)


def burst(user, first, count):
    return [alert(user, n, critical=True) for n in range(first, first + count)]


def test_welcome_says_last_seq_and_a_new_device_gets_what_nobody_acknowledged(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)

    async def main():
        # Nothing yet: last_seq 0, history complete.
        ws, welcome = await connect(d.port, "ann")
        assert welcome["last_seq"] == 0 and welcome["recovered"] is True, welcome
        assert await read_through_pong(ws) == []
        await ws.close()
        # Offline: five critical messages, one live push (not kept).
        answer = await apublish(d.port, burst("ann", 1, 5) + [alert("ann", 99)])
        assert [r.get("seq") for r in answer["results"]] == [1, 2, 3, 4, 5, None]
        ws, welcome = await connect(d.port, "ann")
        assert welcome["last_seq"] == 5 and welcome["recovered"] is True, welcome
        got = await read_n(ws, 5)
        assert [(m["seq"], m["n"]) for m in got] == [(s, s) for s in range(1, 6)]
        # Then live messages, numbered on from there.
        await apublish(d.port, burst("ann", 6, 1))
        assert (await recv_json(ws, 10))["seq"] == 6
        await ws.send(json.dumps({"type": "ack", "seq": 4}))
        await ws.close()

        # The ack is recorded (by the inbox's thread): a new device gets 5 and 6 only.
        for _ in range(int(t(10) * 20)):
            if server.value("SELECT acked_seq FROM alert_inbox_seq WHERE user_id = 'ann'",
                            db) == "4":
                break
            await asyncio.sleep(0.05)  # written by another thread: poll the table
        ws, welcome = await connect(d.port, "ann")
        assert welcome["last_seq"] == 6 and welcome["recovered"] is True, welcome
        assert [m["seq"] for m in await read_through_pong(ws)] == [5, 6]
        await ws.close()

    run(main())


def test_resume_from_the_middle_by_query_and_by_command(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)

    async def main():
        await apublish(d.port, burst("bea", 1, 30))
        ws, welcome = await connect(d.port, "bea", last_seq=12)
        assert welcome["last_seq"] == 30 and welcome["recovered"] is True, welcome
        got = await read_through_pong(ws)
        assert [m["seq"] for m in got] == list(range(13, 31))
        # The stored text is sent as it was sent live: seq first.
        raw = server.value("SELECT payload::text FROM alert_inbox WHERE user_id = 'bea'"
                           " AND seq = 13", db)
        assert json.loads(raw) == got[0] and raw.startswith('{"seq":13,'), raw

        # A resume command on the open connection: answered, then replayed, then live.
        await ws.send(json.dumps({"type": "resume", "last_seq": 27}))
        resumed = await recv_json(ws, 10)
        assert resumed["type"] == "resumed" and resumed["last_seq"] == 30, resumed
        assert resumed["recovered"] is True
        assert [m["seq"] for m in await read_n(ws, 3)] == [28, 29, 30]
        await apublish(d.port, burst("bea", 31, 2))
        assert [m["seq"] for m in await read_n(ws, 2)] == [31, 32]

        # Invalid: an error naming the field, nothing replayed.
        for bad in ({"type": "resume"}, {"type": "resume", "last_seq": -1},
                    {"type": "resume", "last_seq": "5"}, {"type": "resume", "last_seq": 1.5}):
            await ws.send(json.dumps(bad))
            err = await recv_json(ws, 5)
            assert err["type"] == "error" and err["code"] == "invalid_message", (bad, err)
            assert "last_seq" in err["message"]
        assert await read_through_pong(ws) == []
        await ws.close()

        # A client ahead of this inbox (another database, or one reset): not recovered.
        ws, welcome = await connect(d.port, "bea", last_seq=500)
        assert welcome["last_seq"] == 32 and welcome["recovered"] is False, welcome
        assert await read_through_pong(ws) == []
        # It counts again from the welcome's last_seq: what comes next is new to it.
        await apublish(d.port, burst("bea", 33, 1))
        assert (await recv_json(ws, 10))["seq"] == 33
        await ws.close()

        # last_seq must be a whole number, given once: 400 at the upgrade.
        for query in ("last_seq=-1", "last_seq=x", "last_seq=1&last_seq=2", "last_seq=",
                      "last_seq=99999999999999999999", "last_seq=+3"):
            try:
                ws = await ws_connect(d.port, query=f"user_id=bea&{query}")
            except websockets.exceptions.InvalidStatusCode as exc:
                assert exc.status_code == 400, (query, exc.status_code)
            else:
                await ws.close()
                raise AssertionError(f"{query} was accepted")

    run(main())


def test_history_gone_says_not_recovered(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)

    async def main():
        await apublish(d.port, burst("cid", 1, 10))
        # Retention took 1-4 (as --inbox-retention would): a resume from 2 lost 3 and 4.
        server.psql("DELETE FROM alert_inbox WHERE user_id = 'cid' AND seq <= 4", db)
        ws, welcome = await connect(d.port, "cid", last_seq=2)
        assert welcome["last_seq"] == 10 and welcome["recovered"] is False, welcome
        assert [m["seq"] for m in await read_through_pong(ws)] == list(range(5, 11))
        await ws.close()
        # From 4 on nothing is missing.
        ws, welcome = await connect(d.port, "cid", last_seq=4)
        assert welcome["recovered"] is True, welcome
        assert [m["seq"] for m in await read_through_pong(ws)] == list(range(5, 11))
        await ws.close()
        status, stats = http_get_stats(d.port)
        assert stats["inbox"]["replays"] == 2 and stats["inbox"]["not_recovered"] == 1, stats["inbox"]

    run(main())


def http_get_stats(port):
    from conftest import http_get
    return http_get(port, "/api/websocket/stats")


def test_two_devices_resume_each_on_their_own(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)

    async def main():
        await apublish(d.port, burst("dot", 1, 8))
        phone, _ = await connect(d.port, "dot", last_seq=3)
        laptop, _ = await connect(d.port, "dot", last_seq=6)
        assert [m["seq"] for m in await read_through_pong(phone)] == [4, 5, 6, 7, 8]
        assert [m["seq"] for m in await read_through_pong(laptop)] == [7, 8]
        # Live messages reach both, once each.
        await apublish(d.port, burst("dot", 9, 2))
        assert [m["seq"] for m in await read_n(phone, 2)] == [9, 10]
        assert [m["seq"] for m in await read_n(laptop, 2)] == [9, 10]
        await phone.close()
        await laptop.close()

    run(main())


def test_live_messages_during_a_replay_wait_and_are_not_sent_twice(dealwire, pg_db):
    # A replay of 3,000 stored messages (several pages) while a publisher keeps sending to the
    # same user: the client gets 1..N exactly once, in order, with no gap.
    server, db, url = pg_db
    d = start(dealwire, url)
    stored_first, live = 3000, 600
    errors = []

    def publisher():
        try:
            for i in range(0, live, 20):
                publish(d.port, burst("eve", stored_first + 1 + i, 20))
        except Exception as exc:  # reported below
            errors.append(exc)

    async def main():
        for i in range(0, stored_first, 500):
            await apublish(d.port, burst("eve", 1 + i, 500))
        th = threading.Thread(target=publisher)
        th.start()
        ws, welcome = await connect(d.port, "eve", last_seq=0)
        assert welcome["recovered"] is True and welcome["last_seq"] >= stored_first, welcome
        total = stored_first + live
        got = [m["seq"] for m in await read_n(ws, total, 30)]
        th.join(t(60))
        assert not errors, errors
        assert got == list(range(1, total + 1)), \
            f"first mismatch at {next(i for i, s in enumerate(got) if s != i + 1)}"
        assert await read_through_pong(ws) == []
        await ws.close()

    run(main(), timeout=120)


def test_resume_without_a_database_is_an_error(daemon):
    async def main():
        ws, welcome = await connect_user(daemon.port, "fay")
        assert "last_seq" not in welcome and "recovered" not in welcome, welcome
        await ws.send(json.dumps({"type": "resume", "last_seq": 3}))
        err = await recv_json(ws, 5)
        assert err["type"] == "error" and err["code"] == "no_inbox", err
        await ws.close()

    run(main())


def test_database_away_at_connect_welcome_says_so_and_live_traffic_goes_on(dealwire):
    require_postgres()
    server = PgServer(port=free_port()).start()
    try:
        d = start(dealwire, server.url())

        async def main():
            assert (await apublish(d.port, burst("gus", 1, 2)))["results"][1]["seq"] == 2
            server.stop()
            ws, welcome = await connect(d.port, "gus", last_seq=0)
            assert welcome["recovered"] is False and "replay_error" in welcome, welcome
            assert "last_seq" not in welcome
            assert (await apublish(d.port, alert("gus", 7)))["recipients"] == 1
            assert (await recv_json(ws, 10))["n"] == 7
            server.start()
            # Back: the client resumes and gets what it missed.
            for _ in range(int(t(60) * 10)):
                await ws.send(json.dumps({"type": "resume", "last_seq": 0}))
                resumed = await recv_json(ws, 10)
                assert resumed["type"] == "resumed", resumed
                if resumed["recovered"]:
                    break
                await asyncio.sleep(0.1)  # the store's reconnect backoff: no event to await
            assert resumed["last_seq"] == 2, resumed
            assert [m["seq"] for m in await read_n(ws, 2)] == [1, 2]
            await ws.close()

        run(main(), timeout=120)
    finally:
        server.remove()


def test_kill_9_in_the_middle_of_a_burst_loses_nothing_stored(dealwire, pg_db):
    # 10,000 critical alerts to one user from 4 publishers; the daemon is killed with SIGKILL
    # in the middle and started again on the same port and database; a publish that got no
    # answer is published again with the same ids (stored once whatever happened to the first
    # try). The client, resuming from the last seq it handled each time, ends with seq 1 to
    # 10,000 exactly once and in order, each alert with the seq its publisher was told.
    server, db, url = pg_db
    total, per_request, publishers = 10000, 25, 4
    port = free_port()
    d = dealwire("--db", url, "--log-level", "info", port=port)
    run(await_log(d, SCHEMA_RE))
    acked = {}  # n -> seq, from 200 answers
    lock = threading.Lock()
    pacing = threading.Event()  # never set: paces the retries
    errors = []

    def publisher(p):
        try:
            ns = list(range(p, total, publishers))
            for i in range(0, len(ns), per_request):
                items = [dict(alert("hank", n, critical=True), id=f"hank-{n}")
                         for n in ns[i:i + per_request]]
                deadline = time.monotonic() + t(60)
                while time.monotonic() < deadline:  # retries while the daemon is down
                    try:
                        status, body = http_post(port, "/api/publish", items, timeout=t(10))
                    except (OSError, http.client.HTTPException):
                        status, body = None, None  # the daemon died under this request
                    if status == 200:
                        with lock:
                            for it, r in zip(items, body["results"]):
                                acked[it["message"]["n"]] = r["seq"]
                        break
                    pacing.wait(0.05)  # the daemon is restarting: retry shortly
                else:
                    raise AssertionError("a publish never succeeded")
        except Exception as exc:  # reported below
            errors.append(exc)

    seen = []  # (seq, n) in the order handled, over every connection

    async def read_until(ws, done):
        while not done():
            m = await recv_json(ws, 30)
            if "seq" in m:
                seen.append((m["seq"], m["n"]))

    async def consume(stop_at):
        last = seen[-1][0] if seen else None
        ws, welcome = await connect(port, "hank", last_seq=last)
        assert welcome["recovered"] is True, welcome
        await read_until(ws, lambda: len(seen) >= stop_at)
        return ws

    async def main():
        nonlocal d
        threads = [threading.Thread(target=publisher, args=(p,)) for p in range(publishers)]
        for th in threads:
            th.start()
        ws = await consume(total // 3)
        d.kill_9()
        try:
            while True:  # what was in flight when the daemon died
                m = await recv_json(ws, 5)
                if "seq" in m:
                    seen.append((m["seq"], m["n"]))
        except (websockets.exceptions.ConnectionClosed, asyncio.TimeoutError):
            pass
        d = dealwire("--db", url, "--log-level", "info", port=port)
        ws = await consume(total)
        for th in threads:
            th.join(t(120))
        assert not errors, errors
        assert await read_through_pong(ws) == []
        await ws.close()

    run(main(), timeout=300)
    # Every alert stored once (the retries carried their ids), delivered once, in seq order.
    seqs = [s for s, _ in seen]
    assert seqs == list(range(1, total + 1)), "a gap or a message twice"
    assert server.value("SELECT last_seq FROM alert_inbox_seq WHERE user_id = 'hank'",
                        db) == str(total)
    assert set(acked) == set(range(total)), "a publish never got its 200"
    got = {n: s for s, n in seen}
    assert got == acked, "an alert arrived with another seq than its publisher was told"


def test_database_stopped_during_a_burst_loses_nothing_answered(dealwire):
    # 3,000 critical alerts with ids from 3 publishers; PostgreSQL is stopped in the middle and
    # started again. While it is down every publish answers 503 and nothing of it is sent; the
    # publishers retry with the same ids. A connected client that resumes at the end has every
    # seq from 1 to 3,000 exactly once and in order, each alert with the seq its 200 said.
    require_postgres()
    server = PgServer(port=free_port()).start()
    total, per_request, publishers = 3000, 20, 3
    answered, refused, errors = {}, [0], []
    lock = threading.Lock()
    pacing = threading.Event()  # never set: paces the retries
    try:
        d = start(dealwire, server.url())

        def publisher(p):
            try:
                ns = list(range(p, total, publishers))
                for i in range(0, len(ns), per_request):
                    items = [dict(alert("ida", n, critical=True), id=f"ida-{n}")
                             for n in ns[i:i + per_request]]
                    deadline = time.monotonic() + t(60)
                    while time.monotonic() < deadline:  # retries while the database is down
                        status, body = http_post(d.port, "/api/publish", items)
                        if status == 200:
                            with lock:
                                for it, r in zip(items, body["results"]):
                                    answered[it["message"]["n"]] = r["seq"]
                            break
                        assert status == 503 and "database" in body["error"], (status, body)
                        with lock:
                            refused[0] += 1
                        pacing.wait(0.05)  # the database is away: retry shortly
                    else:
                        raise AssertionError("a publish never succeeded")
            except Exception as exc:  # reported below
                errors.append(exc)

        async def main():
            ws, _ = await connect(d.port, "ida", last_seq=0)
            seen = []
            threads = [threading.Thread(target=publisher, args=(p,)) for p in range(publishers)]
            for th in threads:
                th.start()
            while len(seen) < total // 3:
                m = await recv_json(ws, 30)
                seen.append((m["seq"], m["n"]))
            server.stop()
            # While it is down, live messages go on and nothing half-done arrives.
            assert (await apublish(d.port, alert("ida", -1)))["recipients"] == 1
            while True:
                m = await recv_json(ws, 30)
                if m["n"] == -1:
                    break
                seen.append((m["seq"], m["n"]))
            server.start()
            # As a client does: a duplicate is ignored, a gap answered with one resume.
            resuming = False
            while seen[-1][0] < total:
                m = await recv_json(ws, 30)
                if m["type"] == "resumed":
                    assert m["recovered"] is True, m
                    resuming = False
                elif resuming or m["seq"] <= seen[-1][0]:
                    continue
                elif m["seq"] > seen[-1][0] + 1:
                    await ws.send(json.dumps({"type": "resume", "last_seq": seen[-1][0]}))
                    resuming = True
                else:
                    seen.append((m["seq"], m["n"]))
            for th in threads:
                th.join(t(120))
            assert not errors, errors
            assert await read_through_pong(ws) == []
            await ws.close()
            return seen

        seen = run(main(), timeout=300)
        assert refused[0] > 0, "the outage refused no publish: it came too late to test"
        assert [s for s, _ in seen] == list(range(1, total + 1)), "a gap or a message twice"
        assert {n: s for s, n in seen} == answered
        assert server.value("SELECT count(*) FROM alert_inbox WHERE user_id = 'ida'") == str(total)
    finally:
        server.remove()
