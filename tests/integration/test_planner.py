"""The trip planner, POST /api/ai/trip/plan, against a real private PostgreSQL (scripts/pg.sh)
and real WebSocket clients: the success path (the exact trip_update sequence a client of the
user receives, the HTTP answer, the stored plan), the failure path (a budget too small), a 400
naming each bad field, hostile strings in the request and in the data, no database and a
database that is down (503), and the I/O thread serving pings while a plan waits on a lock.
"""

import asyncio
import re
import subprocess
import threading
import time

from conftest import close_all, connect_user, http_get, http_post, recv_json, request, run, t
from conftest_pg import PgServer, pg_db, postgres, require_postgres  # noqa: F401

SCHEMA_RE = re.compile(r" migrate: schema (at version \d+:|up to date at version \d+$)")
PLAN = "/api/ai/trip/plan"

DATA = """
INSERT INTO flights (id, origin, destination, depart_at, arrive_at, price, airline, stops,
                     seats_left) VALUES
 ('o-direct', 'NYC', 'PAR', '2030-06-10 09:00', '2030-06-10 17:00', 400, 'Aerolux', 0, 9),
 ('o-1stop',  'NYC', 'PAR', '2030-06-10 10:00', '2030-06-10 21:00', 300, 'Bluejet', 1, 9),
 ('o-2stop',  'NYC', 'PAR', '2030-06-10 11:00', '2030-06-11 03:00', 250, 'Sunline', 2, 9),
 ('o-full',   'NYC', 'PAR', '2030-06-10 12:00', '2030-06-10 20:00', 10,  'Fullair', 0, 1),
 ('o-otherday','NYC','PAR', '2030-06-11 09:00', '2030-06-11 17:00', 5,   'Aerolux', 0, 9),
 ('r-direct', 'PAR', 'NYC', '2030-06-17 09:00', '2030-06-17 17:00', 380, 'Aerolux', 0, 9),
 ('r-1stop',  'PAR', 'NYC', '2030-06-17 10:00', '2030-06-17 21:00', 280, 'Bluejet', 1, 9);
INSERT INTO hotels (id, city, name, price_per_night, rating, rooms_left) VALUES
 ('h-grand',  'PAR', 'Grand Hotel Paris', 200, 4.5, 10),
 ('h-budget', 'PAR', 'Budget Inn "quoted''); DROP TABLE hotels;--', 80, 3.0, 10),
 ('h-sold',   'PAR', 'Sold Out Palace', 1, 5.0, 0),
 ('h-rome',   'ROM', 'Roma Inn', 50, 4.0, 10);
"""

GOOD = {"user_id": "alice", "origin": "NYC", "destination": "PAR",
        "depart_date": "2030-06-10", "return_date": "2030-06-17", "budget": 3000,
        "travelers": 2, "preferences": {"max_stops": 1, "min_hotel_rating": 4}}


def start(dealwire, url, extra=()):
    d = dealwire("--db", url, "--log-level", "debug", *extra)
    deadline = time.monotonic() + t(30)
    while not SCHEMA_RE.search(d.stderr_text()):
        assert time.monotonic() < deadline, "schema never ready"
        time.sleep(0.05)
    return d


def with_data(dealwire, pg_db):
    server, db, url = pg_db
    d = start(dealwire, url)
    server.psql(DATA, db)
    return server, db, d


async def plan_with_updates(port, user_id, body, until=("completed", "failed")):
    """POST body while user_id is connected; returns (status, answer, [trip_update])."""
    ws, _ = await connect_user(port, user_id)
    loop = asyncio.get_running_loop()
    post = loop.run_in_executor(None, http_post, port, PLAN, body)
    updates = []
    try:
        while True:
            msg = await recv_json(ws, 20)
            if msg.get("type") != "trip_update":
                continue
            updates.append(msg)
            if msg["status"] in until:
                break
        status, answer = await post
    finally:
        await close_all([ws])
    return status, answer, updates


def test_plan_success_sends_each_update_and_answers_the_plan(dealwire, pg_db):
    server, db, d = with_data(dealwire, pg_db)
    status, answer, updates = run(plan_with_updates(d.port, "alice", GOOD))

    assert status == 200, answer
    assert answer["status"] == "completed"
    assert answer["plan_id"]
    options = answer["options"]
    assert 1 <= len(options) <= 5
    # 3 usable outbound (o-full lacks seats for 2, o-otherday is another day) × 2 inbound × 2
    # hotels with rooms = 12 combinations, all within 3000: the best five are kept.
    assert len(options) == 5
    scores = [o["fit_score"] for o in options]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores)
    best = options[0]
    assert answer["total_cost"] == best["total_cost"]
    assert answer["fit_score"] == best["fit_score"]
    for o in options:
        flights = o["flights"]
        assert [f["origin"] for f in flights] == ["NYC", "PAR"]
        assert flights[0]["depart_at"].startswith("2030-06-1")
        hotel = o["hotel"]
        assert hotel["nights"] == 7 and hotel["rooms"] == 1
        expect = (sum(f["price"] for f in flights) * 2 + hotel["price_per_night"] * 7)
        assert abs(o["total_cost"] - expect) < 0.01
        assert o["total_cost"] <= 3000
        assert hotel["id"] != "h-sold"
        assert all(f["id"] not in ("o-full", "o-otherday") for f in flights)
    # The preference (4 stars, at most 1 stop) favours the Grand and no 2-stop flight.
    assert best["hotel"]["id"] == "h-grand"
    assert all(f["stops"] <= 1 for f in best["flights"])
    assert isinstance(answer["explanation"], str) and "NYC" in answer["explanation"]
    assert f"{best['total_cost']:.2f}" in answer["explanation"]

    seq = [(u["status"], u["progress"], u["message"]) for u in updates]
    assert seq == [
        ("started", 0, "Searching for the best trip options..."),
        ("searching", 30, "Analyzing flights and hotels..."),
        ("results_found", 60, "Found 5 trip options!"),
        ("generating_explanation", 80, "Creating personalized recommendation..."),
        ("completed", 100, "Trip plan ready!"),
    ]
    assert updates[2]["extra_data"] == {"count": 5}
    assert updates[4]["extra_data"] == {"plan_id": answer["plan_id"],
                                        "total_cost": answer["total_cost"],
                                        "fit_score": answer["fit_score"]}
    for u in updates:
        assert u["type"] == "trip_update" and "timestamp" in u

    row = server.psql(f"SELECT user_id, request->>'origin', result->'options'->0->>'total_cost',"
                      f" total_cost, fit_score FROM trip_plans WHERE id = {int(answer['plan_id'])}",
                      db)
    assert row[0][0] == "alice" and row[0][1] == "NYC"
    assert float(row[0][3]) == answer["total_cost"]
    assert abs(float(row[0][4]) - answer["fit_score"]) < 0.005


def test_one_way_and_no_connection(dealwire, pg_db):
    server, db, d = with_data(dealwire, pg_db)
    body = dict(GOOD, user_id="nobody-here", travelers=3)
    del body["return_date"]
    del body["preferences"]
    status, answer = http_post(d.port, PLAN, body)
    assert status == 200 and answer["status"] == "completed", answer
    for o in answer["options"]:
        assert len(o["flights"]) == 1
        assert o["hotel"]["nights"] == 1 and o["hotel"]["rooms"] == 2
        expect = o["flights"][0]["price"] * 3 + o["hotel"]["price_per_night"] * 2
        assert abs(o["total_cost"] - expect) < 0.01


def test_budget_too_small_fails_with_the_failed_update(dealwire, pg_db):
    server, db, d = with_data(dealwire, pg_db)
    body = dict(GOOD, budget=100)
    status, answer, updates = run(plan_with_updates(d.port, "alice", body))
    assert status == 200, answer
    assert answer["status"] == "failed"
    assert "budget" in answer["reason"] and "options" not in answer
    seq = [(u["status"], u["progress"]) for u in updates]
    assert seq == [("started", 0), ("searching", 30), ("failed", 100)]
    assert updates[-1]["message"] == answer["reason"]
    assert server.value(f"SELECT result->>'status' FROM trip_plans"
                        f" WHERE id = {int(answer['plan_id'])}", db) == "failed"

    # A route with no flights fails the same way, with its own reason.
    status, answer = http_post(d.port, PLAN, dict(GOOD, destination="TYO"))
    assert status == 200 and answer["status"] == "failed"
    assert "No flights" in answer["reason"]


BAD = [
    ({"user_id": None}, "user_id"),
    ({"user_id": 7}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"origin": "nyc"}, "origin"),
    ({"origin": "NYCX"}, "origin"),
    ({"origin": None}, "origin"),
    ({"destination": 12}, "destination"),
    ({"destination": "NYC"}, "destination"),
    ({"depart_date": "2030-02-30"}, "depart_date"),
    ({"depart_date": "10/06/2030"}, "depart_date"),
    ({"depart_date": None}, "depart_date"),
    ({"return_date": "2030-06-09"}, "return_date"),
    ({"return_date": "tomorrow"}, "return_date"),
    ({"budget": 0}, "budget"),
    ({"budget": -5}, "budget"),
    ({"budget": "3000"}, "budget"),
    ({"budget": None}, "budget"),
    ({"travelers": 0}, "travelers"),
    ({"travelers": 10}, "travelers"),
    ({"travelers": 2.5}, "travelers"),
    ({"travelers": None}, "travelers"),
    ({"preferences": "cheap"}, "preferences"),
    ({"preferences": {"max_stops": -1}}, "preferences.max_stops"),
    ({"preferences": {"min_hotel_rating": 7}}, "preferences.min_hotel_rating"),
]


def body_with(change):
    body = dict(GOOD)
    for k, v in change.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


def test_each_bad_field_is_a_400_naming_it(dealwire, pg_db):
    server, db, d = with_data(dealwire, pg_db)
    for change, field in BAD:
        status, answer = http_post(d.port, PLAN, body_with(change))
        assert status == 400, (change, answer)
        assert answer["field"] == field, (change, answer)
        assert answer["error"]
    status, answer = http_post(d.port, PLAN, b"{not json")
    assert status == 400 and "error" in answer
    status, answer = http_post(d.port, PLAN, [GOOD])
    assert status == 400
    status, _ = http_get(d.port, PLAN)
    assert status == 405
    assert server.value("SELECT count(*) FROM trip_plans", db) == "0"


INJECTIONS = ["NYC'; DROP TABLE flights;--", "' OR 1=1 --", "PAR\"", "N'C", "$1", "NYC\u0000"]


def test_injection_strings_are_refused_or_data(dealwire, pg_db):
    server, db, d = with_data(dealwire, pg_db)
    for s in INJECTIONS:
        for field in ("origin", "destination", "user_id"):
            status, answer = http_post(d.port, PLAN, dict(GOOD, **{field: s}))
            assert status == 400 and answer["field"] == field, (field, s, answer)
    # Data is data: a hotel name with quotes and SQL in it comes back verbatim, and a
    # hostile string in a field the planner does not read is stored as received.
    body = dict(GOOD, budget=2500, note="'); DROP TABLE trip_plans;--",
                preferences={"max_stops": 2, "min_hotel_rating": 0})
    status, answer = http_post(d.port, PLAN, body)
    assert status == 200 and answer["status"] == "completed", answer
    names = {o["hotel"]["name"] for o in answer["options"]}
    assert "Budget Inn \"quoted'); DROP TABLE hotels;--" in names
    assert server.value(f"SELECT request->>'note' FROM trip_plans"
                        f" WHERE id = {int(answer['plan_id'])}", db) == body["note"]
    assert server.value("SELECT count(*) FROM flights", db) == "7"
    assert server.value("SELECT count(*) FROM hotels", db) == "4"


def test_io_thread_serves_while_a_plan_waits(dealwire, pg_db):
    server, db, d = with_data(dealwire, pg_db)
    # Hold a lock the plan's search needs, so that the plan waits on a worker.
    holder = subprocess.Popen(
        [server.psql_bin, "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-d", db,
         "-X", "-q", "-c", "BEGIN; LOCK TABLE flights IN ACCESS EXCLUSIVE MODE;"
         " SELECT pg_sleep(3); COMMIT;"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + t(10)
        while server.value("SELECT count(*) FROM pg_locks WHERE relation = 'flights'::regclass"
                           " AND mode = 'AccessExclusiveLock' AND granted", db) == "0":
            assert time.monotonic() < deadline, "the lock was never taken"
            time.sleep(0.05)

        async def scenario():
            ws, _ = await connect_user(d.port, "bob")
            loop = asyncio.get_running_loop()
            result = {}

            def post():
                result["answer"] = http_post(d.port, PLAN, dict(GOOD, user_id="carol"))
                result["done_at"] = time.monotonic()

            th = threading.Thread(target=post)
            th.start()
            await asyncio.sleep(0.3)
            began = time.monotonic()
            pong = await request(ws, {"type": "ping"})
            assert pong["type"] == "pong"
            status, health = await loop.run_in_executor(None, http_get, d.port, "/healthz")
            assert status == 200 and health["status"] == "ok"
            answered = time.monotonic()
            assert "answer" not in result, "the plan finished before the lock was released"
            await loop.run_in_executor(None, th.join, t(30))
            await close_all([ws])
            return began, answered, result

        began, answered, result = run(scenario())
        assert answered - began < 1.0
        status, answer = result["answer"]
        assert status == 200 and answer["status"] == "completed", answer
        assert result["done_at"] > answered
    finally:
        holder.wait(timeout=t(30))


def test_without_database_is_503(dealwire):
    d = dealwire()
    status, answer = http_post(d.port, PLAN, GOOD)
    assert status == 503 and answer == {"error": "no database"}
    status, answer = http_post(d.port, PLAN, dict(GOOD, budget=0))
    assert status == 400 and answer["field"] == "budget"


def test_database_down_is_503(dealwire):
    require_postgres()
    pg = PgServer().start()
    try:
        pg.create_db()
        pg.psql("CREATE DATABASE planner_down", db="postgres")
        # More than one worker: a monitor round may hold one while the database is down.
        d = start(dealwire, pg.url("planner_down"), ("--workers", "4"))
        pg.stop()
        status, answer = http_post(d.port, PLAN, GOOD)
        assert status == 503 and answer["error"] == "database unavailable", answer
    finally:
        pg.remove()
