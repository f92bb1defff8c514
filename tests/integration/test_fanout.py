"""Delivery: targeting (user, channel, all), large fan-out, and slow consumers."""

import asyncio
import json
import socket
from concurrent.futures import ThreadPoolExecutor

from conftest import (
    OP_CLOSE, OP_TEXT, RawWS, apublish, aget, close_all, connect_user, http_get, recv_json,
    request, run, t, wait_until,
)


async def next_is_marker(ws, marker):
    """The next message must be the marker broadcast (nothing else was delivered before it)."""
    msg = await recv_json(ws)
    assert msg.get("marker") == marker, f"unexpected delivery before the marker: {msg!r}"


# --------------------------------------------------------------------------------------------
# Targeting
# --------------------------------------------------------------------------------------------

def test_channel_publish_reaches_only_subscribers(daemon):
    async def main():
        sub1, _ = await connect_user(daemon.port, "alice")
        sub2, _ = await connect_user(daemon.port, "bob")
        alice2, _ = await connect_user(daemon.port, "alice")   # same user, not subscribed
        other, _ = await connect_user(daemon.port, "carol")    # another channel
        none, _ = await connect_user(daemon.port, "dave")      # no channel
        for ws in (sub1, sub2):
            await request(ws, {"type": "subscribe", "channel": "hot_deals"})
        await request(other, {"type": "subscribe", "channel": "hot_deals_2"})

        answer = await apublish(daemon.port, {"target": {"channel": "hot_deals"},
                                              "message": {"type": "deal_alert", "deal_id": "d1"}})
        assert answer["recipients"] == 2
        for ws in (sub1, sub2):
            msg = await recv_json(ws)
            assert msg["type"] == "deal_alert" and msg["deal_id"] == "d1"
        answer = await apublish(daemon.port, {"target": "all",
                                              "message": {"type": "notification", "marker": 1}})
        assert answer["recipients"] == 5
        for ws in (sub1, sub2, alice2, other, none):
            await next_is_marker(ws, 1)
        await close_all([sub1, sub2, alice2, other, none])

    run(main())


def test_user_publish_reaches_all_connections_of_that_user_only(daemon):
    async def main():
        a1, _ = await connect_user(daemon.port, "alice")
        a2, _ = await connect_user(daemon.port, "alice")
        b, _ = await connect_user(daemon.port, "bob")
        prefix, _ = await connect_user(daemon.port, "alice2")
        answer = await apublish(daemon.port, {"target": {"user_id": "alice"},
                                              "message": {"type": "price_alert", "deal_id": "d9"}})
        assert answer["recipients"] == 2
        for ws in (a1, a2):
            msg = await recv_json(ws)
            assert msg["type"] == "price_alert" and msg["deal_id"] == "d9"
        await apublish(daemon.port, {"target": "all",
                                     "message": {"type": "notification", "marker": 2}})
        for ws in (a1, a2, b, prefix):
            await next_is_marker(ws, 2)
        await close_all([a1, a2, b, prefix])

    run(main())


def test_all_reaches_everyone(daemon):
    async def main():
        conns = [(await connect_user(daemon.port, f"user{i % 3}"))[0] for i in range(6)]
        await request(conns[0], {"type": "subscribe", "channel": "hot_deals"})
        answer = await apublish(daemon.port, {"target": "all",
                                              "message": {"type": "deal_alert", "n": 7}})
        assert answer["recipients"] == 6
        for ws in conns:
            msg = await recv_json(ws)
            assert msg["type"] == "deal_alert" and msg["n"] == 7
        await close_all(conns)

    run(main())


def test_closed_connection_no_longer_receives(daemon):
    async def main():
        a, _ = await connect_user(daemon.port, "alice")
        b, _ = await connect_user(daemon.port, "alice")
        await a.close()
        wait_until(lambda: http_get(daemon.port, "/api/websocket/users/alice")[1]
                   .get("connections") == 1, t(5), "alice to have one connection left")
        answer = await apublish(daemon.port, {"target": {"user_id": "alice"},
                                              "message": {"type": "notification"}})
        assert answer["recipients"] == 1
        assert (await recv_json(b))["type"] == "notification"
        await b.close()

    run(main())


# --------------------------------------------------------------------------------------------
# Fan-out: 1,000 messages from 4 concurrent publishers to 500 connections
# --------------------------------------------------------------------------------------------

N_CLIENTS = 500
N_PRODUCERS = 4
PER_PRODUCER = 250
TOTAL = N_PRODUCERS * PER_PRODUCER


def test_fanout_500_connections_1000_messages(dealwire):
    # The outbox bound is raised so that a momentarily slow *test* client cannot cause a
    # legitimate drop; this test is about exactly-once, in-order fan-out.
    d = dealwire("--queue-size", "2000")

    async def main():
        conns = []
        for start in range(0, N_CLIENTS, 50):
            batch = await asyncio.gather(*(connect_user(d.port, f"fan{i}", max_queue=None)
                                           for i in range(start, start + 50)))
            conns += [ws for ws, _ in batch]
        status, stats = await aget(d.port, "/api/websocket/stats")
        assert stats["active_connections"] == N_CLIENTS

        received = [[[] for _ in range(N_PRODUCERS)] for _ in conns]
        counts = [0] * N_CLIENTS
        unexpected = []

        async def reader(i, ws):
            got = received[i]
            while counts[i] < TOTAL:
                raw = await ws.recv()
                m = json.loads(raw)
                if m.get("type") != "deal_alert":
                    unexpected.append((i, m))
                    continue
                got[m["producer"]].append(m["seq"])
                counts[i] += 1

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(conns)]
        pool = ThreadPoolExecutor(N_PRODUCERS)

        async def producer(p):
            recipients = []
            for seq in range(PER_PRODUCER):
                answer = await apublish(d.port, {
                    "target": "all",
                    "message": {"type": "deal_alert", "producer": p, "seq": seq,
                                "deal_id": f"p{p}-{seq}"},
                }, pool)
                recipients.append(answer["recipients"])
            return recipients

        results = await asyncio.gather(*(producer(p) for p in range(N_PRODUCERS)))
        pool.shutdown()
        assert all(r == N_CLIENTS for rs in results for r in rs), \
            f"recipients per publish: {sorted(set(r for rs in results for r in rs))}"

        done, pending = await asyncio.wait(readers, timeout=t(90))
        for task in done:
            task.result()  # re-raise a reader's exception
        assert not pending, (
            f"{len(pending)} clients did not get all {TOTAL} messages; fewest received: "
            f"{min(counts)}, e.g. client {counts.index(min(counts))}")
        assert unexpected == [], unexpected[:5]
        for i, per_producer in enumerate(received):
            for p in range(N_PRODUCERS):
                assert per_producer[p] == list(range(PER_PRODUCER)), (
                    f"client {i}, producer {p}: not exactly once in order: "
                    f"{per_producer[p][:20]}... ({len(per_producer[p])} messages)")

        # Exactly once: nothing more arrives before the pong on each connection.
        async def rest(ws):
            await ws.send('{"type":"ping"}')
            extra = []
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), t(30)))
                if m.get("type") == "pong":
                    return extra
                extra.append(m)

        extras = await asyncio.gather(*(rest(ws) for ws in conns))
        assert all(e == [] for e in extras), [e for e in extras if e][:3]
        await close_all(conns)

    run(main(), timeout=170)


# --------------------------------------------------------------------------------------------
# Slow consumer
# --------------------------------------------------------------------------------------------

SLOW_TOTAL = 3000
SLOW_BATCH = 50
PAD = "x" * 4096


def test_slow_consumer_is_bounded_and_others_unaffected(dealwire):
    queue_size = 100
    d = dealwire("--queue-size", str(queue_size))

    async def main():
        fast, _ = await connect_user(d.port, "fast", max_queue=None)
        other, _ = await connect_user(d.port, "other", max_queue=None)
        # Completes the handshake, then never reads: its small window fills at once.
        slow = RawWS(d.port, "slow", rcvbuf=4096)
        try:
            wait_until(lambda: http_get(d.port, "/api/websocket/users/slow")[0] == 200, t(5),
                       "the slow client to be registered")
            got = {"fast": [], "other": []}
            progress = asyncio.Event()

            async def read(ws, name):
                while len(got[name]) < SLOW_TOTAL:
                    m = await recv_json(ws, 30)
                    assert m["type"] == "notification", m
                    got[name].append(m["seq"])
                    progress.set()

            readers = [asyncio.create_task(read(fast, "fast")),
                       asyncio.create_task(read(other, "other"))]
            for start in range(0, SLOW_TOTAL, SLOW_BATCH):
                # Pace the publisher on the *normal* clients only, so that they keep up.
                while min(len(v) for v in got.values()) < start - 200:
                    progress.clear()
                    await asyncio.wait_for(progress.wait(), t(30))
                    for r in readers:
                        if r.done():
                            r.result()
                batch = [{"target": "all",
                          "message": {"type": "notification", "seq": seq, "pad": PAD}}
                         for seq in range(start, start + SLOW_BATCH)]
                answer = await apublish(d.port, batch)
                assert len(answer["results"]) == SLOW_BATCH
            await asyncio.wait_for(asyncio.gather(*readers), t(60))
            assert got["fast"] == list(range(SLOW_TOTAL)), "normal client lost or reordered"
            assert got["other"] == list(range(SLOW_TOTAL))

            status, stats = await aget(d.port, "/api/websocket/stats")
            assert stats["message_stats"]["total_dropped"] > 0, stats["message_stats"]
            status, slow_user = await aget(d.port, "/api/websocket/users/slow")
            slow_open = status == 200
            if slow_open:
                assert slow_user["messages_dropped"] > 0, slow_user
                assert slow_user["queue_size"] <= queue_size, slow_user
            for name in ("fast", "other"):
                status, user = await aget(d.port, f"/api/websocket/users/{name}")
                assert status == 200 and user["messages_dropped"] == 0, user

            # Now read what the slow client was sent: a subsequence in order, or a 1008 close.
            seqs, close_payload, eof = drain(slow, SLOW_TOTAL - 1)
            print(f"slow client: open={slow_open} stats={slow_user if slow_open else None} "
                  f"received {len(seqs)} notifications, close={close_payload!r}, eof={eof}; "
                  f"service message_stats={stats['message_stats']}")
            assert seqs == sorted(set(seqs)), "slow client got duplicates or reordering"
            if close_payload is not None:
                assert len(close_payload) >= 2
                code = int.from_bytes(close_payload[:2], "big")
                assert code == 1008, f"slow client closed with {code}, expected 1008"
            elif eof:
                raise AssertionError(
                    f"the slow client was disconnected without a close frame after "
                    f"{len(seqs)} notifications (spec: close code 1008)")
            else:
                assert seqs[-1] == SLOW_TOTAL - 1
                assert len(seqs) < SLOW_TOTAL, "nothing was dropped for the slow client"
                status, user = await aget(d.port, "/api/websocket/users/slow")
                assert status == 200
                assert user["messages_dropped"] == SLOW_TOTAL - len(seqs), (
                    f"slow client: {len(seqs)} delivered + {user['messages_dropped']} dropped "
                    f"!= {SLOW_TOTAL} published")
        finally:
            slow.close()
        await close_all([fast, other])

    run(main(), timeout=150)


def drain(raw, last_seq):
    """Read a raw client's frames until last_seq, a close frame or EOF.
    Returns (notification seqs, close payload or None, eof)."""
    seqs = []
    for _ in range(SLOW_TOTAL + 1000):
        try:
            fin, op, payload = raw.recv_frame(timeout=10)
        except (EOFError, ConnectionResetError):
            return seqs, None, True
        except socket.timeout:
            raise AssertionError(f"slow client stalled after {len(seqs)} messages "
                                 f"(last {seqs[-1:]}) with neither more data nor a close")
        if op == OP_CLOSE:
            return seqs, payload, False
        if op == OP_TEXT:
            m = json.loads(payload)
            if m.get("type") == "notification":
                seqs.append(m["seq"])
                if m["seq"] == last_seq:
                    return seqs, None, False
    raise AssertionError("too many frames")
