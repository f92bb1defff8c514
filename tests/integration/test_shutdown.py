"""Graceful shutdown: SIGTERM/SIGINT close every client with 1001 after flushing what was
accepted, within --shutdown-timeout, and the process exits 0."""

import asyncio
import http.client
import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import websockets.exceptions

from conftest import (
    RawWS, apublish, close_code, connect_user, expect_close, http_get, recv_json, run, t,
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
WINDOW = 200


def test_graceful_shutdown_under_load(dealwire):
    d = dealwire("--queue-size", "10000", "--shutdown-timeout", str(t(5000)))

    async def main():
        conns = []
        for start in range(0, N_CLIENTS, 25):
            batch = await asyncio.gather(*(connect_user(d.port, f"load{i}", max_queue=None)
                                           for i in range(start, start + 25)))
            conns += [ws for ws, _ in batch]

        seqs = [[] for _ in conns]
        closes = [None] * len(conns)
        progress = asyncio.Event()

        async def reader(i, ws):
            try:
                for _ in range(10 ** 7):
                    m = json.loads(await ws.recv())
                    assert m["type"] == "notification", m
                    seqs[i].append(m["seq"])
                    progress.set()
            except websockets.exceptions.ConnectionClosed as exc:
                closes[i] = exc

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(conns)]

        acked_full = []      # seqs answered 200 with every client as a recipient
        stop = asyncio.Event()
        pool = ThreadPoolExecutor(2)

        async def publisher():
            for seq in range(10 ** 6):
                # Keep within WINDOW of the slowest reader so no outbox overflows.
                while not stop.is_set() and min(len(s) for s in seqs) < seq - WINDOW:
                    progress.clear()
                    try:
                        await asyncio.wait_for(progress.wait(), t(10))
                    except asyncio.TimeoutError:
                        break
                if stop.is_set() and seq > (acked_full[-1] if acked_full else 0) + 5000:
                    return
                try:
                    answer = await apublish(d.port, {
                        "target": "all",
                        "message": {"type": "notification", "seq": seq, "pad": "p" * 200},
                    }, pool)
                except (OSError, http.client.HTTPException, AssertionError):
                    return  # the daemon stopped answering: expected during shutdown
                if answer["recipients"] == N_CLIENTS:
                    acked_full.append(seq)

        pub = asyncio.create_task(publisher())
        # Let the load run until every client has received a good share of messages.
        for _ in range(10 ** 5):
            if min(len(s) for s in seqs) >= 300:
                break
            progress.clear()
            await asyncio.wait_for(progress.wait(), t(10))
            assert not pub.done(), "publisher stopped before the shutdown"
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*readers), t(20))
        await asyncio.wait_for(pub, t(20))
        pool.shutdown()
        rc = await asyncio.get_running_loop().run_in_executor(None, d.wait, t(20))
        elapsed = time.monotonic() - t0
        assert rc == 0, f"exit code {rc}"
        codes = [close_code(c) if c else None for c in closes]
        assert codes == [1001] * N_CLIENTS, sorted(set(map(str, codes)))
        last_acked = acked_full[-1]
        for i, s in enumerate(seqs):
            assert s == list(range(len(s))), f"client {i}: gaps or reordering"
            assert len(s) > last_acked, (
                f"client {i} got seqs up to {len(s) - 1}, but seq {last_acked} was accepted "
                "for every client before the shutdown and never delivered")
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
