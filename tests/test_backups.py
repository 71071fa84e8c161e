"""`langlearn backup` against servers other than the private one: PostgreSQL 15 with the wheel's
pg_dump 16, and why the machine's own pg_dump 15 is not used against the private 16."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LANGLEARN, run_cli
from tests.test_startup import unused_port

POSTGRES_15 = Path("/usr/lib/postgresql/15/bin")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (POSTGRES_15 / "postgres").exists(), reason="needs PostgreSQL 15's server binaries (Debian's postgresql-15)"),
]


def as_server_user() -> dict[str, str]:
    """PostgreSQL refuses to run as root: run it as the unprivileged account the private server uses."""
    return {"user": "pgserver"} if os.geteuid() == 0 else {}


@pytest.fixture(scope="module")
def postgres_15() -> Iterator[str]:
    # not under pytest's tmp_path: its root folder is private to root, and the server runs as another user
    folder = Path(tempfile.mkdtemp(prefix="langlearn-pg15-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "pgserver", "pgserver")
    data = folder / "cluster"
    port = unused_port()
    subprocess.run([POSTGRES_15 / "initdb", "-D", data, "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--locale=C"],
                   check=True, capture_output=True, cwd="/", **as_server_user())
    subprocess.run([POSTGRES_15 / "pg_ctl", "start", "-w", "-D", data, "-l", data.parent / "log",
                    "-o", f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"],
                   check=True, capture_output=True, cwd="/", **as_server_user())
    try:
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([POSTGRES_15 / "pg_ctl", "stop", "-m", "fast", "-D", data], capture_output=True, cwd="/", **as_server_user())
        shutil.rmtree(folder, ignore_errors=True)


def test_backup_and_restore_against_postgresql_15_with_the_wheels_pg_dump(postgres_15, tmp_path):
    created = run_cli(LANGLEARN, "db", "create", "langlearn", database=postgres_15)
    assert created.returncode == 0, created.stderr
    url = postgres_15.rsplit("/", 1)[0] + "/langlearn"
    assert run_cli(LANGLEARN, "upgrade", database=url).returncode == 0
    assert run_cli(LANGLEARN, "seed", "--no-progress", database=url).returncode == 0
    backup = tmp_path / "pg15.dump"
    dumped = run_cli(LANGLEARN, "backup", "--output", str(backup), database=url)
    assert dumped.returncode == 0 and backup.stat().st_size > 0, dumped.stderr

    assert run_cli(LANGLEARN, "db", "create", "restored", database=postgres_15).returncode == 0
    restored_url = postgres_15.rsplit("/", 1)[0] + "/restored"
    restored = run_cli(LANGLEARN, "restore", str(backup), "--yes", database=restored_url)
    assert restored.returncode == 0, restored.stderr
    verified = run_cli(LANGLEARN, "verify", database=restored_url)
    assert verified.returncode == 0 and verified.stdout.strip().endswith(": clean (schema, migrations, invariants)"), verified.stdout


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="no pg_dump on PATH")
def test_an_older_pg_dump_on_path_refuses_the_private_server_which_is_why_backup_uses_the_wheels(head_db, tmp_path):
    version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout
    if " 15." not in version:
        pytest.skip(f"the pg_dump on PATH is not PostgreSQL 15's ({version.strip()})")
    output = tmp_path / "old.sql"
    old = subprocess.run(["pg_dump", "--dbname", head_db.replace("postgres://", "postgresql://"), "--file", str(output)],
                         capture_output=True, text=True)
    assert old.returncode != 0 and "server version mismatch" in old.stderr
    fine = run_cli(LANGLEARN, "backup", "--output", str(tmp_path / "new.dump"), database=head_db)
    assert fine.returncode == 0, fine.stderr
