"""A real PostgreSQL server for tests: `initdb` and `pg_ctl` in a temporary folder, on a unix
socket and a free loopback port, stopped and removed afterwards. Debian's `postgresql` package
provides the binaries (`scripts/dev.py test` installs it when it is missing)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Debian keeps the server's programs out of PATH, under /usr/lib/postgresql/<major>/bin.
_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def server_bin() -> Path | None:
    """The folder with initdb and pg_ctl, newest major version first; None if not installed."""
    for folder in sorted(glob.glob(_BIN_GLOB), key=lambda p: int(Path(p).parent.name), reverse=True):
        if Path(folder, "initdb").is_file() and Path(folder, "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway server; yields a superuser URL (`postgresql://...`)."""
    bindir = server_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server programs not found under /usr/lib/postgresql")
    root = Path(tempfile.mkdtemp(prefix="agentrt-pg-"))
    data, port = root / "data", _free_port()
    # initdb refuses to run as root: as root, the server runs as Debian's `postgres` user.
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    superuser = "postgres" if as_user else pwd.getpwuid(os.geteuid()).pw_name
    log = root / "server.log"
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", superuser, "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        # Password authentication for the node roles over TCP, as a networked store would use.
        with (data / "pg_hba.conf").open("w") as hba:
            hba.write(f"local all {superuser} trust\n")
            hba.write(f"host all {superuser} 127.0.0.1/32 trust\n")
            hba.write("host all all 127.0.0.1/32 scram-sha-256\n")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
            timeout=90,
        )
        yield f"postgresql://{superuser}@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
