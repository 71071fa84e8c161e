"""A private PostgreSQL server for when no DATABASE_URL is given.

The server comes from the `pgserver` wheel (PostgreSQL 16 binaries inside a wheel), so a machine
with only Python can run the project. Its data lives in `.pgdata/` at the repo root (git-ignored),
it listens on 127.0.0.1 only, trusts local connections (so no password exists to leak), and it is
reused by every later run. It is tuned for a throwaway database: fsync is off.

    python -m core.local_server url         # start if needed, print its DATABASE_URL
    python -m core.local_server status      # running or stopped, and where its data is
    python -m core.local_server stop        # stop it; `rm -rf .pgdata` then removes it entirely
    python -m core.local_server psql ...    # the wheel's psql, pg_dump or pg_restore, connected to
    python -m core.local_server pg_dump ... # DATABASE_URL, or to the private server when it is unset
"""

from __future__ import annotations

import fcntl
import os
import platform
import socket
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / ".pgdata"
CLUSTER_DIR = DATA_DIR / "cluster"
PORT_FILE = DATA_DIR / "port"
LOG_FILE = DATA_DIR / "server.log"
DATABASE_NAME = "langlearn"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; the wheel's helper creates this unprivileged account.
SYSTEM_USER = "pgserver"


class LocalServerError(RuntimeError):
    """The private server could not be initialised or started."""


def _bin_dir() -> Path:
    with warnings.catch_warnings():
        # importing pgserver touches platformdirs, which warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


def _bin(name: str) -> Path:
    return _bin_dir() / name


CLIENT_TOOLS = ("psql", "pg_dump", "pg_restore")


def psql_path() -> Path:
    """The psql client shipped in the wheel, so the guide's psql checks work without a PostgreSQL install."""
    return _bin("psql")


def _run_as() -> str | None:
    return SYSTEM_USER if platform.system() != "Windows" and os.geteuid() == 0 else None


def _prepare_root_permissions() -> None:
    """As root, hand the data directory to the unprivileged account and let it run the binaries."""
    import pwd
    import stat

    bin_dir = _bin_dir()
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(CLUSTER_DIR)
    ensure_prefix_permissions(bin_dir)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_dir, read | execute)
    ensure_folder_permissions(bin_dir.parent / "lib", read)
    entry = pwd.getpwnam(SYSTEM_USER)
    for path in (DATA_DIR, CLUSTER_DIR):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    if LOG_FILE.exists():
        os.chown(LOG_FILE, entry.pw_uid, entry.pw_gid)


def _pg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(_bin(args[0])), *args[1:]],
        user=_run_as(),
        check=check,
        capture_output=True,
        text=True,
        cwd="/",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextmanager
def _exclusive():
    """Serialise concurrent starters (several test workers or replicas on one machine)."""
    DATA_DIR.mkdir(exist_ok=True)
    with open(DATA_DIR / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_running() -> bool:
    return (CLUSTER_DIR / "PG_VERSION").exists() and _pg("pg_ctl", "status", "-D", str(CLUSTER_DIR), check=False).returncode == 0


def _initdb() -> None:
    CLUSTER_DIR.mkdir(parents=True, exist_ok=True)
    if _run_as():
        _prepare_root_permissions()
    _pg("initdb", "-D", str(CLUSTER_DIR), "--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER)


def _start() -> int:
    port = int(PORT_FILE.read_text()) if PORT_FILE.exists() else _free_port()
    if not _port_is_free(port):
        port = _free_port()
    if _run_as():
        _prepare_root_permissions()
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    result = _pg("pg_ctl", "start", "-w", "-t", "30", "-D", str(CLUSTER_DIR), "-l", str(LOG_FILE), "-o", options, check=False)
    if result.returncode != 0:
        raise LocalServerError(f"the private PostgreSQL server in {CLUSTER_DIR} did not start; see {LOG_FILE}")
    PORT_FILE.write_text(str(port))
    return port


def _ensure_database(port: int) -> None:
    common = ["-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER]
    exists = _pg("psql", *common, "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'")
    if exists.stdout.strip() != "1":
        _pg("createdb", *common, DATABASE_NAME)


def url_for(port: int, database: str = DATABASE_NAME) -> str:
    return f"postgres://{SUPERUSER}@127.0.0.1:{port}/{database}"


def ensure_running(announce=None) -> str:
    """Start the private server unless it already runs; return its DATABASE_URL."""
    try:
        with _exclusive():
            if not (CLUSTER_DIR / "PG_VERSION").exists():
                _initdb()
            started = not _is_running()
            port = _start() if started else int(PORT_FILE.read_text())
            _ensure_database(port)
    except (subprocess.CalledProcessError, OSError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        raise LocalServerError(f"could not set up the private PostgreSQL server in {DATA_DIR}: {detail.strip()}") from error
    if announce is not None and started:
        announce(
            f"Started the private PostgreSQL server: {url_for(port)} (data in {DATA_DIR}). "
            "Stop it with `python -m core.local_server stop`; remove it with `rm -rf .pgdata` after stopping."
        )
    return url_for(port)


def stop() -> bool:
    with _exclusive():
        if not _is_running():
            return False
        _pg("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(CLUSTER_DIR))
        return True


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("url", [])
    if command == "url":
        print(ensure_running(announce=lambda line: print(line, file=sys.stderr)))
    elif command in CLIENT_TOOLS:
        from core.settings import ConfigError, database_url

        try:
            url = database_url()
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return subprocess.run([str(_bin(command)), "-d", url, *rest]).returncode
    elif command == "stop":
        print("stopped" if stop() else "not running")
    elif command == "status":
        running = _is_running()
        print(f"{'running' if running else 'stopped'}: data in {DATA_DIR}")
        return 0 if running else 3
    else:
        print(f"error: unknown command {command!r}; use one of: url, status, stop, {', '.join(CLIENT_TOOLS)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
