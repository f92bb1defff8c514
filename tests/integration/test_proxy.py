"""The client's address behind a load balancer or proxy (--trusted-proxies,
docs/security.md "Behind a proxy"): from a trusted peer the daemon takes it from a PROXY
header (v1, v2) or from X-Forwarded-For's last address, and from anyone else from neither.
The address is what /api/websocket/connections shows and what --max-connections-per-ip
counts. With the real HAProxy (send-proxy-v2) and nginx (X-Forwarded-For) from Debian, their
configurations taken from docs/cluster.md; clients on other loopback addresses (127.0.0.2,
...) so that client and proxy can be told apart."""

import base64
import os
import socket
import struct
import time

import pytest
import websockets

from conftest import http_get, t, wait_until
from conftest_lb import load_balancer, require_lb  # noqa: F401 (load_balancer: a fixture)
from test_tls import certs, https, tls_dealwire, unverified  # noqa: F401 (fixtures)


def v1(src, dst="127.0.0.1", sport=40000, dport=8000):
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src=None, command=1, tlvs=b""):
    """A v2 header as HAProxy writes it: PROXY (command 1) with IPv4 addresses, or LOCAL."""
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if command == 0:
        return sig + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    body = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, 8000)
    body += tlvs
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


class Upgrade:
    """A WebSocket upgrade on a raw socket: prefix (a PROXY header) first, from source."""

    def __init__(self, port, user, prefix=b"", source="127.0.0.1", headers=(), split=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=t(10),
                                             source_address=(source, 0))
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET /ws/events?user_id={user} HTTP/1.1\r\nHost: x\r\n"
               + "".join(f"{h}\r\n" for h in headers) +
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        data = prefix + req
        if split is not None:
            # The header in two segments: the daemon must wait for the rest of it. The pause
            # only makes the two segments arrive apart; the test passes the same either way.
            self.sock.sendall(data[:split])
            time.sleep(0.2)
            data = data[split:]
        self.sock.sendall(data)
        head = b""
        while b"\r\n\r\n" not in head:
            try:
                chunk = self.sock.recv(4096)
            except ConnectionResetError:
                chunk = b""  # closed unanswered, with data unread: a reset
            if not chunk:
                break
            head += chunk
        self.status = head.split(b" ", 2)[1].decode() if head else None

    def close(self):
        self.sock.close()


def addresses(port):
    """{user_id: [addresses of its connections]} from the connections document."""
    status, doc = http_get(port, "/api/websocket/connections?limit=1000")
    assert status == 200, doc
    out = {}
    for c in doc["connections"]:
        out.setdefault(c["user_id"], []).append(c["address"])
    return out


def refused(port):
    return http_get(port, "/api/websocket/stats")[1]["security"]["refused"]


def test_proxy_headers_from_a_trusted_peer_name_the_client(dealwire):
    d = dealwire("--trusted-proxies", "127.0.0.1, 10.0.0.0/8")
    a = Upgrade(d.port, "v1", v1("198.51.100.7"))
    b = Upgrade(d.port, "v1six", v1("2001:db8::7", dst="2001:db8::1"))
    c = Upgrade(d.port, "v2", v2("203.0.113.9"))
    e = Upgrade(d.port, "v2tlv", v2("203.0.113.10", tlvs=b"\x04\x00\x03abc"))
    f = Upgrade(d.port, "local", v2(command=0))  # the proxy's own: its address stands
    g = Upgrade(d.port, "late", v2("192.0.2.44"), split=10)  # the header cut in two
    plain = Upgrade(d.port, "plain")  # a trusted peer may also send no header
    try:
        for u in (a, b, c, e, f, g, plain):
            assert u.status == "101"
        assert addresses(d.port) == {
            "v1": ["198.51.100.7"], "v1six": ["2001:db8::7"], "v2": ["203.0.113.9"],
            "v2tlv": ["203.0.113.10"], "local": ["127.0.0.1"], "late": ["192.0.2.44"],
            "plain": ["127.0.0.1"]}
    finally:
        for u in (a, b, c, e, f, g, plain):
            u.close()


def test_a_malformed_proxy_header_closes_that_socket_only(dealwire):
    d = dealwire("--trusted-proxies", "127.0.0.1")
    bad = Upgrade(d.port, "bad", b"PROXY TCP4 198.51.100.7 nonsense\r\n")
    assert bad.status is None  # closed without an answer, as HAProxy itself does
    bad.close()
    good = Upgrade(d.port, "good", v1("198.51.100.8"))
    assert good.status == "101"
    good.close()
    assert refused(d.port)["proxy_header"] == 1


def test_an_untrusted_peer_cannot_name_its_address(dealwire):
    # Trusted: another address than the test's. Neither header moves this client's address.
    d = dealwire("--trusted-proxies", "127.0.0.9")
    forged = Upgrade(d.port, "forged", source="127.0.0.2",
                     headers=["X-Forwarded-For: 203.0.113.50"])
    header = Upgrade(d.port, "header", v1("203.0.113.51"), source="127.0.0.3")
    try:
        assert forged.status == "101"
        # lws skips the PROXY line as a line it does not know and reads the request after it
        assert header.status == "101"
        assert addresses(d.port) == {"forged": ["127.0.0.2"], "header": ["127.0.0.3"]}
    finally:
        forged.close()
        header.close()


def test_the_per_address_limit_counts_the_clients_not_the_proxy(dealwire):
    d = dealwire("--trusted-proxies", "127.0.0.1", "--max-connections-per-ip", "2")
    held = [Upgrade(d.port, f"u{i}", v2("198.51.100.1")) for i in range(2)]
    others = [Upgrade(d.port, f"w{i}", v2(f"198.51.100.{i + 2}")) for i in range(3)]
    xff = [Upgrade(d.port, f"x{i}", headers=["X-Forwarded-For: 10.9.9.9, 203.0.113.77"])
           for i in range(2)]
    try:
        assert [u.status for u in held + others + xff] == ["101"] * 7
        # the third from 198.51.100.1: closed at once, nothing read (as without a proxy)
        third = Upgrade(d.port, "u2", v2("198.51.100.1"))
        assert third.status is None
        third.close()
        # the third from 203.0.113.77, named in X-Forwarded-For: its request is answered 429
        third = Upgrade(d.port, "x2", headers=["X-Forwarded-For: 203.0.113.77"])
        assert third.status == "429"
        third.close()
        assert refused(d.port)["per_ip"] == 2
        # the proxy's own address, 127.0.0.1, holds 7 sockets and is not limited
        assert http_get(d.port, "/readyz")[0] == 200
    finally:
        for u in held + others + xff:
            u.close()


async def connect_from(port, user, source, headers=None):
    return await websockets.connect(f"ws://127.0.0.1:{port}/ws/events?user_id={user}",
                                    local_addr=(source, 0), extra_headers=headers,
                                    open_timeout=t(10))


def run_async(coro):
    import asyncio
    return asyncio.run(asyncio.wait_for(coro, t(60)))


def assert_clients_named(lb, d):
    """Two clients through lb, from 127.0.0.2 and 127.0.0.3, the second with an
    X-Forwarded-For of its own: d sees each one's own address."""
    async def main():
        a = await connect_from(lb.port, "ann", "127.0.0.2")
        # HAProxy: not read (the PROXY header names the client); nginx appends the address
        # it saw to the client's header, and the last one counts
        b = await connect_from(lb.port, "bob", "127.0.0.3",
                               {"X-Forwarded-For": "203.0.113.66"})
        try:
            await a.recv()
            await b.recv()
            assert addresses(d.port) == {"ann": ["127.0.0.2"], "bob": ["127.0.0.3"]}
        finally:
            await a.close()
            await b.close()

    run_async(main())


def test_haproxy_sends_the_client_address_with_proxy_v2(dealwire, load_balancer):
    require_lb("haproxy")
    d = dealwire("--trusted-proxies", "127.0.0.1")
    lb = load_balancer("haproxy", [d])
    wait_until(lambda: lb.server_status().get(d.port) == "UP", t(10),
               "HAProxy's health check (with its PROXY header) passing")
    assert_clients_named(lb, d)
    assert refused(d.port)["proxy_header"] == 0


def test_nginx_sends_the_client_address_in_x_forwarded_for(dealwire, load_balancer):
    require_lb("nginx")
    d = dealwire("--trusted-proxies", "127.0.0.1")
    assert_clients_named(load_balancer("nginx", [d]), d)


@pytest.mark.parametrize("value", ["unknown", "", "300.1.1.1"])
def test_a_forwarded_header_that_is_no_address_leaves_the_proxy_address(dealwire, value):
    d = dealwire("--trusted-proxies", "127.0.0.1")
    u = Upgrade(d.port, "u", headers=[f"X-Forwarded-For: {value}"])
    try:
        assert u.status == "101"
        assert addresses(d.port) == {"u": ["127.0.0.1"]}
    finally:
        u.close()


@pytest.mark.parametrize("split", [None, 8], ids=["whole", "split"])
def test_a_proxy_header_before_tls_passed_through(tls_dealwire, certs, split):
    """HAProxy in TCP mode passing wss through: the header, then the TLS handshake."""
    d = tls_dealwire(certs, "--trusted-proxies", "127.0.0.1")
    header = v2("198.51.100.99")
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=t(10))
    if split:
        raw.sendall(header[:split])
        time.sleep(0.2)  # apart, as in Upgrade: the test passes the same either way
        header = header[split:]
    raw.sendall(header)
    with unverified().wrap_socket(raw, server_hostname="localhost") as tls:
        key = base64.b64encode(os.urandom(16)).decode()
        tls.sendall((f"GET /ws/events?user_id=tls HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        assert tls.recv(4096).startswith(b"HTTP/1.1 101")
        status, doc = https(d.port, "GET", "/api/websocket/connections", unverified())
        assert status == 200
        assert [c["address"] for c in doc["connections"]] == ["198.51.100.99"]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_header_that_stops_half_way_costs_no_cpu_while_it_waits(dealwire):
    """The part that came stays in the socket, which is then always ready: the daemon looks
    again every few milliseconds, it does not spin on it."""
    d = dealwire("--trusted-proxies", "127.0.0.1", "--handshake-timeout", "5")
    sock = socket.create_connection(("127.0.0.1", d.port), timeout=t(10))
    try:
        sock.sendall(v2("192.0.2.1")[:20])
        wait_until(lambda: http_get(d.port, "/readyz")[0] == 200, t(5), "the daemon serving")
        before = cpu_seconds(d.pid)
        time.sleep(1.0)  # the span observed, not a wait for an event
        used = cpu_seconds(d.pid) - before
        assert used < 0.3, f"{used:.2f} s of CPU in 1 s with half a PROXY header waiting"
        assert http_get(d.port, "/readyz")[0] == 200
    finally:
        sock.close()
