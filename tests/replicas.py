"""A primary and a streaming hot standby for the routing tests, from one PostgreSQL installation's binaries.

`replica_pair(bin_dir)` initialises a primary in a temporary directory, clones it with
`pg_basebackup -R -X stream -C -S standby1` (a replication slot, so the standby never misses WAL) and
starts the clone as a hot standby; both listen on 127.0.0.1 only, on free ports, as the `pgserver`
user when run as root (PostgreSQL refuses root). Both are stopped (immediate mode: nothing to keep)
and their files removed when the block ends, however it ends.

`set_apply_delay()` makes the lag deterministic: `recovery_min_apply_delay` holds every commit back on
the standby that long after the primary made it (a reload, no restart).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"
SLOT = "standby1"
DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")
INSTALL_HINT = "install the rigs' Debian packages with scripts/install_rigs.sh"
# a throwaway pair: no durability, little memory; hot_standby_feedback so long test reads are not cancelled
SETTINGS = (
    "-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c full_page_writes=off "
    "-c shared_buffers=16MB -c max_connections=60 -c hot_standby_feedback=on -c wal_receiver_status_interval=1s"
)


def _run_as() -> str | None:
    return SYSTEM_USER if platform.system() != "Windows" and os.geteuid() == 0 else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class ReplicaPair:
    bin_dir: Path
    root: Path
    primary_port: int
    standby_port: int

    def primary_url(self, database: str = "postgres") -> str:
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.primary_port}/{database}"

    def standby_url(self, database: str = "postgres") -> str:
        return f"postgres://{SUPERUSER}@127.0.0.1:{self.standby_port}/{database}"

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """One of the installation's programs, as the server's user; its stderr in the error when it fails."""
        result = subprocess.run([str(self.bin_dir / tool), *args], user=_run_as(), capture_output=True, text=True, cwd="/", timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result

    async def set_apply_delay(self, seconds: float) -> None:
        """Hold each commit back on the standby for `seconds` (0: apply at once)."""
        connection = await asyncpg.connect(self.standby_url())
        try:
            await connection.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{round(seconds * 1000)}ms'")
            await connection.execute("SELECT pg_reload_conf()")
        finally:
            await connection.close()

    async def caught_up(self, timeout: float = 20) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        primary = await asyncpg.connect(self.primary_url())
        standby = await asyncpg.connect(self.standby_url())
        try:
            target = await primary.fetchval("SELECT pg_current_wal_insert_lsn()")
            deadline = time.monotonic() + timeout
            while not await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", target):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby did not replay {target} within {timeout} s")
                await asyncio.sleep(0.01)
        finally:
            await primary.close()
            await standby.close()


def require_binaries(bin_dir: Path) -> Path:
    """`bin_dir` if it holds a PostgreSQL server; otherwise a failure naming the installer (never a skip)."""
    if not (bin_dir / "postgres").exists() or not (bin_dir / "pg_basebackup").exists():
        raise RuntimeError(f"no PostgreSQL server with pg_basebackup in {bin_dir}; {INSTALL_HINT}")
    return bin_dir


@contextmanager
def replica_pair(bin_dir: Path) -> Iterator[ReplicaPair]:
    """A running primary and hot standby from `bin_dir`'s binaries; both stopped and removed on exit."""
    require_binaries(bin_dir)
    root = Path(tempfile.mkdtemp(prefix="langlearn-replicas-"))
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        if _run_as():
            shutil.chown(root, SYSTEM_USER, SYSTEM_USER)
        pair = ReplicaPair(bin_dir, root, _free_port(), _free_port())
        primary, standby = root / "primary", root / "standby"
        pair.run("initdb", "-D", str(primary), "--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER)
        _start(pair, primary, pair.primary_port, cleanup)
        pair.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(pair.primary_port), "-U", SUPERUSER, "-D", str(standby),
                 "-R", "-X", "stream", "-C", "-S", SLOT, "--checkpoint=fast")
        _start(pair, standby, pair.standby_port, cleanup)
        yield pair


def _start(pair: ReplicaPair, data: Path, port: int, cleanup: ExitStack) -> None:
    log = data.parent / f"{data.name}.log"
    pair.run("pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(log), "-o", f"{SETTINGS} -c port={port}")
    cleanup.callback(subprocess.run, [str(pair.bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(data)],
                     user=_run_as(), capture_output=True, cwd="/", timeout=60)
