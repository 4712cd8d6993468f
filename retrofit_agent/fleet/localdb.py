"""A throw-away PostgreSQL cluster in a directory: for a local backend, the tests and the bench.

`initdb` refuses to run as root, so as root the cluster belongs to the unprivileged `postgres`
user (Debian's server package creates it); otherwise to the caller. It listens on 127.0.0.1
and on a Unix socket inside its own directory, trusts local connections (it is for one
machine, never reachable from another) and stops with `pg_ctl stop -m fast`.

Debian installs the binaries under /usr/lib/postgresql/<version>/bin, off PATH: `find_bin`
looks on PATH first, then there (the newest version).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from retrofit_agent.errors import ConfigError, RetrofitError

DEBIAN_BINARIES = Path("/usr/lib/postgresql")
SUPERUSER = "fleet"
DATABASE = "fleet"


class ClusterError(RetrofitError):
    """The local PostgreSQL cluster could not be created, started or stopped."""

    exit_code = 69  # EX_UNAVAILABLE


def find_bin(name: str) -> Path | None:
    """`initdb`, `pg_ctl`... on PATH, else in the newest Debian version's directory, or None."""
    if found := shutil.which(name):
        return Path(found)
    versions = sorted(
        (p for p in DEBIAN_BINARIES.glob("*/bin") if p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
    )
    for directory in reversed(versions):
        if (directory / name).is_file():
            return directory / name
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """A cluster in `directory`; `url` is what `--database` takes."""

    directory: Path
    port: int = 0
    fsync: bool = True  # off only where a crash of the machine may lose the data (tests)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return self.url_of(DATABASE)

    def url_of(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str | Path, timeout: float = 120) -> None:
        """Run as the cluster's owner; ClusterError with the tool's last line on failure."""
        argv = [str(c) for c in command]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
            raise ClusterError(f"{Path(argv[0]).name} {self.directory}: {lines[-1]}")

    def _binary(self, name: str) -> Path:
        found = find_bin(name)
        if found is None:
            raise ConfigError(f"{name}: not found on PATH nor in {DEBIAN_BINARIES}/*/bin")
        return found

    def start(self) -> LocalCluster:
        """Create the cluster (once) and start it on a free port; returns self."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ConfigError("user postgres: missing (initdb refuses root)") from None
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        if not (self.data / "PG_VERSION").is_file():
            self._run(
                self._binary("initdb"),
                "-D",
                self.data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        self.port = self.port or _free_port()
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c max_connections=200 "
            f"-c fsync={'on' if self.fsync else 'off'} -c shared_buffers=256MB"
        )
        log = self.directory / "postgresql.log"
        self._run(self._binary("pg_ctl"), "-D", self.data, "-l", log, "-o", options, "-w", "start")
        self._ensure_database()
        return self

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url_of("postgres"), autocommit=True) as c:
            if c.execute("SELECT 1 FROM pg_database WHERE datname=%s", [DATABASE]).fetchone():
                return
            c.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: ends sessions; immediate: like a crash, recovers at start)."""
        self._run(self._binary("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop like a crash and start again on the same port (the bench's fault)."""
        self.stop("immediate")
        self.start()
