"""The outbox bound (docs/protocol.md, "Outbox, slow clients and drops"): it counts what the
socket could not take, in messages and in bytes, for every message; a client that keeps up
loses nothing however large the burst; one that takes nothing is held to the bound (critical
messages included: past it, it is closed) and stops counting as a recipient once it closes.
"""

import asyncio
import json
import socket
import time

from conftest import (
    OP_CLOSE, OP_TEXT, RawWS, ServerClosed, aget, apublish, connect_user, http_get, publish, run,
    t, wait_until,
)
from test_metrics import parse, scrape, value


def notification(user, n, pad="", critical=False):
    item = {"target": {"user_id": user},
            "message": {"type": "notification", "message": f"m{n}", "level": "info", "n": n,
                        "pad": pad}}
    if critical:
        item["critical"] = True
    return item


def user_doc(port, user):
    status, doc = http_get(port, f"/api/websocket/users/{user}")
    return doc if status == 200 else None


def read_until_close(raw, limit):
    """Every text frame's n until the close frame: (ns, close code or None at EOF)."""
    ns = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            _, op, payload = raw.recv_frame(timeout=max(deadline - time.monotonic(), 0.01))
        except ServerClosed:
            return ns, None
        if op == OP_TEXT:
            msg = json.loads(payload)
            if msg["type"] == "notification":
                ns.append(msg["n"])
        elif op == OP_CLOSE:
            return ns, int.from_bytes(payload[:2], "big")
    raise AssertionError(f"no close after {len(ns)} messages")


BURST = 5000


def test_a_burst_to_a_reader_that_keeps_up_arrives_whole(dealwire):
    # 5,000 messages of about 400 bytes: 50 times --queue-size and twice --queue-bytes, in one
    # publish batch. A client that reads continuously gets every one, in order.
    d = dealwire("--max-publish-size", str(8 * 1024 * 1024))

    async def main():
        ws, _ = await connect_user(d.port, "fast", max_queue=None)
        batch = [notification("fast", n, pad="p" * 300) for n in range(BURST)]
        answer = await apublish(d.port, batch)
        assert [r["recipients"] for r in answer["results"]] == [1] * BURST
        got = []
        while len(got) < BURST:
            msg = json.loads(await asyncio.wait_for(ws.recv(), t(30)))
            assert msg["type"] == "notification", msg
            got.append(msg["n"])
        assert got == list(range(BURST))
        status, stats = await aget(d.port, "/api/websocket/stats")
        assert stats["message_stats"]["total_dropped"] == 0, stats["message_stats"]
        assert stats["message_stats"]["slow_consumer_closes"] == 0
        await ws.close()

    run(main(), timeout=t(90))


def test_bytes_bound_drops_behind_a_full_socket(dealwire):
    # A count bound that never binds, a byte bound of 64 KiB: a client that never reads, sent
    # 8 KiB messages five to a publish, holds at most 64 KiB beyond what its socket took (plus
    # the batch of the last turn) and loses the oldest, counted. The kernel's send buffer
    # takes the first megabytes (tcp_wmem), so the publisher goes on until drops show.
    bound = 64 * 1024
    batch = 5
    d = dealwire("--queue-size", "100000", "--queue-bytes", str(bound))
    slow = RawWS(d.port, "slow", rcvbuf=4096)
    try:
        assert slow.recv_json()["type"] == "connection_established"
        worst = 0
        for i in range(2000):
            items = [notification("slow", i * batch + k, pad="b" * 8000) for k in range(batch)]
            answer = publish(d.port, items)
            assert [r["recipients"] for r in answer["results"]] == [1] * batch, answer
            doc = user_doc(d.port, "slow")
            worst = max(worst, doc["queue_bytes"])
            assert doc["queue_bytes"] <= bound + batch * 8200, doc
            if doc["messages_dropped"] > 0 and i > 20:
                break
        else:
            raise AssertionError(f"nothing dropped; at most {worst} bytes queued")
        assert worst > bound // 2, f"the bound was never approached ({worst} bytes)"
        assert doc["queue_size"] < 100, doc
        status, stats = http_get(d.port, "/api/websocket/stats")
        assert stats["message_stats"]["total_dropped"] == doc["messages_dropped"]
        assert stats["message_stats"]["slow_consumer_closes"] == 0
        # /metrics has them by type: notifications, all of them
        samples = parse(scrape(d.port))
        assert value(samples, "dealwire_messages_dropped_total", type="notification") == \
            stats["message_stats"]["total_dropped"]
        assert sum(v for (name, labels), v in samples.items()
                   if name == "dealwire_messages_dropped_total") == \
            stats["message_stats"]["total_dropped"]
    finally:
        slow.close()


def test_critical_messages_past_the_bound_close_the_connection(dealwire):
    # The review's client: takes nothing, sent critical 2 KiB messages. Critical messages are
    # never dropped, so past --queue-size the connection is closed as a slow consumer, its
    # queue stays bounded meanwhile, and from then on publishes do not count it.
    d = dealwire("--queue-size", "50")
    slow = RawWS(d.port, "phone", rcvbuf=4096)
    bystander = RawWS(d.port, "other")
    try:
        assert slow.recv_json()["type"] == "connection_established"
        assert bystander.recv_json()["type"] == "connection_established"
        sent = 0
        for n in range(2000):
            answer = publish(d.port, notification("phone", n, pad="c" * 2000, critical=True))
            if answer["recipients"] == 0:
                break
            sent += 1
            doc = user_doc(d.port, "phone")
            if doc is not None:
                # at most the bound and the message of the last turn
                assert doc["queue_size"] <= 51, doc
        else:
            raise AssertionError("the connection was never closed as a slow consumer")
        status, stats = http_get(d.port, "/api/websocket/stats")
        assert stats["message_stats"]["slow_consumer_closes"] == 1, stats["message_stats"]
        assert stats["message_stats"]["total_dropped"] == 0, "a critical message was dropped"
        # Closing: not a recipient, nothing more queued, even while it is still connected.
        for n in range(sent, sent + 5):
            assert publish(d.port, notification("phone", n, critical=True))["recipients"] == 0

        # What it gets when it reads at last: a prefix of what was sent, in order, then 1008.
        ns, code = read_until_close(slow, t(15))
        assert ns == list(range(len(ns))), "out of order or with a gap"
        assert code == 1008, code
        wait_until(lambda: user_doc(d.port, "phone") is None, t(10), "the connection to go")
        status, stats = http_get(d.port, "/api/websocket/stats")
        # Every message that was queued and not delivered is counted as failed.
        assert stats["message_stats"]["total_failed"] >= sent - len(ns), (sent, len(ns), stats)
        # /metrics: by type, each message once (a message of a failed write is not sent)
        samples = parse(scrape(d.port))
        failed = value(samples, "dealwire_messages_failed_total", type="notification")
        sent_here = value(samples, "dealwire_messages_sent_total", type="notification")
        assert failed >= sent - len(ns), (failed, sent, len(ns))
        assert failed + sent_here == sent, (failed, sent_here, sent)

        # The other client was not affected.
        assert publish(d.port, notification("other", 1))["recipients"] == 1
        assert bystander.recv_json()["n"] == 1
    finally:
        slow.close()
        bystander.close()
