"""TLS: with --tls-cert/--tls-key the port serves wss and https only, TLS 1.2 at least; bad
files stop the start-up with exit code 2 and a line naming the file; SIGHUP reloads the pair
(new connections see the new certificate, open ones stay), and a reload that fails keeps the
old certificate serving.

Certificates come from scripts/devcert.sh (self-signed ECDSA P-256 for localhost and
127.0.0.1); clients trust exactly the certificate under test. conftest.Daemon polls /healthz
over plain HTTP to know the daemon is up, which a TLS port does not answer, so TLSDaemon
polls it over https instead.
"""

import asyncio
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest
import websockets
import websockets.exceptions

from conftest import (
    REPO, Daemon, DaemonError, daemon_binary, daemon_env, daemons_of, recv_json, request, run,
    run_bad_start, stop_daemons, t, wait_until,
)

# The openssl command is a dependency (scripts/deps.sh): without it these tests fail, not skip.
assert shutil.which("openssl"), "the openssl command is needed to make certificates"

DEVCERT = REPO / "scripts" / "devcert.sh"

# ---------------------------------------------------------------------------------------------
# Certificates and clients
# ---------------------------------------------------------------------------------------------


def devcert(directory):
    """A new self-signed pair in directory/cert.pem and directory/key.pem (overwritten)."""
    r = subprocess.run(["bash", str(DEVCERT), str(directory)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"devcert.sh failed: {r.stderr}"
    return directory / "cert.pem", directory / "key.pem"


def rsa_pair(directory):
    """A self-signed RSA pair (another key type than devcert's EC) in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(directory / "key.pem"),
                        "-out", str(directory / "cert.pem")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return directory / "cert.pem", directory / "key.pem"


def fingerprint_of(pem_path):
    """SHA-256 of the DER form of the (first) certificate in a PEM file."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem_path.read_text())).hexdigest()


def trusting(*pem_paths):
    """A client context that trusts exactly these certificates (and checks the name)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None)
    ctx.load_verify_locations(cadata="".join(p.read_text() for p in pem_paths))
    return ctx


def unverified():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def served_fingerprint(port):
    """SHA-256 of the certificate a new TLS connection to port is shown."""
    with socket.create_connection(("127.0.0.1", port), timeout=t(10)) as raw:
        with unverified().wrap_socket(raw, server_hostname="localhost") as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def https(port, method, path, ctx, body=None):
    """One request over https → (status, JSON body or None)."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=t(10))
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload,
                     headers={"Content-Type": "application/json"} if payload else {})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    return resp.status, (json.loads(raw) if raw else None)


def publish_alert(port, ctx, user, deal_id):
    """POST /api/publish of a deal_alert to user over https; returns the answer."""
    status, answer = https(port, "POST", "/api/publish", ctx, {
        "target": {"user_id": user},
        "message": {"type": "deal_alert", "deal_id": deal_id, "title": "NYC to Paris $299",
                    "price": 299}})
    assert status == 200, (status, answer)
    return answer


async def apublish_alert(port, ctx, user, deal_id):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, publish_alert, port, ctx, user, deal_id)


async def wss_connect(port, user, ctx):
    """A wss connection for user; returns (ws, welcome)."""
    ws = await websockets.connect(f"wss://127.0.0.1:{port}/ws/events?user_id={user}", ssl=ctx,
                                  ping_interval=None, max_size=None, open_timeout=t(10),
                                  close_timeout=t(2))
    welcome = await recv_json(ws)
    assert welcome["type"] == "connection_established" and welcome["user_id"] == user, welcome
    return ws, welcome


async def receives_alert(port, ws, user, ctx):
    """ws (of user) answers a ping and receives a deal_alert published over https."""
    assert (await request(ws, {"type": "ping"}))["type"] == "pong"
    deal_id = f"deal_{os.urandom(4).hex()}"
    answer = await apublish_alert(port, ctx, user, deal_id)
    assert answer["recipients"] >= 1, answer
    msg = await recv_json(ws)
    assert msg["type"] == "deal_alert" and msg["deal_id"] == deal_id, msg
    return msg


def s_client(port, *args):
    """openssl s_client against the daemon with stdin closed → (exit code, all output)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief",
                        *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=t(20))
    return r.returncode, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# The daemon over TLS
# ---------------------------------------------------------------------------------------------


class TLSDaemon(Daemon):
    """conftest.Daemon whose readiness probe is GET /healthz over https."""

    def _wait_ready(self):
        deadline = time.monotonic() + t(10)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if https(self.port, "GET", "/healthz", unverified())[0] == 200:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        self.stop()
        raise DaemonError(f"dealwire not ready within {t(10)}s; stderr:\n{self.stderr_text()}")


@pytest.fixture
def tls_dealwire(request, tmp_path):
    """Factory: tls_dealwire(certdir, *args) → a started TLSDaemon serving certdir/cert.pem
    and certdir/key.pem. Stopped at teardown like conftest's dealwire fixture, with the same
    checks (exit code 0 and no sanitizer report in sanitizer builds)."""
    started = daemons_of(request)
    binary = daemon_binary()

    def factory(certdir, *args):
        full = ["--tls-cert", certdir / "cert.pem", "--tls-key", certdir / "key.pem", *args]
        d = TLSDaemon(binary, [str(a) for a in full], daemon_env(), tmp_path,
                      f"dealwire-tls{len(started)}")
        started.append(d)
        return d.start()

    yield factory
    stop_daemons(started)


@pytest.fixture
def certs(tmp_path):
    directory = tmp_path / "certs"
    devcert(directory)
    return directory


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------


def test_wss_welcome_and_alert_published_over_https(tls_dealwire, certs):
    d = tls_dealwire(certs)
    ctx = trusting(certs / "cert.pem")

    async def main():
        ws, welcome = await wss_connect(d.port, "alice", ctx)
        tls = ws.transport.get_extra_info("ssl_object")
        assert tls.version() in ("TLSv1.2", "TLSv1.3"), tls.version()
        assert tls.selected_alpn_protocol() in (None, "http/1.1")
        msg = await receives_alert(d.port, ws, "alice", ctx)
        assert msg["title"] == "NYC to Paris $299" and msg["price"] == 299, msg
        await ws.close()

    run(main())
    status, stats = https(d.port, "GET", "/api/websocket/stats", ctx)
    assert status == 200 and stats["security"]["tls"] is True, stats
    log = d.stderr_text()
    assert "(wss and https only" in log and "TLS certificate" in log


def test_tls_below_1_2_is_refused_by_the_server(tls_dealwire, certs):
    d = tls_dealwire(certs)
    # SECLEVEL=0 lets this client offer TLS 1.0/1.1 at all: the refusal must be the server's.
    for version in ("-tls1", "-tls1_1"):
        code, out = s_client(d.port, version, "-cipher", "DEFAULT@SECLEVEL=0")
        assert code != 0, f"s_client {version} connected:\n{out}"
        assert "alert protocol version" in out, f"s_client {version}:\n{out}"
    for version, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        code, out = s_client(d.port, version)
        assert code == 0 and f"Protocol version: {name}" in out, f"s_client {version}:\n{out}"

    async def main():  # nothing else was disturbed
        ctx = trusting(certs / "cert.pem")
        ws, _ = await wss_connect(d.port, "alice", ctx)
        await receives_alert(d.port, ws, "alice", ctx)
        await ws.close()

    run(main())


def test_plain_http_and_ws_get_no_answer_on_the_tls_port(tls_dealwire, certs):
    d = tls_dealwire(certs)
    with socket.create_connection(("127.0.0.1", d.port), timeout=t(10)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/" not in data and b"healthz" not in data, f"plain HTTP was answered: {data!r}"

    async def main():
        with pytest.raises((websockets.exceptions.InvalidHandshake, OSError, EOFError)):
            ws = await websockets.connect(f"ws://127.0.0.1:{d.port}/ws/events?user_id=alice",
                                          open_timeout=t(10))
            await ws.close()
        ctx = trusting(certs / "cert.pem")
        ws, _ = await wss_connect(d.port, "alice", ctx)
        await receives_alert(d.port, ws, "alice", ctx)
        await ws.close()

    run(main())


# ---------------------------------------------------------------------------------------------
# Start-up checks
# ---------------------------------------------------------------------------------------------


def test_bad_certificate_files_stop_the_start_with_exit_2(tmp_path):
    cert, key = devcert(tmp_path / "a")
    other_cert, other_key = devcert(tmp_path / "b")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                       "-----END CERTIFICATE-----\n")
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    missing = tmp_path / "missing.pem"
    cases = [
        ("missing certificate", [missing, key], missing),
        ("missing key", [cert, missing], missing),
        ("key of another certificate", [cert, other_key], other_key),
        ("garbage certificate", [garbage, key], garbage),
        ("empty key", [cert, empty], empty),
    ]
    problems = []
    for name, (c, k), named in cases:
        code, err = run_bad_start(["--tls-cert", c, "--tls-key", k])
        lines = [line for line in err.splitlines() if str(named) in line]
        if code != 2 or not lines:
            problems.append(f"{name}: exit {code}, stderr {err!r} (expected exit 2 and a line "
                            f"naming {named})")
    code, err = run_bad_start(["--tls-cert", cert])
    if code != 2 or "--tls-key" not in err:
        problems.append(f"--tls-cert without --tls-key: exit {code}, stderr {err!r}")
    assert not problems, "\n".join(problems)
    assert other_cert.exists()


# ---------------------------------------------------------------------------------------------
# SIGHUP
# ---------------------------------------------------------------------------------------------


def count_in_log(d, text):
    return d.stderr_text().count(text)


def hup_and_wait(d, text):
    """Sends SIGHUP and waits for one more log line containing text; returns that line."""
    before = count_in_log(d, text)
    os.kill(d.pid, signal.SIGHUP)  # not send_signal(): a daemon that dies must be reported
    wait_until(lambda: count_in_log(d, text) > before, t(5), f"a log line {text!r}")
    assert d.running(), "the daemon exited after SIGHUP"
    return [line for line in d.stderr_text().splitlines() if text in line][-1]


def test_sighup_serves_the_new_certificate_and_keeps_open_connections(tls_dealwire, certs):
    d = tls_dealwire(certs)
    old = certs.parent / "old-cert.pem"  # a copy: devcert overwrites certs/cert.pem
    old.write_text((certs / "cert.pem").read_text())
    old_fp = fingerprint_of(old)
    assert served_fingerprint(d.port) == old_fp

    async def main():
        loop = asyncio.get_running_loop()
        ws_old, _ = await wss_connect(d.port, "alice", trusting(old))
        await loop.run_in_executor(None, devcert, certs)  # a new pair, the same paths
        new_fp = fingerprint_of(certs / "cert.pem")
        assert new_fp != old_fp
        line = await loop.run_in_executor(None, hup_and_wait, d, "certificate reloaded")
        assert str(certs / "cert.pem") in line, line
        assert await loop.run_in_executor(None, served_fingerprint, d.port) == new_fp
        new_ctx = trusting(certs / "cert.pem")
        ws_new, _ = await wss_connect(d.port, "bob", new_ctx)
        with pytest.raises(ssl.SSLCertVerificationError):
            await wss_connect(d.port, "carol", trusting(old))
        # The connection made before the reload is still open, on the old certificate.
        old_tls = ws_old.transport.get_extra_info("ssl_object")
        assert hashlib.sha256(old_tls.getpeercert(binary_form=True)).hexdigest() == old_fp
        await receives_alert(d.port, ws_old, "alice", new_ctx)
        await receives_alert(d.port, ws_new, "bob", new_ctx)
        await ws_old.close()
        await ws_new.close()

    run(main())
    assert not [line for line in d.stderr_text().splitlines() if " error " in line]


def test_sighup_with_bad_files_keeps_the_old_certificate(tls_dealwire, certs, tmp_path):
    d = tls_dealwire(certs)
    good_cert, good_key = (certs / "cert.pem").read_text(), (certs / "key.pem").read_text()
    serving_fp = fingerprint_of(certs / "cert.pem")
    ctx = trusting(certs / "cert.pem")
    other_cert, _ = devcert(tmp_path / "other")
    rsa_cert, rsa_key = rsa_pair(tmp_path / "rsa")
    cases = [
        ("garbage certificate", "garbage\n", good_key, "cert.pem"),
        ("certificate of another key", other_cert.read_text(), good_key, "key.pem"),
        ("empty key", good_cert, "", "key.pem"),
        ("RSA pair for an EC one", rsa_cert.read_text(), rsa_key.read_text(), "key.pem"),
    ]

    async def main():
        loop = asyncio.get_running_loop()
        ws, _ = await wss_connect(d.port, "alice", ctx)
        for name, cert_text, key_text, named in cases:
            (certs / "cert.pem").write_text(cert_text)
            (certs / "key.pem").write_text(key_text)
            line = await loop.run_in_executor(None, hup_and_wait, d,
                                              "certificate not reloaded")
            assert " error " in line and named in line, (name, line)
            assert await loop.run_in_executor(None, served_fingerprint, d.port) == serving_fp, \
                f"{name}: the served certificate changed"
            await receives_alert(d.port, ws, "alice", ctx)
            ws2, _ = await wss_connect(d.port, "bob", ctx)  # new clients still get in
            await ws2.close()
        # Good files again: the next SIGHUP works.
        new_cert, _ = await loop.run_in_executor(None, devcert, certs)
        await loop.run_in_executor(None, hup_and_wait, d, "certificate reloaded")
        assert await loop.run_in_executor(None, served_fingerprint, d.port) == \
            fingerprint_of(new_cert)
        await receives_alert(d.port, ws, "alice", trusting(new_cert))
        await ws.close()

    run(main())


def test_sighup_without_tls_is_harmless(dealwire):
    d = dealwire()

    async def main():
        loop = asyncio.get_running_loop()
        ws = await websockets.connect(f"ws://127.0.0.1:{d.port}/ws/events?user_id=alice",
                                      ping_interval=None, open_timeout=t(10))
        assert (await recv_json(ws))["type"] == "connection_established"
        await loop.run_in_executor(None, hup_and_wait, d, "TLS is off, nothing to reload")
        assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        await ws.close()

    run(main())
