"""A real, private Redis for the integration tests (no mocks): Debian's redis-server on a free
127.0.0.1 port, in a temporary directory, with nothing saved to disk, stopped by its PID.

    from conftest_redis import redis_server  # noqa: F401 (pytest fixture)

redis_server (function) a RedisServer, started; .url(), .stop(), .start() (same port), .cli().
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import free_port, t


def require_redis():
    """Skip (fail in CI) when redis-server is not installed."""
    if shutil.which("redis-server") is None:
        msg = "redis-server is not installed (apt-get install redis-server; scripts/deps.sh does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


class RedisServer:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="dw-redis-")
        self.proc = None

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
             "--logfile", os.path.join(self.dir, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + t(10)
        while time.monotonic() < deadline:  # until it accepts connections
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            assert self.proc.poll() is None, "redis-server exited at start"
            time.sleep(0.05)  # polling a port that is not open yet: no event to await
        raise AssertionError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=t(10))
        self.proc = None

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], check=True,
                              capture_output=True, text=True, timeout=t(10)).stdout

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server():
    require_redis()
    server = RedisServer().start()
    yield server
    server.remove()
