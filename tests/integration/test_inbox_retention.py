"""Retention of the durable inbox and its dead letters (--inbox-retention, src/retention.c),
and GET /api/websocket/users/<id>/inbox, against a real private PostgreSQL.

A sweep runs once at start and then every quarter of the retention (1 s to 60 s apart):
unacknowledged messages older than the retention move to alert_inbox_dead with the reason,
acknowledged ones are deleted, publish ids older than the retention are deleted, and the
stats report the depth and the dead letters. Several daemons on one database sweep it together
and move each message once. Nothing here sleeps to synchronise: every wait polls the database
or the stats document, with a bounded deadline.
"""

import json

from conftest import (
    assert_iso, free_port, http_get, http_request, problem_lines, publish, run, run_bad_start, t,
    wait_until,
)
from conftest_pg import PgServer, pg_db, postgres, require_postgres  # noqa: F401
from test_http import raw_exchange
from test_inbox import SCHEMA_RE, alert, await_log, stored

API_TOKEN = "operator-token-0123456789"
INBOX_KEYS = {"user_id", "last_seq", "acked_seq", "first_seq", "after", "messages", "more"}
MESSAGE_KEYS = {"seq", "type", "created_at", "acked", "message"}
RETENTION_KEYS = {"retention_seconds", "depth", "dead_letters", "moved_to_dead_letters",
                  "acked_deleted", "ids_expired", "sweeps", "last_sweep"}


def start(dealwire, url, *args):
    d = dealwire("--db", url, "--log-level", "debug", *args)
    run(await_log(d, SCHEMA_RE))
    return d


def inbox_stats(port, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else None
    r = http_request(port, "GET", "/api/websocket/stats", headers=headers)
    assert r.status == 200, r
    return r.json["inbox"]


def wait_stats(port, predicate, what, timeout=20):
    """The inbox stats once predicate(stats) holds (polled within a bounded deadline)."""
    box = {}

    def check():
        box["s"] = inbox_stats(port)
        return predicate(box["s"])

    try:
        wait_until(check, t(timeout), what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last inbox stats: {box.get('s')}") from None
    return box["s"]


def count(server, db, sql):
    return int(server.value(sql, db))


def dead_letters(server, db, user):
    """[(seq, type, payload text, reason)] of user's dead letters, in seq order."""
    rows = server.psql("SELECT seq, type, payload::text, reason FROM alert_inbox_dead"
                       f" WHERE user_id = '{user}' ORDER BY seq", db)
    return [(int(s), ty, p, why) for s, ty, p, why in rows]


def insert_message(server, db, user, seq, age, acked_age=None):
    """A message of user in alert_inbox created `age` ago (an SQL interval), acknowledged
    `acked_age` ago (None: not acknowledged)."""
    acked = f"now() - interval '{acked_age}'" if acked_age else "NULL"
    payload = json.dumps({"seq": seq, "type": "notification", "message": f"{user}{seq}"})
    server.psql("INSERT INTO alert_inbox (user_id, seq, type, payload, created_at, acked_at)"
                f" VALUES ('{user}', {seq}, 'notification', '{payload}',"
                f" now() - interval '{age}', {acked})", db)


def insert_publish_id(server, db, ident, age):
    server.psql(f"INSERT INTO publish_ids (id, created_at) VALUES ('{ident}',"
                f" now() - interval '{age}')", db)


# --------------------------------------------------------------------------------------------
# The setting
# --------------------------------------------------------------------------------------------

def test_inbox_retention_setting(dealwire, tmp_path):
    # Default 7 days; from a flag, DEALWIRE_INBOX_RETENTION or a config file; 1 s to 10 years.
    assert inbox_stats(dealwire().port)["retention_seconds"] == 604800
    d = dealwire(env={"DEALWIRE_INBOX_RETENTION": "77"})
    assert inbox_stats(d.port)["retention_seconds"] == 77
    conf = tmp_path / "dealwire.conf"
    conf.write_text("inbox-retention = 86400\n")
    assert inbox_stats(dealwire("--config", conf).port)["retention_seconds"] == 86400
    assert inbox_stats(dealwire("--inbox-retention", "315360000").port)["retention_seconds"] \
        == 315360000
    for value in ("0", "315360001", "-1", "1d", ""):
        code, err = run_bad_start(["--inbox-retention", value])
        assert code == 2 and "--inbox-retention" in err, (value, code, err)


# --------------------------------------------------------------------------------------------
# The sweeps
# --------------------------------------------------------------------------------------------

def test_unacknowledged_messages_become_dead_letters(dealwire, pg_db):
    # --inbox-retention 2: what a user who stays offline never acknowledges is moved, whole,
    # to the dead letters with the reason; acknowledged messages as old are deleted; publish
    # ids as old are forgotten; the stats count all of it.
    server, db, url = pg_db
    d = start(dealwire, url, "--inbox-retention", "2")
    answer = publish(d.port, [alert("olga", n, critical=True) for n in range(3)])
    assert [r["seq"] for r in answer["results"]] == [1, 2, 3], answer
    before = stored(server, db, "olga")
    created = server.psql("SELECT seq, created_at FROM alert_inbox WHERE user_id = 'olga'"
                          " ORDER BY seq", db)
    insert_message(server, db, "pete", 1, "1 hour", acked_age="59 minutes")
    insert_message(server, db, "pete", 2, "1 hour", acked_age="59 minutes")
    insert_publish_id(server, db, "old-1", "1 hour")
    insert_publish_id(server, db, "old-2", "10 seconds")

    wait_until(lambda: count(server, db, "SELECT count(*) FROM alert_inbox_dead") == 3, t(20),
               "olga's three messages in alert_inbox_dead")
    dead = dead_letters(server, db, "olga")
    assert [(s, ty, p) for s, ty, p, _ in dead] == before, (dead, before)
    assert {why for *_, why in dead} == {"not acknowledged within 2 s"}
    assert server.psql("SELECT seq, created_at FROM alert_inbox_dead WHERE user_id = 'olga'"
                       " ORDER BY seq", db) == created
    assert count(server, db, "SELECT count(*) FROM alert_inbox_dead"
                 " WHERE dead_at < created_at + interval '2 seconds'") == 0
    wait_until(lambda: count(server, db, "SELECT count(*) FROM alert_inbox") == 0, t(20),
               "the inbox to be empty (pete's acknowledged messages deleted)")
    assert count(server, db, "SELECT count(*) FROM alert_inbox_dead WHERE user_id = 'pete'") == 0
    wait_until(lambda: count(server, db, "SELECT count(*) FROM publish_ids") == 0, t(20),
               "the old publish ids to be deleted")

    s = wait_stats(d.port, lambda s: s["ids_expired"] == 2 and s["dead_letters"] == 3
                   and s["depth"] == 0, "the stats to show the sweep")
    assert RETENTION_KEYS <= set(s), s
    assert s["enabled"] is True and s["retention_seconds"] == 2, s
    assert s["moved_to_dead_letters"] == 3 and s["acked_deleted"] == 2, s
    assert s["sweeps"] >= 1, s
    assert_iso(s["last_sweep"], "last_sweep")
    # The seq numbering is the inbox's: it goes on after the moved messages.
    assert publish(d.port, alert("olga", 9, critical=True))["seq"] == 4
    assert problem_lines(d) == [], problem_lines(d)


def test_first_sweep_at_start_keeps_what_is_younger(dealwire, pg_db):
    # A sweep runs as soon as the daemon starts, not a period later (here a minute, for
    # --inbox-retention 3600). Only what is older than the retention goes; younger messages,
    # acknowledged or not, and younger publish ids stay.
    server, db, url = pg_db
    d = start(dealwire, url)  # applies the schema
    publish(d.port, [alert("rita", n, critical=True) for n in range(4)]
            + [alert("sam", 9, critical=True)])
    d.stop()
    assert count(server, db, "SELECT count(*) FROM alert_inbox") == 5
    server.psql("UPDATE alert_inbox SET created_at = now() - interval '2 hours'"
                " WHERE user_id = 'rita' AND seq <= 3;"
                "UPDATE alert_inbox SET acked_at = now() WHERE user_id = 'rita' AND seq = 3;"
                "UPDATE alert_inbox SET acked_at = now() WHERE user_id = 'sam'", db)
    insert_publish_id(server, db, "old", "2 hours")
    insert_publish_id(server, db, "young", "1 minute")
    old = stored(server, db, "rita")[:2]

    d2 = start(dealwire, url, "--inbox-retention", "3600")
    wait_until(lambda: count(server, db, "SELECT count(*) FROM alert_inbox_dead") == 2, t(20),
               "rita's two old unacknowledged messages in alert_inbox_dead")
    dead = dead_letters(server, db, "rita")
    assert [(s, ty, p) for s, ty, p, _ in dead] == old
    assert {why for *_, why in dead} == {"not acknowledged within 3600 s"}
    wait_until(lambda: count(server, db, "SELECT count(*) FROM publish_ids") == 1, t(20),
               "the old publish id to be deleted")
    assert server.psql("SELECT id FROM publish_ids", db) == [["young"]]
    assert [s for s, _, _ in stored(server, db, "rita")] == [4]
    assert [s for s, _, _ in stored(server, db, "sam")] == [1]

    s = wait_stats(d2.port, lambda s: s["sweeps"] >= 1, "the first sweep in the stats")
    assert s["retention_seconds"] == 3600, s
    assert (s["moved_to_dead_letters"], s["acked_deleted"], s["ids_expired"]) == (2, 1, 1), s
    assert (s["depth"], s["dead_letters"]) == (1, 2), s
    assert_iso(s["last_sweep"], "last_sweep")


def test_daemons_sweeping_one_database_move_each_message_once(dealwire, pg_db):
    # Two daemons sweep the same database at the same time, each in batches of at most 10,000
    # rows: every old message ends up in the dead letters exactly once, every old acknowledged
    # message and publish id is deleted, and the two daemons' counters add up to exactly that.
    server, db, url = pg_db
    daemons = [start(dealwire, url, "--inbox-retention", "2") for _ in range(2)]
    unacked, acked, ids = 25000, 12000, 11000
    server.psql(
        "INSERT INTO alert_inbox (user_id, seq, type, payload, created_at, acked_at)"
        " SELECT 'u' || (g % 50), g, 'notification',"
        "  json_build_object('seq', g, 'type', 'notification'), now() - interval '1 hour',"
        f"  CASE WHEN g > {unacked} THEN now() ELSE NULL END"
        f" FROM generate_series(1, {unacked + acked}) g;"
        "INSERT INTO publish_ids (id, created_at)"
        f" SELECT 'id' || g, now() - interval '1 hour' FROM generate_series(1, {ids}) g", db)

    def totals():
        stats = [inbox_stats(d.port) for d in daemons]
        return tuple(sum(s[k] for s in stats)
                     for k in ("moved_to_dead_letters", "acked_deleted", "ids_expired"))

    wait_until(lambda: totals() == (unacked, acked, ids), t(60),
               f"the daemons' counters to add up to {(unacked, acked, ids)} (got {totals()})")
    assert count(server, db, "SELECT count(*) FROM alert_inbox") == 0
    assert count(server, db, "SELECT count(*) FROM publish_ids") == 0
    assert count(server, db, "SELECT count(*) FROM alert_inbox_dead") == unacked
    assert count(server, db, "SELECT count(DISTINCT (user_id, seq)) FROM alert_inbox_dead"
                 f" WHERE seq <= {unacked}") == unacked
    for d in daemons:
        # Several daemons on one database warn that they share no bus (docs/operations.md).
        bad = [line for line in problem_lines(d) if " warn  leader: " not in line]
        assert bad == [], bad


def test_database_away_sweeps_are_skipped_quietly(dealwire):
    # While the database is down the sweeps are skipped without a warning of their own (the
    # store logs the outage once); once it is back they go on.
    require_postgres()
    server = PgServer(port=free_port()).start()
    try:
        d = start(dealwire, server.url(), "--inbox-retention", "2")
        first = wait_stats(d.port, lambda s: s["sweeps"] >= 1, "a first sweep")["sweeps"]
        server.stop()
        status, body = http_get(d.port, "/api/websocket/users/tom/inbox")
        assert status == 503 and body == {"error": "database unavailable"}, (status, body)
        down = inbox_stats(d.port)["sweeps"]
        server.start()
        wait_stats(d.port, lambda s: s["sweeps"] > down, "a sweep after the outage", 60)
        assert down >= first
        assert not [line for line in d.stderr_text().splitlines()
                    if " retention:" in line and (" warn " in line or " error " in line)], \
            d.stderr_text()
        # The worker's own connection comes back too (after its store's backoff).
        status, body = wait_until(
            lambda: (lambda r: r if r[0] == 200 else None)(
                http_get(d.port, "/api/websocket/users/tom/inbox")),
            t(60), "the inbox page to be answered again")
        assert body["last_seq"] == 0, body
    finally:
        server.remove()


# --------------------------------------------------------------------------------------------
# GET /api/websocket/users/<id>/inbox
# --------------------------------------------------------------------------------------------

def get_inbox(port, user, query="", **kw):
    r = http_request(port, "GET", f"/api/websocket/users/{user}/inbox{query}", **kw)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    return r.status, r.json


def test_inbox_lists_what_a_resuming_client_would_get(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)
    publish(d.port, [alert("quinn", n, critical=True) for n in range(5)]
            + [alert("other", 7, critical=True), alert("quinn", 8)])  # the last: not durable
    rows = stored(server, db, "quinn")

    status, doc = get_inbox(d.port, "quinn")
    assert status == 200, doc
    assert set(doc) == INBOX_KEYS, doc
    assert (doc["user_id"], doc["last_seq"], doc["acked_seq"], doc["first_seq"], doc["after"],
            doc["more"]) == ("quinn", 5, 0, 1, 0, False), doc
    assert [m["seq"] for m in doc["messages"]] == [1, 2, 3, 4, 5]
    for m, (seq, ty, text) in zip(doc["messages"], rows):
        assert set(m) == MESSAGE_KEYS, m
        assert (m["seq"], m["type"], m["acked"]) == (seq, ty, False), m
        assert m["message"] == json.loads(text), (m, text)
        assert_iso(m["created_at"], "created_at")

    # A page: limit, after, and whether there is more.
    status, doc = get_inbox(d.port, "quinn", "?limit=2")
    assert status == 200 and [m["seq"] for m in doc["messages"]] == [1, 2] and doc["more"], doc
    status, doc = get_inbox(d.port, "quinn", "?after=2&limit=2")
    assert [m["seq"] for m in doc["messages"]] == [3, 4] and doc["more"] and doc["after"] == 2
    status, doc = get_inbox(d.port, "quinn", "?limit=2&after=3")
    assert [m["seq"] for m in doc["messages"]] == [4, 5] and not doc["more"], doc
    status, doc = get_inbox(d.port, "quinn", "?after=5")
    assert status == 200 and doc["messages"] == [] and not doc["more"], doc
    status, doc = get_inbox(d.port, "quinn", "?after=99")
    assert status == 200 and doc["messages"] == [] and doc["last_seq"] == 5, doc

    # Acknowledged through 2: a client connecting without last_seq starts after acked_seq.
    server.psql("UPDATE alert_inbox SET acked_at = now() WHERE user_id = 'quinn' AND seq <= 2;"
                "UPDATE alert_inbox_seq SET acked_seq = 2 WHERE user_id = 'quinn'", db)
    status, doc = get_inbox(d.port, "quinn")
    assert (doc["acked_seq"], doc["after"]) == (2, 2), doc
    assert [m["seq"] for m in doc["messages"]] == [3, 4, 5]
    status, doc = get_inbox(d.port, "quinn", "?after=0")
    assert [m["acked"] for m in doc["messages"]] == [True, True, False, False, False], doc

    # What retention removed is no longer held: first_seq says where the history starts.
    server.psql("DELETE FROM alert_inbox WHERE user_id = 'quinn' AND seq <= 3", db)
    status, doc = get_inbox(d.port, "quinn", "?after=0")
    assert doc["first_seq"] == 4 and [m["seq"] for m in doc["messages"]] == [4, 5], doc

    # A user with nothing.
    status, doc = get_inbox(d.port, "nobody")
    assert status == 200, doc
    assert doc == {"user_id": "nobody", "last_seq": 0, "acked_seq": 0, "first_seq": None,
                   "after": 0, "messages": [], "more": False}, doc


def test_inbox_arguments_are_checked(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)
    for query, field in [("?after=-1", "after"), ("?after=abc", "after"), ("?after=", "after"),
                         ("?after=1x", "after"), ("?after=99999999999999999999", "after"),
                         ("?limit=0", "limit"), ("?limit=1001", "limit"), ("?limit=x", "limit"),
                         ("?limit=", "limit"), ("?limit=-5", "limit"),
                         ("?after=1&limit=0", "limit")]:
        status, body = get_inbox(d.port, "quinn", query)
        assert status == 400, (query, status, body)
        assert body["field"] == field and field in body["error"], (query, body)
    for user in ("bad%20id", "a" * 129, "a.b!"):
        status, body = get_inbox(d.port, user)
        assert status == 400 and body["field"] == "user_id", (user, status, body)
    # The largest page, and arguments it does not know, are fine.
    status, body = get_inbox(d.port, "quinn", "?limit=1000&x=1")
    assert status == 200 and body["messages"] == [], body
    r = http_request(d.port, "POST", "/api/websocket/users/quinn/inbox", body="{}")
    assert r.status == 405, r


def test_inbox_needs_the_operator_token(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url, "--api-token", API_TOKEN)
    status, body = get_inbox(d.port, "quinn")
    assert status == 401, (status, body)
    status, body = get_inbox(d.port, "quinn",
                             headers={"Authorization": f"Bearer {API_TOKEN}x"})
    assert status == 401, (status, body)
    status, body = get_inbox(d.port, "quinn", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert status == 200 and body["user_id"] == "quinn", (status, body)


def test_inbox_without_a_database_is_503(dealwire):
    d = dealwire()
    status, body = get_inbox(d.port, "quinn")
    assert status == 503 and body == {"error": "no database"}, (status, body)
    # Its arguments are still checked first, and the user stats endpoint is untouched.
    assert get_inbox(d.port, "quinn", "?limit=0")[0] == 400
    assert http_get(d.port, "/api/websocket/users/quinn")[0] == 404
    s = inbox_stats(d.port)
    assert s["enabled"] is False and RETENTION_KEYS <= set(s), s
    assert (s["depth"], s["dead_letters"], s["last_sweep"]) == (None, None, None), s


def test_inbox_requests_pipelined_are_answered_in_order(dealwire, pg_db):
    # The inbox page is answered by a worker; a request already read behind it waits its turn,
    # and keep-alive goes on.
    server, db, url = pg_db
    d = start(dealwire, url)
    publish(d.port, alert("vera", 1, critical=True))
    payload = (b"GET /api/websocket/users/vera/inbox HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /api/websocket/users/vera/inbox?after=1 HTTP/1.1\r\nHost: x\r\n"
               b"Connection: close\r\n\r\n")
    answers, closed = raw_exchange(d.port, payload)
    assert closed
    assert [s for s, _ in answers] == [200, 200, 200], answers
    assert [m["seq"] for m in answers[0][1]["messages"]] == [1]
    assert answers[1][1]["status"] == "ok"
    assert answers[2][1]["messages"] == [] and answers[2][1]["after"] == 1


def test_inbox_page_is_bounded_in_bytes(dealwire, pg_db):
    # However large the messages, one page stays around 4 MiB: it stops early and says "more".
    server, db, url = pg_db
    d = start(dealwire, url, "--max-publish-size", str(2 * 1024 * 1024))
    big = "x" * (1024 * 1024)
    for n in range(6):
        item = alert("wade", n, critical=True)
        item["message"]["pad"] = big
        publish(d.port, item)
    status, doc = get_inbox(d.port, "wade")
    assert status == 200, doc
    seqs = [m["seq"] for m in doc["messages"]]
    assert 1 <= len(seqs) < 6 and doc["more"], (seqs, doc["more"])
    assert seqs == list(range(1, len(seqs) + 1))
    status, doc = get_inbox(d.port, "wade", f"?after={seqs[-1]}")
    assert doc["messages"][0]["seq"] == seqs[-1] + 1, doc["messages"][:1]
    assert doc["messages"][0]["message"]["pad"] == big
