"""The durable inbox (docs/delivery.md) against a real private PostgreSQL: every critical
message to a user gets the user's next seq, is written to alert_inbox before it is sent, and
carries "seq" as its first member; the stored text is the text sent; seq is per user,
increasing and gap-free under concurrent publishers; a critical publish while the database is
away answers 503 and sends nothing, while other traffic goes on.
"""

import asyncio
import json
import re
import threading

from conftest import (
    aget, apublish, connect_user, free_port, http_post, publish, recv_json, run, t,
)
from conftest_pg import PgServer, pg_db, postgres, require_postgres  # noqa: F401

SCHEMA_RE = re.compile(r" migrate: schema (at version \d+:|up to date at version \d+$)")
DOWN_RE = re.compile(r" warn  store: database (unreachable|connection lost)")


async def await_log(d, rx, timeout=30):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + t(timeout)
    while not any(rx.search(line) for line in d.stderr_text().splitlines()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {rx.pattern!r}")
        await asyncio.sleep(0.05)


def start(dealwire, url):
    d = dealwire("--db", url, "--log-level", "debug")
    run(await_log(d, SCHEMA_RE))
    return d


def alert(user, n, critical=None, target=None):
    item = {"target": target or {"user_id": user},
            "message": {"type": "notification", "message": f"m{n}", "level": "info", "n": n}}
    if critical is not None:
        item["critical"] = critical
    return item


def price_alert(user, n):
    return {"target": {"user_id": user},
            "message": {"type": "price_alert", "deal_id": f"d{n}", "title": "T",
                        "current_price": 90, "threshold": 100, "drop_amount": 10,
                        "drop_percent": 10.0, "reasons": ["Price dropped by $10"], "n": n}}


def stored(server, db, user):
    """[(seq, type, payload text)] of user's inbox, in seq order."""
    rows = server.psql(f"SELECT seq, type, payload::text FROM alert_inbox WHERE user_id = '{user}'"
                       " ORDER BY seq", db)
    return [(int(s), ty, p) for s, ty, p in rows]


def test_critical_messages_are_numbered_stored_then_sent(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)

    async def main():
        ws, _ = await connect_user(d.port, "alice", max_queue=None)
        # A price alert is critical by default; a notification when it says so.
        first = await apublish(d.port, price_alert("alice", 1))
        assert first["recipients"] == 1 and first["seq"] == 1, first
        raw1 = await asyncio.wait_for(ws.recv(), t(5))
        fifth = alert("alice", 5, critical=True)
        fifth["message"]["seq"] = 999  # the server's seq replaces a publisher's own
        batch = await apublish(d.port, [alert("alice", 2, critical=True), alert("alice", 3),
                                        alert("bob", 4, critical=True), fifth])
        assert [r.get("seq") for r in batch["results"]] == [2, None, 1, 3], batch
        raws = [raw1] + [await asyncio.wait_for(ws.recv(), t(5)) for _ in range(3)]
        msgs = [json.loads(r) for r in raws]
        # In the order published; seq first on the wire; the non-critical one has none.
        assert [m.get("n") for m in msgs] == [1, 2, 3, 5]
        assert [m.get("seq") for m in msgs] == [1, 2, None, 3]
        assert raws[0].startswith('{"seq":1,"type":"price_alert"'), raws[0]
        assert raws[3].startswith('{"seq":3,') and raws[3].count('"seq"') == 1, raws[3]
        # What is stored is exactly what was sent.
        rows = stored(server, db, "alice")
        assert [(s, ty) for s, ty, _ in rows] == [(1, "price_alert"), (2, "notification"),
                                                 (3, "notification")]
        assert [p for _, _, p in rows] == [raws[0], raws[1], raws[3]]
        assert [s for s, _, _ in stored(server, db, "bob")] == [1]  # bob is offline: kept
        # A critical message to a channel or to everyone is not per user: not stored.
        await apublish(d.port, alert("x", 6, critical=True, target="all"))
        m = json.loads(await asyncio.wait_for(ws.recv(), t(5)))
        assert m["n"] == 6 and "seq" not in m
        assert server.value("SELECT count(*) FROM alert_inbox", db) == "4"
        await ws.close()

    run(main())


def test_seq_is_gap_free_under_concurrent_publishers(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)
    publishers, per_publisher = 8, 40
    seqs, errors = [], []

    def publisher(p):
        try:
            for i in range(per_publisher):
                items = [alert("carol", p * 1000 + i * 2 + k, critical=True) for k in range(2)]
                answer = publish(d.port, items)
                seqs.extend(r["seq"] for r in answer["results"])
        except Exception as exc:  # reported below
            errors.append(exc)

    async def main():
        ws, _ = await connect_user(d.port, "carol", max_queue=None)
        threads = [threading.Thread(target=publisher, args=(p,)) for p in range(publishers)]
        for th in threads:
            th.start()
        total = publishers * per_publisher * 2
        got = [json.loads(await asyncio.wait_for(ws.recv(), t(20)))["seq"] for _ in range(total)]
        for th in threads:
            th.join(t(30))
        assert not errors, errors
        # Every seq once, 1..total, and the client saw them in increasing order.
        assert sorted(seqs) == list(range(1, total + 1))
        assert got == list(range(1, total + 1))
        rows = stored(server, db, "carol")
        assert [s for s, _, _ in rows] == list(range(1, total + 1))
        status, stats = await aget(d.port, "/api/websocket/stats")
        inbox = stats["inbox"]
        assert inbox["enabled"] and inbox["written"] == total and inbox["failed"] == 0, inbox
        # One statement per publish request at most; fewer when requests came together.
        assert 1 <= inbox["writes"] <= publishers * per_publisher, inbox
        print(f"{total} critical messages in {publishers * per_publisher} requests: "
              f"{inbox['writes']} statements")
        await ws.close()

    run(main(), timeout=t(120))


def test_database_away_critical_publish_is_503_and_nothing_sent(dealwire):
    require_postgres()
    server = PgServer(port=free_port()).start()
    try:
        d = start(dealwire, server.url())

        async def main():
            ws, _ = await connect_user(d.port, "dave", max_queue=None)
            assert (await apublish(d.port, alert("dave", 1, critical=True)))["seq"] == 1
            assert json.loads(await asyncio.wait_for(ws.recv(), t(5)))["seq"] == 1

            server.stop()
            status, body = http_post(d.port, "/api/publish",
                                     [alert("dave", 2), alert("dave", 3, critical=True)])
            assert status == 503, (status, body)
            assert "database" in body["error"], body
            # Non-critical traffic goes on; nothing of the refused request was sent.
            assert (await apublish(d.port, alert("dave", 4)))["recipients"] == 1
            m = await recv_json(ws, 5)
            assert m["n"] == 4, f"a message of the refused request arrived: {m}"

            server.start()
            # Back: numbering goes on from where it was, with no gap.
            for _ in range(int(t(60) * 10)):
                status, body = http_post(d.port, "/api/publish", alert("dave", 5, critical=True))
                if status == 200:
                    break
                await asyncio.sleep(0.1)  # the store's backoff: no event to await
            assert status == 200 and body["seq"] == 2, (status, body)
            m = await recv_json(ws, 5)
            assert m["seq"] == 2 and m["n"] == 5
            await ws.close()

        run(main(), timeout=t(120))
        assert d.running()
        assert len([line for line in d.stderr_text().splitlines()
                    if " warn  inbox: cannot write" in line]) == 1, d.stderr_text()
    finally:
        server.remove()


def test_price_watch_alerts_are_stored_in_the_round_that_records_them(dealwire, pg_db):
    # The price-watch monitor writes each alert to the inbox in the transaction that records
    # it in price_watch_alerts: one row in each, the same seq on the wire and in the inbox,
    # and an alert for a user who is offline is kept all the same.
    server, db, url = pg_db
    d = dealwire("--db", url, "--watch-interval", "1", "--hot-deal-interval", "3600",
                 "--trending-interval", "3600", "--log-level", "debug")
    run(await_log(d, SCHEMA_RE))

    async def main():
        ws, _ = await connect_user(d.port, "erin", max_queue=None)
        server.psql("INSERT INTO deals (id, title, category, price, original_price)"
                    " VALUES ('pw1', 'Paris hotel', 'hotel', 90, 200);"
                    "INSERT INTO price_watches (user_id, deal_id, threshold_price) VALUES"
                    " ('erin', 'pw1', 100), ('frank', 'pw1', 95)", db)
        raw = await asyncio.wait_for(ws.recv(), t(20))
        msg = json.loads(raw)
        assert msg["type"] == "price_alert" and msg["seq"] == 1, msg
        for user in ("erin", "frank"):
            rows = stored(server, db, user)
            assert [(s, ty) for s, ty, _ in rows] == [(1, "price_alert")], (user, rows)
        assert stored(server, db, "erin")[0][2] == raw
        assert server.value("SELECT count(*) FROM price_watch_alerts", db) == "2"
        await ws.close()

    run(main(), timeout=t(60))


def test_acks_mark_the_users_messages_through_seq(dealwire, pg_db):
    # {"type":"ack","seq":N} marks the user's messages through N (only the user's), grouped
    # by the inbox's thread; it gets no answer; an invalid one gets an error and marks nothing.
    server, db, url = pg_db
    d = start(dealwire, url)

    async def main():
        ws, _ = await connect_user(d.port, "gina", max_queue=None)
        other, _ = await connect_user(d.port, "hal", max_queue=None)
        await apublish(d.port, [alert("gina", n, critical=True) for n in range(5)]
                       + [alert("hal", 9, critical=True)])
        got = [json.loads(await asyncio.wait_for(ws.recv(), t(5)))["seq"] for _ in range(5)]
        assert got == [1, 2, 3, 4, 5]
        await ws.send(json.dumps({"type": "ack", "seq": 2}))
        await ws.send(json.dumps({"type": "ack", "seq": 3}))
        await ws.send(json.dumps({"type": "ack", "seq": 0}))
        err = await recv_json(ws, 5)
        assert err["type"] == "error" and err["code"] == "invalid_message", err
        # The acks have no answer: a ping behind them comes back first.
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv_json(ws, 5))["type"] == "pong"
        for _ in range(int(t(10) * 20)):
            acked = server.psql("SELECT seq FROM alert_inbox WHERE user_id = 'gina'"
                                " AND acked_at IS NOT NULL ORDER BY seq", db)
            if len(acked) == 3:
                break
            await asyncio.sleep(0.05)  # the ack is written by another thread: poll the table
        assert [int(r[0]) for r in acked] == [1, 2, 3]
        assert server.value("SELECT count(*) FROM alert_inbox WHERE user_id = 'hal'"
                            " AND acked_at IS NOT NULL", db) == "0"
        status, stats = await aget(d.port, "/api/websocket/stats")
        assert stats["inbox"]["acks"] >= 1 and stats["inbox"]["acks_failed"] == 0, stats["inbox"]
        await ws.close()
        await other.close()

    run(main())


def test_a_publish_id_is_published_once(dealwire, pg_db):
    # An item with an "id" is stored and sent once: published again (a retry after a timeout),
    # it gets the first answer marked "duplicate", and nothing is stored or sent again. Live
    # pushes with ids too. Ids repeated in one batch, or invalid, are refused naming the field.
    server, db, url = pg_db
    d = start(dealwire, url)

    async def main():
        ws, _ = await connect_user(d.port, "ivy", max_queue=None)
        first = await apublish(d.port, dict(alert("ivy", 1, critical=True), id="order-1"))
        assert first == {"recipients": 1, "id": "order-1", "seq": 1}, first
        assert (await recv_json(ws, 5))["seq"] == 1
        again = await apublish(d.port, dict(alert("ivy", 1, critical=True), id="order-1"))
        assert again == {"recipients": 1, "id": "order-1", "seq": 1, "duplicate": True}, again
        batch = await apublish(d.port, [dict(alert("ivy", 2, critical=True), id="order-1"),
                                        dict(alert("ivy", 3), id="live-3"),
                                        dict(alert("ivy", 4, critical=True), id="order-4")])
        assert [(r.get("seq"), r.get("duplicate", False)) for r in batch["results"]] == \
            [(1, True), (None, False), (2, False)], batch
        assert [m["n"] for m in [await recv_json(ws, 5) for _ in range(2)]] == [3, 4]
        live = await apublish(d.port, dict(alert("ivy", 3), id="live-3"))
        assert live["duplicate"] is True and "seq" not in live, live
        # Only what was new was sent: the ping's pong comes next.
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv_json(ws, 5))["type"] == "pong"
        assert [s for s, _, _ in stored(server, db, "ivy")] == [1, 2]
        status, body = http_post(d.port, "/api/publish", [dict(alert("ivy", 5), id="x"),
                                                          dict(alert("ivy", 6), id="x")])
        assert status == 400 and body["field"] == "id", body
        status, body = http_post(d.port, "/api/publish", [alert("ivy", 7),
                                                          dict(alert("ivy", 8), id="a b")])
        assert status == 400 and body["field"] == "[1].id", body
        status, stats = await aget(d.port, "/api/websocket/stats")
        assert stats["inbox"]["duplicates"] == 3, stats["inbox"]
        await ws.close()

    run(main())


def test_concurrent_publishes_of_one_id_make_one_message(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)
    answers, errors = [], []

    def publisher():
        try:
            for i in range(20):
                answers.append(publish(d.port, dict(alert("jo", i, critical=True), id=f"j{i}")))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publisher) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(t(60))
    assert not errors, errors
    firsts = [a for a in answers if not a.get("duplicate")]
    assert sorted(a["id"] for a in firsts) == sorted(f"j{i}" for i in range(20))
    assert sorted(a["seq"] for a in firsts) == list(range(1, 21))
    by_id = {a["id"]: a["seq"] for a in firsts}
    assert all(a["seq"] == by_id[a["id"]] for a in answers), answers
    assert [s for s, _, _ in stored(server, db, "jo")] == list(range(1, 21))


def test_a_publish_id_without_a_database_is_echoed(daemon):
    answer = publish(daemon.port, dict(alert("kim", 1, critical=True), id="k-1"))
    assert answer == {"recipients": 0, "id": "k-1"}, answer


def test_a_retry_sends_what_a_lost_answer_stored_and_never_sent(dealwire, pg_db):
    # A publish whose COMMIT went through while its answer was lost with the database (it
    # answered 503 and sent nothing) left its message stored and its delivery unrecorded
    # (publish_ids.recipients NULL). The retry with the same id sends the stored message, once,
    # with its seq; a later retry does not send it again.
    server, db, url = pg_db
    d = start(dealwire, url)

    async def main():
        ws, _ = await connect_user(d.port, "lou", max_queue=None)
        first = await apublish(d.port, dict(alert("lou", 1, critical=True), id="lost-0"))
        assert first["seq"] == 1 and (await recv_json(ws, 5))["seq"] == 1
        stored_text = '{"seq":2,"type":"notification","message":"m2","level":"info","n":2}'
        server.psql("UPDATE alert_inbox_seq SET last_seq = 2 WHERE user_id = 'lou';"
                    "INSERT INTO alert_inbox (user_id, seq, type, payload) VALUES"
                    f" ('lou', 2, 'notification', '{stored_text}');"
                    "INSERT INTO publish_ids (id, user_id, seq) VALUES ('lost-2', 'lou', 2)", db)
        retry = await apublish(d.port, dict(alert("lou", 2, critical=True), id="lost-2"))
        assert retry == {"recipients": 1, "id": "lost-2", "seq": 2, "duplicate": True}, retry
        assert await asyncio.wait_for(ws.recv(), t(5)) == stored_text
        again = await apublish(d.port, dict(alert("lou", 2, critical=True), id="lost-2"))
        assert again["duplicate"] is True and again["seq"] == 2, again
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv_json(ws, 5))["type"] == "pong"
        assert [s for s, _, _ in stored(server, db, "lou")] == [1, 2]
        await ws.close()

    run(main())
