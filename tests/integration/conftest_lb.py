"""A real HAProxy or nginx in front of dealwire nodes, for the integration tests (no mocks):
Debian's /usr/sbin/haproxy and /usr/sbin/nginx, each on a free 127.0.0.1 port, in a temporary
directory that holds its configuration, pid file, logs and (nginx) temp paths; started as a
child process in a session of its own and stopped by its PID.

The configuration is not written here: it is the block of docs/cluster.md that starts with the
line `# dealwire-test: haproxy` (or `nginx`), with only its sample addresses, ports and paths
replaced (and, to keep the tests short, HAProxy's check `inter` and nginx's `fail_timeout`).
So the configurations the guide shows are the ones the tests run.

    from conftest_lb import load_balancer  # noqa: F401 (pytest fixture)

load_balancer (function) a factory: load_balancer("haproxy", nodes) -> a started HAProxy (or
"nginx" -> Nginx) in front of the given Daemons; every one is stopped at teardown.
"""

import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port, t

CLUSTER_MD = REPO / "docs" / "cluster.md"
BINARIES = {"haproxy": "/usr/sbin/haproxy", "nginx": "/usr/sbin/nginx"}
PACKAGES = {"haproxy": "haproxy", "nginx": "nginx-light"}

# The guide's sample node addresses: one line of the block per node, 10.0.0.11:8000 the first.
NODE_RE = re.compile(r"\b10\.0\.0\.1(\d):8000\b")
# HAProxy's health-check period and nginx's passive-failure window, shortened for the tests
# (the guide gives production values).
TEST_TIMING = {"haproxy": (re.compile(r"\binter \d+m?s\b"), "inter 100ms"),
               "nginx": (re.compile(r"\bfail_timeout=\d+m?s\b"), "fail_timeout=1s")}


def require_lb(kind):
    """Skip (fail in CI) when the load balancer's binary is not installed."""
    if not os.access(BINARIES[kind], os.X_OK):
        msg = (f"{BINARIES[kind]} is not installed (apt-get install {PACKAGES[kind]}; "
               "scripts/deps.sh does)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def doc_config(kind):
    """The text of docs/cluster.md's fenced block whose first line is
    `# dealwire-test: <kind>`."""
    marker = f"# dealwire-test: {kind}"
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", CLUSTER_MD.read_text(), re.M | re.S)
    found = [b for b in blocks if b.split("\n", 1)[0].strip() == marker]
    assert len(found) == 1, f"docs/cluster.md has {len(found)} blocks marked {marker!r}"
    return found[0]


def replace(text, pattern, new, what):
    """text with every match of pattern replaced; the pattern must match (the guide and this
    file must not drift apart silently)."""
    out, n = re.subn(pattern, new, text)
    assert n, f"docs/cluster.md's {what} no longer has {pattern!r}"
    return out


def node_lines(text, ports):
    """The block's node lines (those with a sample address) replaced by one line per node,
    made from the first: its address and its name `node1` numbered for each node."""
    lines = text.split("\n")
    at = [i for i, line in enumerate(lines) if NODE_RE.search(line)]
    assert at, "docs/cluster.md's configuration names no node (10.0.0.1x:8000)"
    template = lines[at[0]]
    made = [NODE_RE.sub(f"127.0.0.1:{port}", template).replace("node1", f"node{k}")
            for k, port in enumerate(ports, 1)]
    return "\n".join(lines[:at[0]] + made + [line for i, line in enumerate(lines)
                                            if i > at[0] and i not in at])


class LoadBalancer:
    """One load balancer process on 127.0.0.1:<port>, in its own directory."""

    kind = None

    def __init__(self, nodes, logdir):
        require_lb(self.kind)
        self.nodes = list(nodes)
        self.logdir = Path(logdir)
        self.port = free_port()
        # Under /tmp and traversable: nginx's workers drop root and write its temp paths.
        self.dir = Path(tempfile.mkdtemp(prefix=f"dw-{self.kind}-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.proc = None
        self.config = self.render(doc_config(self.kind))

    def render(self, text):
        raise NotImplementedError

    def command(self):
        raise NotImplementedError

    def start(self):
        conf = self.dir / f"{self.kind}.conf"
        conf.write_text(self.config)
        with open(self.dir / "stdout", "wb") as out, open(self.dir / "stderr", "wb") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)
        deadline = time.monotonic() + t(10)
        while True:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{self.kind} did not start:\n{self.log_text()}")
            time.sleep(0.05)  # polling a port that is not open yet: no event to await

    def stop(self):
        """SIGTERM (both stop at once on it) and wait, by PID; SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=t(10))
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=t(10))

    def log_names(self):
        return ["stdout", "stderr"]

    def log_text(self, tail=20000):
        parts = []
        for name in self.log_names():
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {self.kind} {name} ---\n"
                             f"{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def remove(self):
        """Stop, keep the logs and the configuration with the test's files, remove the
        directory."""
        self.stop()
        for name in [*self.log_names(), f"{self.kind}.conf"]:
            if (self.dir / name).exists():
                shutil.copy(self.dir / name, self.logdir / f"{self.kind}-{self.port}-{name}")
        shutil.rmtree(self.dir, ignore_errors=True)


class HAProxy(LoadBalancer):
    kind = "haproxy"

    def render(self, text):
        text = replace(text, r"(?m)^(\s*bind )\S+", rf"\g<1>127.0.0.1:{self.port}", "bind")
        text = replace(text, r"/run/haproxy/admin\.sock", str(self.dir / "admin.sock"),
                       "stats socket")
        text = replace(text, *TEST_TIMING[self.kind], "check inter")
        return node_lines(text, [d.port for d in self.nodes])

    def command(self):
        # -db: in the foreground, logging (`log stdout`) to our file.
        return [BINARIES[self.kind], "-db", "-f", str(self.dir / "haproxy.conf")]

    def admin(self, command):
        """One command on the stats socket; returns its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(t(5))
            s.connect(str(self.dir / "admin.sock"))
            s.sendall(command.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def server_status(self):
        """{node port: HAProxy's status of that server (UP, DOWN, UP 1/2, ...)}."""
        rows = csv.DictReader(io.StringIO(self.admin("show stat").lstrip("# ")))
        return {int(r["addr"].rsplit(":", 1)[1]): r["status"]
                for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")}


class Nginx(LoadBalancer):
    kind = "nginx"

    def render(self, text):
        text = replace(text, r"(?m)^(\s*listen )\d+;", rf"\g<1>127.0.0.1:{self.port};", "listen")
        text = replace(text, r"/run/nginx\.pid", str(self.dir / "nginx.pid"), "pid")
        text = replace(text, r"/var/log/nginx/", f"{self.dir}/", "log paths")
        text = replace(text, r"/var/lib/nginx/", f"{self.dir}/", "temp paths")
        text = replace(text, *TEST_TIMING[self.kind], "fail_timeout")
        return node_lines(text, [d.port for d in self.nodes])

    def command(self):
        return [BINARIES[self.kind], "-p", f"{self.dir}/", "-c", str(self.dir / "nginx.conf"),
                "-g", "daemon off;"]

    def log_names(self):
        return ["stdout", "stderr", "error.log", "access.log"]

    def error_log(self):
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


KINDS = {"haproxy": HAProxy, "nginx": Nginx}


@pytest.fixture
def load_balancer(tmp_path):
    """Factory: load_balancer(kind, nodes) -> a started HAProxy or Nginx in front of nodes
    (Daemons). Each is stopped by its PID at teardown; its logs and configuration are left in
    the test's tmp_path."""
    started = []

    def factory(kind, nodes):
        lb = KINDS[kind](nodes, tmp_path)
        started.append(lb)
        return lb.start()

    yield factory
    for lb in started:
        lb.remove()
