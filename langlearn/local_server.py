"""A private PostgreSQL server for when no DATABASE_URL is given (the `[local]` extra).

The server comes from the `pgserver` wheel (PostgreSQL 16 binaries inside a wheel), so a machine
with only Python can run the project. It listens on 127.0.0.1 only, trusts local connections (so
no password exists to leak), and is reused by every later run. It is tuned for a throwaway
database: fsync is off. `langlearn server url|status|stop|psql|pg_dump|pg_restore` manages it.

Its data directory (`data_dir()`) is `$LANGLEARN_DATA_DIR`, else `.pgdata/` at the root of a
checkout of this project (an editable install), else `$XDG_DATA_HOME/langlearn` (by default
`~/.local/share/langlearn`): never inside an installed package.
"""

from __future__ import annotations

import fcntl
import os
import platform
import socket
import subprocess
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from langlearn.errors import ConfigError

Announce = Callable[[str], None]  # where a one-line notice goes (a CLI's stderr)

DATABASE_NAME = "langlearn"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; the wheel's helper creates this unprivileged account.
SYSTEM_USER = "pgserver"
CLIENT_TOOLS = ("psql", "pg_dump", "pg_restore")
DISTRIBUTION = "langlearn-data"


def data_dir() -> Path:
    """Where the private server keeps its data (see the module docstring)."""
    configured = os.environ.get("LANGLEARN_DATA_DIR", "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    checkout = _checkout_root()
    if checkout is not None:
        return checkout / ".pgdata"
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "langlearn"


def _checkout_root() -> Path | None:
    """The project's checkout when this package runs from one (an editable install), else None."""
    root = Path(__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    try:
        is_checkout = (root / ".git").exists() and f'name = "{DISTRIBUTION}"' in project.read_text()
    except OSError:
        return None
    return root if is_checkout else None


class LocalServerError(ConfigError):
    """The private server could not be initialised or started."""


def _bin_dir() -> Path:
    from langlearn.compat import pgserver_bin_dir

    with warnings.catch_warnings():
        # importing pgserver touches platformdirs, which warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        try:
            return pgserver_bin_dir()
        except ImportError:
            raise LocalServerError(
                "DATABASE_URL is not set and the private server needs the [local] extra: "
                "pip install 'langlearn-data[local]', or set DATABASE_URL to an existing server"
            ) from None


def _bin(name: str) -> Path:
    return _bin_dir() / name


def psql_path() -> Path:
    """The psql client shipped in the wheel, so the guide's psql checks work without a PostgreSQL install."""
    return _bin("psql")


@dataclass(frozen=True)
class ServerFiles:
    """The private server's files, all under one data directory."""

    data: Path

    @property
    def cluster(self) -> Path:
        return self.data / "cluster"

    @property
    def port(self) -> Path:
        return self.data / "port"

    @property
    def log(self) -> Path:
        return self.data / "server.log"


def server_files() -> ServerFiles:
    return ServerFiles(data_dir())


def _run_as() -> str | None:
    return SYSTEM_USER if platform.system() != "Windows" and os.geteuid() == 0 else None


def _prepare_root_permissions(files: ServerFiles) -> None:
    """As root, hand the data directory to the unprivileged account and let it run the binaries."""
    import pwd
    import stat

    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    bin_dir = _bin_dir()
    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(files.cluster)
    ensure_prefix_permissions(bin_dir)
    read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_dir, read | execute)
    ensure_folder_permissions(bin_dir.parent / "lib", read)
    entry = pwd.getpwnam(SYSTEM_USER)
    for path in (files.data, files.cluster):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    if files.log.exists():
        os.chown(files.log, entry.pw_uid, entry.pw_gid)


def _pg(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_bin(args[0])), *args[1:]],
        user=_run_as(),
        check=check,
        capture_output=True,
        text=True,
        cwd="/",
    )


def client_tool(name: str) -> Path:
    """A PostgreSQL client shipped in the wheel (psql, pg_dump, pg_restore), so no PostgreSQL install is needed."""
    if name not in CLIENT_TOOLS:
        raise ValueError(f"{name!r} is not one of {', '.join(CLIENT_TOOLS)}")
    return _bin(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    """Whether a server could listen on `port`. SO_REUSEADDR as PostgreSQL itself binds: the closed
    connections of the last run linger in TIME_WAIT on its port and must not count as taken."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextmanager
def _exclusive(files: ServerFiles) -> Iterator[None]:
    """Serialise concurrent starters (several test workers or replicas on one machine)."""
    files.data.mkdir(parents=True, exist_ok=True)
    with open(files.data / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_running(files: ServerFiles) -> bool:
    return (files.cluster / "PG_VERSION").exists() and _pg("pg_ctl", "status", "-D", str(files.cluster), check=False).returncode == 0


def _initdb(files: ServerFiles) -> None:
    files.cluster.mkdir(parents=True, exist_ok=True)
    if _run_as():
        _prepare_root_permissions(files)
    _pg("initdb", "-D", str(files.cluster), "--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER)


@dataclass(frozen=True)
class Started:
    port: int
    moved_from: int | None  # the port it had, when another process holds it now


def _start(files: ServerFiles) -> Started:
    """Start the server on the port it had before (so an exported URL keeps working), or a new one."""
    previous = int(files.port.read_text()) if files.port.exists() else None
    port = previous if previous is not None and _port_is_free(previous) else _free_port()
    if _run_as():
        _prepare_root_permissions(files)
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    result = _pg("pg_ctl", "start", "-w", "-t", "30", "-D", str(files.cluster), "-l", str(files.log), "-o", options, check=False)
    if result.returncode != 0:
        raise LocalServerError(f"the private PostgreSQL server in {files.cluster} did not start; see {files.log}")
    files.port.write_text(str(port))
    return Started(port, previous if previous not in (None, port) else None)


def _ensure_database(port: int) -> None:
    common = ["-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER]
    exists = _pg("psql", *common, "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'")
    if exists.stdout.strip() != "1":
        _pg("createdb", *common, DATABASE_NAME)


def url_for(port: int, database: str = DATABASE_NAME) -> str:
    return f"postgres://{SUPERUSER}@127.0.0.1:{port}/{database}"


def ensure_running(announce: Announce | None = None) -> str:
    """Start the private server unless it already runs; return its DATABASE_URL."""
    _bin_dir()  # without the [local] extra, say so before touching anything
    files = server_files()
    try:
        with _exclusive(files):
            if not (files.cluster / "PG_VERSION").exists():
                _initdb(files)
            start = None if _is_running(files) else _start(files)
            port = start.port if start else int(files.port.read_text())
            _ensure_database(port)
    except (subprocess.CalledProcessError, OSError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        raise LocalServerError(
            f"could not set up the private PostgreSQL server in {files.data}: {' '.join(detail.split())}; "
            "or set DATABASE_URL to an existing server"
        ) from error
    if announce is not None and start is not None:
        moved = (
            f"Its port {start.moved_from} is taken by another process, so it moved to {port}: update any DATABASE_URL you exported. "
            if start.moved_from else ""
        )
        announce(
            f"Started the private PostgreSQL server: {url_for(port)} (data in {files.data}). {moved}"
            f"Stop it with `langlearn server stop`; remove it by deleting {files.data} after stopping."
        )
    return url_for(port)


def is_running() -> bool:
    return _is_running(server_files())


def stop() -> bool:
    """Stop the private server; False when it was not running."""
    files = server_files()
    with _exclusive(files):
        if not _is_running(files):
            return False
        _pg("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(files.cluster))
        return True
