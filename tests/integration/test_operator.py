"""The operator API on a user (docs/protocol.md, "Acting on a user"):
POST /api/websocket/users/<id>/disconnect (code, reason, ban_seconds), .../subscribe and
.../unsubscribe ({"channel"}), and GET /api/websocket/users/<id> with each connection's address
and the ban.

Every case drives the real daemon with real clients: a disconnect is seen by the clients as
the close code and reason, a ban as the refused upgrade (403) and the "banned" refusal count, a
server-side subscription as the notice and then the channel's publishes. Each body the API
refuses is a 400 naming the member, and changes nothing. Bans are awaited by polling the API
or lifted (ban_seconds 0), never slept through.
"""

import asyncio
import json

import pytest

from conftest import (
    barrier, close_all, close_code, connect_user, expect_close, handshake_status, http_get,
    http_request, publish, recv_json, recv_until, request, run, t, wait_until,
)

API_TOKEN = "operator-token-0123456789"


def op(port, user, action, body=None, token=None, raw=None):
    """POST /api/websocket/users/<user>/<action> → HTTPResult. body: a dict (JSON) or None
    (no body); raw: bytes sent as they are instead."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    return http_request(port, "POST", f"/api/websocket/users/{user}/{action}", body=data,
                        headers=headers)


async def aop(port, user, action, body=None, token=None):
    """op() from asyncio; asserts 200 and returns the answer."""
    loop = asyncio.get_running_loop()
    r = await loop.run_in_executor(None, lambda: op(port, user, action, body, token))
    assert r.status == 200, (action, body, r)
    return r.json


async def connect_from(port, user, source):
    """connect_user from a given loopback address (127.0.0.x)."""
    return await connect_user(port, user, local_addr=(source, 0))


def security(port, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else None
    r = http_request(port, "GET", "/api/websocket/stats", headers=headers)
    assert r.status == 200, r
    return r.json["security"]


def user_doc(port, user):
    return http_get(port, f"/api/websocket/users/{user}")


# --------------------------------------------------------------------------------------------
# GET: the connections and their addresses
# --------------------------------------------------------------------------------------------

def test_user_document_lists_connections_with_addresses(daemon):
    async def main():
        a1, w1 = await connect_from(daemon.port, "alice", "127.0.0.2")
        a2, w2 = await connect_from(daemon.port, "alice", "127.0.0.3")
        status, doc = user_doc(daemon.port, "alice")
        assert status == 200, doc
        assert doc["connections"] == 2 and doc["banned_until"] is None, doc
        by_id = {c["connection_id"]: c for c in doc["connection_list"]}
        assert set(by_id) == {w1["connection_id"], w2["connection_id"]}, doc
        assert by_id[w1["connection_id"]]["address"] == "127.0.0.2", doc
        assert by_id[w2["connection_id"]]["address"] == "127.0.0.3", doc
        assert all(c["connected_at"].endswith("Z") for c in doc["connection_list"]), doc
        # The connections document gives each one's address too.
        status, conns = http_get(daemon.port, "/api/websocket/connections")
        assert status == 200
        assert {c["connection_id"]: c["address"] for c in conns["connections"]} == {
            w1["connection_id"]: "127.0.0.2", w2["connection_id"]: "127.0.0.3"}, conns
        # A client's own get_stats does not carry the addresses (no-auth: anyone can be alice).
        await a1.send(json.dumps({"type": "get_stats"}))
        stats, _ = await recv_until(a1, lambda m: m.get("type") == "stats")
        assert "connection_list" not in stats["stats"] and "banned_until" not in stats["stats"]
        await close_all([a1, a2])

    run(main())


# --------------------------------------------------------------------------------------------
# disconnect and the ban
# --------------------------------------------------------------------------------------------

def test_disconnect_closes_every_connection_of_the_user_with_code_and_reason(daemon):
    reason = "maintenance \u2014 back soon"  # UTF-8, 3 bytes for the dash

    async def main():
        a1, _ = await connect_user(daemon.port, "alice")
        a2, _ = await connect_user(daemon.port, "alice")
        bob, _ = await connect_user(daemon.port, "bob")
        answer = await aop(daemon.port, "alice", "disconnect", {"code": 4005, "reason": reason})
        assert answer["user_id"] == "alice" and answer["connections"] == 2, answer
        assert answer["code"] == 4005 and answer["reason"] == reason, answer
        assert answer["banned_until"] is None and answer["node"], answer
        assert answer["forwarded"] is False and answer["nodes"] == 0, answer  # no --redis
        for ws in (a1, a2):
            exc, _ = await expect_close(ws)
            assert close_code(exc) == 4005 and exc.rcvd.reason == reason, exc
        assert await barrier(bob) == [], "bob was touched"
        wait_until(lambda: user_doc(daemon.port, "alice")[0] == 404, t(10), "alice gone")
        # No ban: alice comes back at once; no body: the default code and reason.
        a3, _ = await connect_user(daemon.port, "alice")
        answer = await aop(daemon.port, "alice", "disconnect")
        assert answer["connections"] == 1 and answer["code"] == 4003, answer
        exc, _ = await expect_close(a3)
        assert close_code(exc) == 4003, exc
        assert exc.rcvd.reason == "disconnected by the operator", exc
        # A user without connections here: 200, none touched.
        answer = await aop(daemon.port, "nobody", "disconnect", {"code": 1000})
        assert answer["connections"] == 0, answer
        assert await barrier(bob) == []
        await bob.close()

    run(main())


def test_ban_refuses_the_user_until_it_is_lifted(daemon):
    async def main():
        alice, _ = await connect_user(daemon.port, "alice")
        bob, _ = await connect_user(daemon.port, "bob")
        answer = await aop(daemon.port, "alice", "disconnect", {"ban_seconds": 3600})
        assert answer["connections"] == 1 and answer["banned_until"], answer
        exc, _ = await expect_close(alice)
        assert close_code(exc) == 4003, exc
        assert await handshake_status(daemon.port, "alice") == 403
        assert await handshake_status(daemon.port, "alice") == 403
        assert security(daemon.port)["refused"]["banned"] == 2
        # bob is not banned; the user document shows the ban with no connections.
        assert await barrier(bob) == []
        status, doc = user_doc(daemon.port, "alice")
        assert status == 200 and doc["connections"] == 0, doc
        assert doc["connection_list"] == [] and doc["banned_until"] == answer["banned_until"]
        # Lifted: admitted again.
        lifted = await aop(daemon.port, "alice", "disconnect", {"ban_seconds": 0})
        assert lifted["connections"] == 0 and lifted["banned_until"] is None, lifted
        assert user_doc(daemon.port, "alice")[0] == 404
        alice, _ = await connect_user(daemon.port, "alice")
        status, doc = user_doc(daemon.port, "alice")
        assert doc["banned_until"] is None and doc["connections"] == 1, doc
        assert security(daemon.port)["refused"]["banned"] == 2
        await close_all([alice, bob])

    run(main())


def test_ban_of_a_user_not_connected_and_its_expiry(daemon):
    async def main():
        answer = await aop(daemon.port, "carol", "disconnect", {"ban_seconds": 1})
        assert answer["connections"] == 0 and answer["banned_until"], answer
        assert await handshake_status(daemon.port, "carol") == 403
        # A ban ends by itself: the document stops showing it (polled), and carol is let in.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: wait_until(
            lambda: user_doc(daemon.port, "carol")[0] == 404, t(10), "the ban's end"))
        carol, _ = await connect_user(daemon.port, "carol")
        await carol.close()

    run(main())


# --------------------------------------------------------------------------------------------
# subscribe / unsubscribe
# --------------------------------------------------------------------------------------------

def deal(channel, n):
    return {"target": {"channel": channel}, "message": {"type": "deal_alert", "n": n}}


def test_subscribe_and_unsubscribe_every_connection_of_the_user(daemon):
    async def main():
        a1, _ = await connect_user(daemon.port, "alice")
        a2, _ = await connect_user(daemon.port, "alice")
        bob, _ = await connect_user(daemon.port, "bob")
        loop = asyncio.get_running_loop()
        # Before: nobody is in "deals".
        r = await loop.run_in_executor(None, publish, daemon.port, deal("deals", 0))
        assert r["recipients"] == 0, r

        answer = await aop(daemon.port, "alice", "subscribe", {"channel": "deals"})
        assert answer["connections"] == 2 and answer["channel"] == "deals", answer
        assert answer["already_subscribed"] == 0 and answer["refused"] == 0, answer
        for ws in (a1, a2):
            notice = await recv_json(ws)
            assert notice["type"] == "notification" and notice["action"] == "subscribe", notice
            assert notice["channel"] == "deals" and notice["by"] == "server", notice
            assert "by the server" in notice["message"], notice
        r = await loop.run_in_executor(None, publish, daemon.port, deal("deals", 1))
        assert r["recipients"] == 2, r
        for ws in (a1, a2):
            assert (await recv_json(ws))["n"] == 1
        assert await barrier(bob) == [], "bob got alice's channel"
        status, doc = user_doc(daemon.port, "alice")
        assert doc["subscriptions"] == ["deals"], doc

        # Again: nothing changes, no notice.
        answer = await aop(daemon.port, "alice", "subscribe", {"channel": "deals"})
        assert answer["connections"] == 0 and answer["already_subscribed"] == 2, answer

        answer = await aop(daemon.port, "alice", "unsubscribe", {"channel": "deals"})
        assert answer["connections"] == 2 and answer["not_subscribed"] == 0, answer
        for ws in (a1, a2):
            notice = await recv_json(ws)
            assert notice["action"] == "unsubscribe" and notice["by"] == "server", notice
        r = await loop.run_in_executor(None, publish, daemon.port, deal("deals", 2))
        assert r["recipients"] == 0, r
        assert await barrier(a1) == [] and await barrier(a2) == []
        answer = await aop(daemon.port, "alice", "unsubscribe", {"channel": "deals"})
        assert answer["connections"] == 0 and answer["not_subscribed"] == 2, answer
        # A user without connections here: 200, none touched.
        answer = await aop(daemon.port, "nobody", "subscribe", {"channel": "deals"})
        assert answer["connections"] == 0 and answer["already_subscribed"] == 0, answer
        await close_all([a1, a2, bob])

    run(main())


def test_subscribe_keeps_max_subscriptions(dealwire):
    d = dealwire("--max-subscriptions", "1")

    async def main():
        full, _ = await connect_user(d.port, "alice")
        free, _ = await connect_user(d.port, "alice")
        assert (await request(full, {"type": "subscribe", "channel": "mine"}))["action"] == \
            "subscribe"
        answer = await aop(d.port, "alice", "subscribe", {"channel": "deals"})
        assert answer["connections"] == 1 and answer["refused"] == 1, answer
        assert (await recv_json(free))["channel"] == "deals"
        assert await barrier(full) == [], "the full connection was told something"
        r = await asyncio.get_running_loop().run_in_executor(None, publish, d.port,
                                                             deal("deals", 1))
        assert r["recipients"] == 1, r
        assert (await recv_json(free))["n"] == 1
        await close_all([full, free])

    run(main())


def test_operator_may_subscribe_a_user_to_a_private_channel(daemon):
    """The operator is trusted: another user's channel and private-* are allowed, which a
    client's own subscribe is refused (docs/security.md)."""
    async def main():
        alice, _ = await connect_user(daemon.port, "alice")
        refused = await request(alice, {"type": "subscribe", "channel": "user:bob"})
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        for channel in ("user:bob", "private-ops"):
            answer = await aop(daemon.port, "alice", "subscribe", {"channel": channel})
            assert answer["connections"] == 1, answer
            assert (await recv_json(alice))["channel"] == channel
        r = await asyncio.get_running_loop().run_in_executor(
            None, publish, daemon.port, deal("private-ops", 7))
        assert r["recipients"] == 1 and (await recv_json(alice))["n"] == 7
        await alice.close()

    run(main())


# --------------------------------------------------------------------------------------------
# The operator token, and what the API refuses
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action, body", [
    ("disconnect", {"ban_seconds": 60}),
    ("disconnect", None),
    ("subscribe", {"channel": "deals"}),
    ("unsubscribe", {"channel": "deals"}),
])
def test_operator_token_is_required(dealwire, action, body):
    d = dealwire("--api-token", API_TOKEN)

    async def main():
        alice, _ = await connect_user(d.port, "alice")
        if action == "unsubscribe":
            await request(alice, {"type": "subscribe", "channel": "deals"})
        loop = asyncio.get_running_loop()
        for token in (None, "wrong-token-0123456789", API_TOKEN + "x"):
            r = await loop.run_in_executor(None, lambda: op(d.port, "alice", action, body, token))
            assert r.status == 401 and "error" in r.json, r
            assert r.headers.get("www-authenticate", "").startswith("Bearer"), r
        assert await barrier(alice) == [], "a refused request acted"
        assert await handshake_status(d.port, "alice") == 101, "a refused request banned"
        assert security(d.port, API_TOKEN)["refused"]["api_auth"] == 3
        answer = await aop(d.port, "alice", action, body, API_TOKEN)
        assert answer["connections"] == 1, answer
        await alice.close()

    run(main())


BAD = [
    ("disconnect", {"code": 999}, "code"),
    ("disconnect", {"code": 1001}, "code"),
    ("disconnect", {"code": 3000}, "code"),
    ("disconnect", {"code": 3999}, "code"),
    ("disconnect", {"code": 5000}, "code"),
    ("disconnect", {"code": "4003"}, "code"),
    ("disconnect", {"code": 4003.5}, "code"),
    ("disconnect", {"code": True}, "code"),
    ("disconnect", {"reason": "x" * 124}, "reason"),
    ("disconnect", {"reason": "\u00e9" * 62}, "reason"),  # 124 bytes of UTF-8
    ("disconnect", {"reason": 5}, "reason"),
    ("disconnect", {"reason": "a\u0000b"}, "reason"),
    ("disconnect", {"ban_seconds": -1}, "ban_seconds"),
    ("disconnect", {"ban_seconds": 2592001}, "ban_seconds"),
    ("disconnect", {"ban_seconds": 1.5}, "ban_seconds"),
    ("disconnect", {"ban_seconds": "60"}, "ban_seconds"),
    ("disconnect", {"ban_seconds": None}, "ban_seconds"),
    ("disconnect", {"code": 4003, "bann_seconds": 60}, "bann_seconds"),
    ("subscribe", None, None),
    ("subscribe", {}, "channel"),
    ("subscribe", {"channel": "bad channel"}, "channel"),
    ("subscribe", {"channel": "c" * 65}, "channel"),
    ("subscribe", {"channel": ""}, "channel"),
    ("subscribe", {"channel": 5}, "channel"),
    ("subscribe", {"channel": "deals", "user": "bob"}, "user"),
    ("unsubscribe", {"channel": "bad/channel"}, "channel"),
    ("unsubscribe", {"channels": ["deals"]}, "channels"),
]


@pytest.mark.parametrize("action, body, field", BAD)
def test_invalid_body_is_400_and_changes_nothing(daemon, action, body, field):
    async def main():
        alice, _ = await connect_user(daemon.port, "alice")
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(None, lambda: op(daemon.port, "alice", action, body))
        assert r.status == 400, r
        assert r.json is not None and r.json["error"], r
        assert r.json.get("field") == field, r.json
        assert await barrier(alice) == [], "a refused request acted"
        status, doc = user_doc(daemon.port, "alice")
        assert doc["subscriptions"] == [] and doc["banned_until"] is None, doc
        await alice.close()

    run(main())


@pytest.mark.parametrize("raw, status, field", [
    (b"[]", 400, None),
    (b'"disconnect"', 400, None),
    (b"{", 400, None),
    (b'{"reason":"a\x01b"}', 400, "reason"),
    (b'{"code":4003}x', 400, None),
    (b'{"reason":"' + b"x" * 1100 + b'"}', 413, None),
])
def test_body_that_is_not_one_small_object_is_refused(daemon, raw, status, field):
    async def main():
        alice, _ = await connect_user(daemon.port, "alice")
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(None, lambda: op(daemon.port, "alice", "disconnect",
                                                        raw=raw))
        assert r.status == status, r
        assert r.json.get("field") == field, r.json
        assert await barrier(alice) == [], "a refused request acted"
        await alice.close()

    run(main())


def test_paths(daemon):
    async def main():
        alice, _ = await connect_user(daemon.port, "alice")
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(None, lambda: op(daemon.port, "bad$id", "disconnect"))
        assert r.status == 400 and r.json["field"] == "user_id", r
        r = await loop.run_in_executor(None, lambda: op(daemon.port, "alice", "kick"))
        assert r.status == 405, r
        r = await loop.run_in_executor(
            None, lambda: http_request(daemon.port, "GET", "/api/websocket/users/alice/disconnect"))
        assert r.status == 405 and r.headers.get("allow") == "POST", r
        assert await barrier(alice) == []
        await alice.close()

    run(main())


def test_pipelined_operator_requests_are_answered_in_order(daemon):
    """Answered on the I/O thread as each body completes: requests pipelined in one write get
    their answers one after another, in order, the last on a kept-alive connection."""
    sub, ban = b'{"channel":"deals"}', b'{"ban_seconds":3600}'

    def post(action, body):
        return (f"POST /api/websocket/users/alice/{action} HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def main():
        alice, _ = await connect_user(daemon.port, "alice")
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(post("subscribe", sub) + post("disconnect", ban) + post("disconnect", b"")
                     + b"GET /api/websocket/users/alice HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = []
        for _ in range(4):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), t(10))
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            answers.append((int(head.split()[1]),
                            json.loads(await reader.readexactly(length))))
        writer.close()
        assert [s for s, _ in answers] == [200, 200, 200, 200], answers
        assert answers[0][1]["channel"] == "deals" and answers[0][1]["connections"] == 1
        assert answers[1][1]["connections"] == 1 and answers[1][1]["banned_until"]
        # The first disconnect started the close: the second finds nothing open.
        assert answers[2][1]["connections"] == 0, answers[2]
        assert answers[3][1]["banned_until"] == answers[1][1]["banned_until"], answers[3]
        assert (await recv_json(alice))["by"] == "server"
        exc, _ = await expect_close(alice)
        assert close_code(exc) == 4003

    run(main())
