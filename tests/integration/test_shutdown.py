"""Graceful shutdown: SIGTERM/SIGINT close every client with 1001 after flushing what was
accepted, within --shutdown-timeout, and the process exits 0."""

import asyncio
import http.client
import json
import signal
import threading
import time

import pytest
import websockets.exceptions

from conftest import (
    RawWS, apublish, close_code, connect_user, expect_close, http_get, http_post, recv_json,
    run, t,
    wait_until,
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_clients_with_1001_and_exits_0(dealwire, sig):
    d = dealwire()

    async def main():
        conns = [(await connect_user(d.port, f"user{i % 4}"))[0] for i in range(10)]
        d.send_signal(sig)
        results = await asyncio.gather(*(expect_close(ws) for ws in conns))
        codes = [close_code(exc) for exc, _ in results]
        assert codes == [1001] * len(conns), codes
        rc = await asyncio.get_running_loop().run_in_executor(None, d.wait, t(10))
        assert rc == 0, f"exit code {rc}"

    run(main())


def test_shutdown_without_clients_exits_0(dealwire):
    d = dealwire()
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    assert d.wait(t(10)) == 0
    assert time.monotonic() - t0 < t(5)


N_CLIENTS = 100
BATCH = 100            # messages per publish request
MAX_PUBLISHED = 8000   # < --queue-size, so no outbox can overflow and nothing may be lost
SIGNAL_AFTER = 2000    # messages accepted before SIGTERM


def test_graceful_shutdown_under_load(dealwire):
    d = dealwire("--queue-size", "10000", "--shutdown-timeout", str(t(5000)))

    async def main():
        loop = asyncio.get_running_loop()
        conns = []
        for start in range(0, N_CLIENTS, 25):
            batch = await asyncio.gather(*(connect_user(d.port, f"load{i}", max_queue=None)
                                           for i in range(start, start + 25)))
            conns += [ws for ws, _ in batch]

        seqs = [[] for _ in conns]
        closes = [None] * len(conns)

        async def reader(i, ws):
            try:
                for _ in range(10 ** 7):
                    m = json.loads(await ws.recv())
                    assert m["type"] == "notification", m
                    seqs[i].append(m["seq"])
            except websockets.exceptions.ConnectionClosed as exc:
                closes[i] = exc

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(conns)]

        # The publisher is a thread, so it keeps publishing while this loop is busy reading:
        # the clients fall behind and the shutdown has queued messages to flush.
        acked_full = [-1]    # highest seq answered 200 with every client as a recipient
        enough = asyncio.Event()
        stop = threading.Event()
        errors = []

        def publisher():
            for first in range(0, MAX_PUBLISHED, BATCH):
                try:
                    status, answer = http_post(d.port, "/api/publish", [
                        {"target": "all",
                         "message": {"type": "notification", "seq": seq, "pad": "p" * 200}}
                        for seq in range(first, first + BATCH)])
                except (OSError, http.client.HTTPException):
                    if not stop.is_set():
                        errors.append(f"publish failed before the shutdown at seq {first}")
                    return  # the daemon stopped answering: expected during shutdown
                if status != 200:
                    if not stop.is_set():
                        errors.append(f"publish answered {status} {answer!r}")
                    return
                if all(r["recipients"] == N_CLIENTS for r in answer["results"]):
                    acked_full[0] = first + BATCH - 1
                if acked_full[0] >= SIGNAL_AFTER:
                    loop.call_soon_threadsafe(enough.set)

        pub = threading.Thread(target=publisher, daemon=True)
        pub.start()
        try:
            await asyncio.wait_for(enough.wait(), t(30))
        finally:
            assert not errors, errors
        lag = acked_full[0] + 1 - min(len(s) for s in seqs)
        t0 = time.monotonic()
        stop.set()
        d.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*readers), t(20))
        rc = await loop.run_in_executor(None, d.wait, t(20))
        elapsed = time.monotonic() - t0
        await loop.run_in_executor(None, pub.join, t(20))
        assert not pub.is_alive(), "publisher thread did not finish"
        assert not errors, errors
        last_acked = acked_full[0]
        print(f"SIGTERM with the slowest client {lag} messages behind; exit after "
              f"{elapsed:.2f}s; last seq accepted for all: {last_acked}; received per client: "
              f"min {min(map(len, seqs))} max {max(map(len, seqs))}")
        assert rc == 0, f"exit code {rc}"
        codes = [close_code(c) if c else None for c in closes]
        assert codes == [1001] * N_CLIENTS, sorted(set(map(str, codes)))
        for i, s in enumerate(seqs):
            assert s == list(range(len(s))), f"client {i}: gaps or reordering"
            assert len(s) > last_acked, (
                f"client {i} got seqs up to {len(s) - 1}, but seq {last_acked} was accepted "
                "for every client and never delivered before the close")
        assert elapsed < t(5) + t(10), f"shutdown took {elapsed:.1f}s"

    run(main(), timeout=120)


def test_shutdown_timeout_bounds_a_stuck_client(dealwire):
    """A client that never reads cannot hold the shutdown past --shutdown-timeout."""
    # A large outbox bound, so the stuck client's messages wait in its outbox (no drops, no
    # overflow close) and the shutdown really has something it cannot flush.
    d = dealwire("--shutdown-timeout", "1000", "--queue-size", "5000")

    async def main():
        normal, _ = await connect_user(d.port, "normal", max_queue=None)
        stuck = RawWS(d.port, "stuck", rcvbuf=4096)
        try:
            wait_until(lambda: http_get(d.port, "/api/websocket/users/stuck")[0] == 200, t(5),
                       "the stuck client to be registered")
            pad = "x" * 4096
            for start in range(0, 2000, 50):  # 8 MB: more than the kernel buffers hold
                await apublish(d.port, [{"target": "all", "message": {
                    "type": "notification", "seq": s, "pad": pad}}
                    for s in range(start, start + 50)])
                for s in range(start, start + 50):
                    assert (await recv_json(normal, 10))["seq"] == s
            t0 = time.monotonic()
            d.send_signal(signal.SIGTERM)
            exc, _ = await expect_close(normal)
            assert close_code(exc) == 1001
            rc = await asyncio.get_running_loop().run_in_executor(None, d.wait, t(10))
            elapsed = time.monotonic() - t0
            assert rc == 0, f"exit code {rc}"
            assert elapsed < 1.0 + t(3), f"exit took {elapsed:.1f}s with --shutdown-timeout 1000"
        finally:
            stuck.close()

    run(main())


def test_port_is_released_after_exit(dealwire):
    """After exit the port is closed (nothing lingers)."""
    d = dealwire()
    port = d.port
    d.send_signal(signal.SIGTERM)
    assert d.wait(t(10)) == 0
    with pytest.raises(OSError):
        http_get(port, "/healthz", timeout=t(2))
