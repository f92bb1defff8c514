"""A real, private PostgreSQL for the integration tests (no mocks), through scripts/pg.sh.

Import the fixtures in a test module that needs a database:

    from conftest_pg import postgres, pg_db  # noqa: F401 (pytest fixtures)

Fixtures:
    postgres  (session) one server in a fresh directory under /tmp, on a free 127.0.0.1 port,
              stopped with `pg_ctl stop` (scripts/pg.sh stop) and removed at the end of the
              session. A PgServer: .url(db), .psql(sql, db), .create_db().
    pg_db     (function) a new empty database on that server: (server, name, url).

PgServer can also be used directly for a server a test starts and stops itself (e.g. to
see the daemon through an outage). As root (CI), scripts/pg.sh runs the server as the
postgres user: that is why the directory is made under /tmp, which that user can traverse.
"""

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import free_port, t

REPO = Path(__file__).resolve().parents[2]
PG_SH = REPO / "scripts" / "pg.sh"


def pg_bindir():
    """Debian's server binaries (/usr/lib/postgresql/<major>/bin), newest major first; None
    when the postgresql package is not installed."""
    root = Path("/usr/lib/postgresql")
    dirs = sorted((d / "bin" for d in root.glob("*") if (d / "bin" / "initdb").exists()),
                  key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return dirs[-1] if dirs else None


def require_postgres():
    """Skip (fail in CI) when no PostgreSQL server is installed."""
    if pg_bindir() is None:
        msg = "PostgreSQL is not installed (apt-get install postgresql; scripts/deps.sh does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


class PgServer:
    """A server in its own directory, started and stopped with scripts/pg.sh."""

    def __init__(self, port=None):
        self.dir = Path(tempfile.mkdtemp(prefix="dealwire-pg-", dir="/tmp"))
        self.port = port
        self.psql_bin = str(pg_bindir() / "psql")
        self.running = False

    def start(self, attempts=5):
        """Start (initdb the first time). Without a fixed port, a free one is picked, and
        another one if that was taken meanwhile."""
        last = ""
        for _ in range(attempts):
            port = self.port or free_port()
            r = subprocess.run(["bash", str(PG_SH), "start", str(self.dir), str(port)],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=t(60))
            if r.returncode == 0:
                self.port = port
                self.running = True
                return self
            last = r.stderr
            if self.port and "did not start" not in last:
                break
        raise RuntimeError(f"scripts/pg.sh start failed: {last}")

    def stop(self):
        if self.running:
            subprocess.run(["bash", str(PG_SH), "stop", str(self.dir)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=t(60), check=True)
            self.running = False

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db="dealwire"):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, db="dealwire"):
        """Run sql; returns the rows as lists of strings (NULL as '')."""
        r = subprocess.run([self.psql_bin, "-h", "127.0.0.1", "-p", str(self.port), "-U",
                            "postgres", "-d", db, "-X", "-A", "-t", "-q", "-F", "\t",
                            "-v", "ON_ERROR_STOP=1", "-c", sql],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=t(60))
        if r.returncode != 0:
            raise AssertionError(f"psql failed on {sql!r}: {r.stderr.strip()}")
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def value(self, sql, db="dealwire"):
        """The single value sql returns."""
        rows = self.psql(sql, db)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]

    _names = itertools.count(1)

    def create_db(self):
        """A new empty database; returns its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.psql(f"CREATE DATABASE {name}", db="postgres")
        return name


@pytest.fixture(scope="session")
def postgres():
    require_postgres()
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_db(postgres):
    """(server, database name, URL) of a new empty database."""
    name = postgres.create_db()
    return postgres, name, postgres.url(name)
