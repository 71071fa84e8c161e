"""A Patroni rig: an etcd (Debian's etcd-server 3.4) and two PostgreSQL 16 nodes (the pgserver wheel's binaries) each
run by a Patroni (PyPI, the `[test]` extra) as the unprivileged `pgserver` user, in a temporary folder.

Short timings so that a test sees a failover in seconds: `ttl` 20 (Patroni's least), `loop_wait` 1, and
`primary_start_timeout` 0 (a primary whose PostgreSQL crashed gives its leader key up at once instead of spending
up to 300 s on a local restart). `synchronous_mode` on: a COMMIT returns once the standby has flushed it and only
that standby may be promoted, so a failover loses no acknowledged write (asynchronous replication can lose the
last ones: docs/scale-out.md). Every process is stopped by `stop()`, which the fixture calls even when a test fails.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from langlearn import local_server
from langlearn.compat import pgserver_bin_dir

ETCD = Path("/usr/bin/etcd")
RUN_AS = "pgserver"  # PostgreSQL refuses root; the pgserver wheel's helper made this account
TTL, LOOP_WAIT, RETRY_TIMEOUT = 20, 1, 5  # loop_wait + 2 * retry_timeout <= ttl, Patroni's rule
DATABASE = "langlearn"
MISSING = "{what} is missing: run scripts/install_rigs.sh (Debian packages) and pip install -e '.[test]' (Patroni)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    name: str
    pg_port: int
    api_port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    lost: bool = False  # its Patroni was killed on purpose (`kill_patroni`)

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


@dataclass
class PatroniCluster:
    """Two Patroni nodes and their etcd; `url()` is the application's multi-host URL of the primary."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="langlearn-patroni-")))
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nodes: list[Node] = field(default_factory=list)
    etcd: subprocess.Popen[bytes] | None = None
    etcd_port: int = 0

    def url(self, database: str = DATABASE) -> str:
        hosts = ",".join(f"127.0.0.1:{node.pg_port}" for node in self.nodes)
        return f"postgres://postgres:{self.password}@{hosts}/{database}?target_session_attrs=read-write"

    def node_url(self, node: Node, database: str = DATABASE) -> str:
        return f"postgres://postgres:{self.password}@127.0.0.1:{node.pg_port}/{database}"

    # --- start ---------------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        if not ETCD.exists():
            pytest.fail(MISSING.format(what=str(ETCD)))
        try:
            import patroni  # noqa: F401  # only the subprocesses use it; a missing install fails here in one line
        except ImportError:
            pytest.fail(MISSING.format(what="patroni"))
        account = pwd.getpwnam(RUN_AS)
        os.chown(self.root, account.pw_uid, account.pw_gid)
        self.etcd_port = free_port()
        peer_port = free_port()
        self.etcd = subprocess.Popen(
            [str(ETCD), "--name", "rig", "--data-dir", str(self.root / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}", "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-cluster", f"rig=http://127.0.0.1:{peer_port}"],
            stdout=open(self.root / "etcd.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        self.nodes = [Node(f"node{number}", free_port(), free_port(), self.root / f"node{number}") for number in (1, 2)]
        for node in self.nodes:
            node.folder.mkdir(mode=0o700)
            os.chown(node.folder, account.pw_uid, account.pw_gid)
            (node.folder / "patroni.yml").write_text(json.dumps(self._config(node), indent=1))  # JSON is YAML
        self._launch(self.nodes[0])  # the first bootstraps the cluster; the second then clones it
        self._wait(lambda members: any(m["role"] == "leader" and m["state"] == "running" for m in members), deadline, "a leader")
        self._create_database()
        self._launch(self.nodes[1])
        self.wait_for_sync_standby(deadline)

    def _config(self, node: Node) -> dict[str, Any]:
        return {
            "scope": f"langlearn-{os.getpid()}",
            "name": node.name,
            "restapi": {"listen": f"127.0.0.1:{node.api_port}", "connect_address": f"127.0.0.1:{node.api_port}"},
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
                    "primary_start_timeout": 0, "synchronous_mode": True,
                    "postgresql": {"use_pg_rewind": True, "parameters": {"wal_log_hints": "on", "max_connections": 60}},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(pgserver_bin_dir()),
                "pgpass": str(node.folder / "pgpass"),
                "basebackup": [{"checkpoint": "fast"}],  # the default spread checkpoint keeps a clone waiting for minutes
                "authentication": {
                    "superuser": {"username": "postgres", "password": self.password},
                    "replication": {"username": "replicator", "password": self.password},
                },
                "parameters": {"unix_socket_directories": str(node.folder)},
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 scram-sha-256",
                    "host replication replicator 127.0.0.1/32 scram-sha-256",
                ],
            },
        }

    def _launch(self, node: Node) -> None:
        node.process = subprocess.Popen(
            [sys.executable, "-m", "patroni", str(node.folder / "patroni.yml")],
            user=RUN_AS, cwd=node.folder, stdin=subprocess.DEVNULL,
            stdout=open(self.root / f"{node.name}.log", "wb"), stderr=subprocess.STDOUT,
            env={key: value for key, value in os.environ.items() if not key.startswith(("PG", "DATABASE_URL"))},
        )

    def _create_database(self) -> None:
        leader = self.leader()
        psql = local_server.client_tool("psql")
        subprocess.run([str(psql), "-h", str(leader.folder), "-p", str(leader.pg_port), "-U", "postgres", "-d", "postgres",
                        "-qc", f"CREATE DATABASE {DATABASE}"], user=RUN_AS, check=True, capture_output=True, cwd="/")

    # --- state ---------------------------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        """The cluster as any node's REST API tells it (empty while none answers)."""
        for node in self.nodes:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{node.api_port}/cluster", timeout=2) as answer:
                    return list(json.load(answer)["members"])
            except (OSError, urllib.error.URLError, ValueError):
                continue
        return []

    def leader(self) -> Node:
        names = [member["name"] for member in self.members() if member["role"] == "leader"]
        assert names, f"no leader: {self.members()}"
        return next(node for node in self.nodes if node.name == names[0])

    def wait_for_sync_standby(self, deadline: float) -> None:
        self._wait(lambda members: any(m["role"] == "sync_standby" and m["state"] == "streaming" for m in members)
                   and any(m["role"] == "leader" for m in members), deadline, "a synchronous standby streaming")

    def wait_for_new_leader(self, old: Node, timeout: float) -> Node:
        self._wait(lambda members: any(m["role"] == "leader" and m["state"] == "running" and m["name"] != old.name for m in members),
                   time.monotonic() + timeout, "another leader")
        return self.leader()

    def _wait(self, ready: Any, deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and not node.lost and node.process.poll() is not None:
                    raise AssertionError(f"{node.name}'s Patroni exited with {node.process.returncode}: {self.log_tail(node)}")
            if ready(self.members()):
                return
            time.sleep(0.2)
        raise AssertionError(f"no {what} in time: {self.members()}\n{self.log_tail(self.nodes[0])}\n{self.log_tail(self.nodes[-1])}")

    def log_tail(self, node: Node, lines: int = 15) -> str:
        path = self.root / f"{node.name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # --- faults and stop -----------------------------------------------------------------------------

    def kill_postgres(self, node: Node) -> None:
        """kill -9 the node's postmaster: its backends end too (they watch it), and clients' connections die."""
        pid = node.postmaster_pid()
        assert pid is not None, f"{node.name} runs no PostgreSQL"
        os.kill(pid, signal.SIGKILL)

    def kill_patroni(self, node: Node) -> None:
        """kill -9 the node's Patroni (its PostgreSQL runs on, unmanaged): with `kill_postgres`, a node lost whole."""
        assert node.process is not None
        node.lost = True
        node.process.kill()
        node.process.wait(timeout=10)

    def stop(self) -> None:
        """Every process the rig started, then its folder (safe to call after a partial start)."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()  # Patroni stops its PostgreSQL on the way out
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(timeout=10)
            if (pid := node.postmaster_pid()) is not None:  # left behind by a Patroni that was killed
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()
                self.etcd.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
