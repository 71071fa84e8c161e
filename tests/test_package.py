"""The package as a user installs it: a wheel, a new virtualenv outside the checkout, the console script; and a
service with a model of its own, built by following the README's recipe word for word (its commands, files and
startup code are read from the README, so the test breaks when the README drifts from what works).

Also: a database migrated by the code before the package existed (the last commit with `core/`)
reads as at head, with no finding, through the package: Aerich's history is keyed by the app label
`models`, which did not change when the Python package did."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from langlearn import history
from tests.conftest import REPO_ROOT
from tests.test_startup import unused_port

pytestmark = pytest.mark.slow
BEFORE_THE_PACKAGE = "2210a1d"  # the last commit of the checkout-only layout (core/, seed/verify/, service/)
HEAD = history.version_files()[-1]
OLD_HISTORY = [  # what that commit shipped; later migrations apply on top
    "0_20261124040402_baseline.py", "1_20261124040432_phase1_users.py", "2_20261124040452_phase2_content.py",
    "3_20261124040530_phase3_learning.py", "4_20261124040608_phase4_gamification.py", "5_20261124041220_seed_runs.py",
]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # a user's shell has none of these: the suite's database, its virtualenv, its private server (a pytest-xdist worker's own)
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH", "LANGLEARN_DATA_DIR")}
    environment.update(env or {})
    return subprocess.run([str(a) for a in args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


README_CHECKOUT = "langlearn-data"  # what the README's install commands call the checkout's folder
README_GIT_URL = "git+https://git.example.com/you/langlearn-data.git"


def readme_section() -> str:
    """The README's "Add it to your service": how to install the package, embed it and add a service's own app."""
    return (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("## Add it to your service", 1)[1].split("\n## ", 1)[0]


def readme_blocks(language: str) -> list[str]:
    """The section's fenced blocks in `language`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", readme_section(), re.MULTILINE | re.DOTALL)


def readme_command(marker: str) -> list[str]:
    """The section's one shell command containing `marker` (in a bash block, or inline code in the text), as arguments."""
    lines = [line for block in readme_blocks("bash") for line in block.splitlines()]
    lines += [span for span in re.findall(r"`([^`\n]+)`", readme_section().replace("```", "")) if span.startswith(("aerich ", "langlearn "))]
    commands = {tuple(shlex.split(line, comments=True)) for line in lines if marker in line.split("#", 1)[0]}
    assert len(commands) == 1, f"the README shows {len(commands)} commands with {marker!r}: {commands}"
    return list(commands.pop())


def readme_pip(marker: str) -> list[str]:
    """The README's one install command containing `marker`, as pip's arguments."""
    command = readme_command(marker)
    assert command[0] == "pip", command
    return command[1:]


def workspace_with_checkout(root: Path) -> Path:
    """A folder holding the checkout under the README's name, where the README's commands run."""
    (root / README_CHECKOUT).symlink_to(REPO_ROOT, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built as the README says, and named as it says."""
    workspace = workspace_with_checkout(tmp_path_factory.mktemp("wheel"))
    ok(run(sys.executable, "-m", "pip", *readme_pip("pip wheel"), cwd=workspace))
    [named] = [argument for argument in readme_pip(".whl ") if argument.endswith(".whl")]
    built = workspace / named
    assert built.is_file(), f"the README names {named}; the build made {sorted(p.name for p in workspace.glob('dist/*'))}"
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A new virtualenv outside the checkout with the README's base install (the README's command, where it built the
    wheel), shared by the tests below: a pip install takes a while. The first checks it is the base alone, then adds
    the extras; the recipe's test adds those it needs (nothing, after the first)."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    ok(run(sys.executable, "-m", "venv", venv, cwd=venv.parent))
    ok(run(venv / "bin" / "python", "-m", "pip", *readme_pip(".whl "), "--quiet", cwd=wheel.parent.parent))
    return venv


@contextmanager
def serving(venv: Path, folder: Path, environment: dict[str, str]) -> Iterator[str]:
    """`uvicorn app:app` of the virtualenv, run in `folder` until the block ends; yields its base URL once it answers."""
    port = unused_port()
    server = subprocess.Popen(
        [str(venv / "bin" / "uvicorn"), "app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=folder, env={**{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}, **environment},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                httpx.get(base, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "uvicorn did not answer within 60 s"
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_wheel_holds_one_import_package_with_its_migrations_and_seed_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"langlearn"}
    for version in history.version_files():
        assert f"langlearn/migrations/models/{version}" in names
    for expected in ("langlearn/py.typed", "langlearn/models/users.py", "langlearn/seed/data/courses/en-a1.json",
                     "langlearn/seed/data/vocabulary/en.csv", "langlearn/verify/schema.py", "langlearn/cli/__init__.py"):
        assert expected in names
    assert not any(name.startswith(("langlearn/tests", "langlearn/examples")) or "/.pgdata" in name for name in names)


def test_the_wheel_holds_every_file_of_the_folders_it_maps(wheel):
    """A new module or data file must not be left out of the package (setuptools' `packages` is a list)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    folders = {"langlearn": "langlearn", "models": "langlearn/models", "seed": "langlearn/seed", "migrations": "langlearn/migrations"}
    tracked = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", *folders], capture_output=True, text=True, check=True)
    expected = set()
    for path in tracked.stdout.split():
        folder, _, rest = path.partition("/")
        expected.add(f"{folders[folder]}/{rest}")
    assert expected - names == set()


async def test_installed_outside_the_checkout_it_migrates_checks_verifies_seeds_and_serves(wheel, venv, tmp_path, empty_db):
    elsewhere = tmp_path / "service"
    elsewhere.mkdir()
    python, langlearn = venv / "bin" / "python", venv / "bin" / "langlearn"
    database = {"DATABASE_URL": empty_db, "LANGLEARN_DATA_DIR": str(tmp_path / "private-server")}

    # the base install: what a service needs at run time, nothing else
    installed = ok(run(python, "-m", "pip", "list", "--format=freeze", cwd=elsewhere)).lower()
    for extra in ("pgserver", "fastapi", "uvicorn", "rich"):  # argon2-cffi and supermemo2 are the write path's, so base
        assert f"\n{extra}==" not in f"\n{installed}", f"{extra} is in the base install"
    top_level = ok(run(python, "-c", textwrap.dedent("""
        from importlib.metadata import distribution
        files = distribution("langlearn-data").files
        print(sorted({f.parts[0] for f in files if not f.parts[0].endswith(".dist-info") and f.parts[0] != ".."}))
    """), cwd=elsewhere))
    assert top_level.strip() == "['langlearn']"
    home = tmp_path / "home"
    where = ok(run(python, "-c", "from langlearn.local_server import data_dir; print(data_dir())", cwd=elsewhere,
                   env={"HOME": str(home), "XDG_DATA_HOME": ""}))
    assert Path(where.strip()) == home / ".local" / "share" / "langlearn"  # never inside site-packages

    assert ok(run(langlearn, "upgrade", cwd=elsewhere, env=database)).startswith(f"applied {len(history.version_files())} migration(s); ")
    assert ok(run(langlearn, "check", cwd=elsewhere, env=database)).strip() == f"database at {HEAD} (head); schema matches the models"
    assert ok(run(langlearn, "verify", cwd=elsewhere, env=database)).strip().endswith(": clean (schema, migrations, invariants)")
    # plain Aerich on the installed history, with the table `langlearn migrations aerich-config` prints
    aerich_user = tmp_path / "aerich-user"
    aerich_user.mkdir()
    (aerich_user / "pyproject.toml").write_text(ok(run(langlearn, "migrations", "aerich-config", cwd=elsewhere)))
    aerich = venv / "bin" / "aerich"
    reverted = ok(run(aerich, "downgrade", "-v", "0", "--yes", cwd=aerich_user, env=database)).splitlines()
    assert reverted == [f"Success downgrading to {version}" for version in reversed(history.version_files())]
    applied = ok(run(aerich, "upgrade", cwd=aerich_user, env=database)).splitlines()
    assert applied == [f"Success upgrading to {version}" for version in history.version_files()]
    assert ok(run(langlearn, "check", cwd=elsewhere, env=database)).strip() == f"database at {HEAD} (head); schema matches the models"
    missing = run(langlearn, "seed", cwd=elsewhere, env=database)
    assert missing.returncode == 2 and missing.stderr == "error: the seed needs the [seed] extra: pip install 'langlearn-data[seed]'\n"
    no_server = run(langlearn, "server", "url", cwd=elsewhere, env={"LANGLEARN_DATA_DIR": database["LANGLEARN_DATA_DIR"]})
    assert no_server.returncode == 2 and "needs the [local] extra" in no_server.stderr and no_server.stderr.count("\n") == 1

    # the extras the README installs for development, and the demo service's
    ok(run(python, "-m", "pip", *readme_pip(".whl[seed,local]"), "--quiet", cwd=wheel.parent.parent))
    ok(run(python, "-m", "pip", "install", "--quiet", f"{wheel}[service]", cwd=elsewhere))
    seeded = run(langlearn, "seed", "--no-progress", cwd=elsewhere, env=database)
    assert seeded.returncode == 0, seeded.stderr
    assert ok(run(langlearn, "verify", cwd=elsewhere, env=database)).strip().endswith(": clean (schema, migrations, invariants)")
    status = ok(run(langlearn, "status", cwd=elsewhere, env=database)).splitlines()
    assert status[-1] == f"at head: {HEAD}" and "pending" not in "\n".join(status)

    (elsewhere / "app.py").write_text(textwrap.dedent("""
        from contextlib import asynccontextmanager

        from fastapi import FastAPI

        from langlearn import database
        from langlearn.models import Course


        @asynccontextmanager
        async def lifespan(app):
            async with database(migrate="check") as startup:
                app.state.version = startup.state.current
                yield


        app = FastAPI(lifespan=lifespan)


        @app.get("/health")
        async def health():
            return {"version": app.state.version, "courses": await Course.all().count()}
    """))
    with serving(venv, elsewhere, database) as base:
        answer = httpx.get(f"{base}/health", timeout=10)
        assert answer.status_code == 200
        assert answer.json()["version"] == HEAD and answer.json()["courses"] > 0
    imported = ok(run(python, "-c", "import langlearn; print(langlearn.__file__)", cwd=elsewhere))
    assert Path(imported.strip()).is_relative_to(venv)


def test_the_readmes_checkout_and_git_url_installs_install_this_checkout(tmp_path):
    """The README's other two ways in; dependencies left out (--no-deps): the wheel's test installs those."""
    workspace = workspace_with_checkout(tmp_path)
    commit = ok(run("git", "-C", REPO_ROOT, "rev-parse", "HEAD", cwd=tmp_path)).strip()
    local_git = f"git+file://localhost{REPO_ROOT}"  # pip 23 refuses a git+file URL without a host
    from_git = [argument.replace(README_GIT_URL, local_git).rsplit("@", 1)[0] + f"@{commit}"
                if README_GIT_URL in argument else argument for argument in readme_pip("git+")]
    for name, arguments in (("checkout", readme_pip(f"install ./{README_CHECKOUT}")), ("git", from_git)):
        venv = tmp_path / f"venv-{name}"
        ok(run(sys.executable, "-m", "venv", venv, cwd=tmp_path))
        ok(run(venv / "bin" / "python", "-m", "pip", *arguments, "--no-deps", "--quiet", cwd=workspace))
        files = ok(run(venv / "bin" / "python", "-c", textwrap.dedent("""
            from importlib.metadata import distribution
            print(sum(1 for f in distribution("langlearn-data").files if f.parts[:3] == ("langlearn", "migrations", "models")))
        """), cwd=tmp_path))
        assert int(files) >= len(history.version_files()), f"the {name} install lacks the migration history"


def test_a_database_migrated_and_seeded_by_the_code_before_the_package_is_at_head_with_no_finding(tmp_path, empty_db):
    old = tmp_path / "before"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", BEFORE_THE_PACKAGE], capture_output=True)
    assert archive.returncode == 0, f"commit {BEFORE_THE_PACKAGE} is needed (a full clone): {archive.stderr.decode()}"
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    old_code = {"DATABASE_URL": empty_db, "PYTHONPATH": str(old)}
    ok(run(sys.executable, "-m", "core", "upgrade", cwd=old, env=old_code))
    ok(run(sys.executable, "-m", "seed", "--no-progress", cwd=old, env=old_code))

    langlearn = Path(sys.executable).with_name("langlearn")
    env = {"DATABASE_URL": empty_db}
    status = ok(run(langlearn, "status", cwd=tmp_path, env=env))
    assert "unknown" not in status and "twice" not in status  # every version the old code recorded is known by name
    upgraded = ok(run(langlearn, "upgrade", cwd=tmp_path, env=env))
    newer = [version for version in history.version_files() if version not in OLD_HISTORY]
    assert upgraded.startswith(f"applied {len(newer)} migration(s); " if newer else "nothing to apply; ")
    assert ok(run(langlearn, "check", cwd=tmp_path, env=env)).strip() == f"database at {HEAD} (head); schema matches the models"
    assert ok(run(langlearn, "verify", cwd=tmp_path, env=env)).strip().endswith(": clean (schema, migrations, invariants)")
    again = run(langlearn, "seed", "--no-progress", cwd=tmp_path, env=env)
    assert again.returncode == 0 and "Nothing to do" in again.stdout, again.stderr


def readme_model() -> tuple[str, str]:
    """The README's model module: its path (the block's first line, a comment) and its text."""
    [block] = [block for block in readme_blocks("python") if block.startswith("# ") and "(Model)" in block]
    return block.splitlines()[0].removeprefix("# ").strip(), block


NOTE_ROUTES = '''

from langlearn.models import User
from notes_service.models import Note


@app.post("/users/{username}/notes")
async def write(username: str, text: str) -> dict[str, object]:
    user, _ = await User.get_or_create(username=username, defaults={"email": f"{username}@example.com", "hashed_password": "x"})
    note = await Note.create(user=user, body=text)
    return {"id": note.pk, "history": app.state.startup.states["notes"].current}


@app.get("/users/{username}/notes")
async def read(username: str) -> list[str]:
    return await Note.filter(user__username=username).order_by("id").values_list("body", flat=True)
'''


async def test_a_service_with_its_own_model_follows_the_readme_migrates_both_verifies_clean_and_serves(wheel, venv, tmp_path, empty_db, connect):
    """The README's recipe in the installed package: its model, its pyproject.toml, its commands, its hand edit and its
    startup code, in a service folder outside the checkout, on an empty database."""
    ok(run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[service]", cwd=tmp_path))  # uvicorn, fastapi

    def command(marker: str) -> str:  # the README's command, with the virtualenv's console script
        name, *arguments = readme_command(marker)
        return ok(run(venv / "bin" / name, *arguments, cwd=service, env={"DATABASE_URL": empty_db}))

    service = tmp_path / "notes-service"
    module, model = readme_model()
    (service / module).parent.mkdir(parents=True)
    (service / module).parent.joinpath("__init__.py").write_text("")
    (service / module).write_text(model)
    [pyproject] = readme_blocks("toml")
    (service / "pyproject.toml").write_text(pyproject)
    printed = ok(run(venv / "bin" / "langlearn", "migrations", "aerich-config", cwd=service))
    assert tomllib.loads(pyproject)["tool"]["aerich"] == tomllib.loads(printed)["tool"]["aerich"], "the README's [tool.aerich] is not what aerich-config prints"

    command("init-migrations")
    [first] = (service / "migrations" / "notes").glob("0_*.py")
    # the hand edit the README asks for: the empty downgrade returns the DROP TABLE it names
    [drop] = re.findall(r'`(DROP TABLE IF EXISTS "\w+";)`', readme_section())
    empty = 'async def downgrade(db: BaseDBAsyncClient) -> str:\n    return """\n        """'
    assert empty in first.read_text(), first.read_text()
    first.write_text(first.read_text().replace(empty, 'async def downgrade(db: BaseDBAsyncClient) -> str:\n'
                                                      '    # hand edit: Aerich writes no downgrade for a first migration\n'
                                                      f'    return """\n        {drop}"""'))
    upgrade = first.read_text().split("async def downgrade", 1)[0]
    [table] = re.findall(r'CREATE TABLE IF NOT EXISTS "(\w+)"', upgrade)  # its own table only, not the package's
    assert 'REFERENCES "users" ("id") ON DELETE CASCADE' in upgrade, upgrade

    both = f"database at {HEAD} (head); notes at {first.name} (head); schema matches the models"
    assert command("langlearn upgrade").strip() == f"applied {len(history.version_files()) + 1} migration(s); {both}"
    assert command("langlearn verify").strip().endswith(": clean (schema, migrations, invariants)")
    reverted = command("langlearn downgrade")
    assert reverted.startswith("reverted 1 migration(s); ") and "notes at no version, 1 pending" in reverted, reverted
    connection = await connect(empty_db)
    assert await connection.fetchval("SELECT to_regclass($1) IS NULL AND to_regclass('users') IS NOT NULL", table)  # its table, not ours
    applied = command("aerich --app notes upgrade")
    assert applied.strip() == f"Success upgrading to {first.name}"
    assert command("langlearn verify").strip().endswith(": clean (schema, migrations, invariants)")

    [startup] = [block for block in readme_blocks("python") if "async def lifespan" in block]
    (service / "app.py").write_text(startup + NOTE_ROUTES)
    with serving(venv, service, {"DATABASE_URL": empty_db}) as base:
        for text in ("first", "second"):
            written = httpx.post(f"{base}/users/ada/notes", params={"text": text}, timeout=10)
            assert written.status_code == 200, written.text
            assert written.json()["history"] == first.name
        assert httpx.get(f"{base}/users/ada/notes", timeout=10).json() == ["first", "second"]
