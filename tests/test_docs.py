"""The documentation stays true: the generated schema page is current, links resolve, the README
stays a front page, every `langlearn` command the docs name exists, every Python snippet is valid in a
`.py` file (a whole script runs), the Aerich config and the environment variables named are real, and
the foreign-key query of migrations.md lists each constraint once."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
LANGLEARN = str(Path(sys.executable).with_name("langlearn"))  # the console script of the environment under test
README_MAX_LINES = 220

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
COMMAND = re.compile(r"(?<![\w./-])langlearn (?!import\b)([a-z][\w-]*)(?: ([a-z][\w-]*))?")


def schema_doc() -> ModuleType:
    """scripts/schema_doc.py, imported from its file (scripts/ is not a package)."""
    name = "langlearn_docs_schema_doc"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "schema_doc.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclass resolves annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


def split_markdown(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The prose lines, and the lines of fenced code blocks with each block's language."""
    prose: list[str] = []
    code: list[tuple[str, str]] = []
    language: str | None = None
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            language = line.strip()[3:].strip() if language is None else None
            continue
        if language is None:
            prose.append(line)
        else:
            code.append((language, line))
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    prose, _ = split_markdown(page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(page: Path) -> list[str]:
    prose, _ = split_markdown(page.read_text(encoding="utf-8"))
    text = INLINE_CODE.sub("", "\n".join(prose))
    return LINK.findall(text)


@cache
def subcommands(*parents: str) -> frozenset[str]:
    """The subcommands (or actions) `langlearn [parents] --help` lists."""
    result = subprocess.run([LANGLEARN, *parents, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return frozenset(re.findall(r"^ {4}([a-z][\w-]*)(?:\s|$)", section, re.MULTILINE))


def test_schema_page_is_what_the_models_generate():
    generated = schema_doc().render()
    page = REPO_ROOT / "docs" / "schema.md"
    current = page.read_text(encoding="utf-8") if page.exists() else ""
    assert current == generated, "docs/schema.md is stale (the models changed); run `python scripts/schema_doc.py` and commit it"


def test_schema_page_covers_every_table_and_enum_type():
    from langlearn.verify import expected_schema

    schema = expected_schema()
    page = (REPO_ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    assert {f"## {name}" for name in schema.tables} <= set(page.splitlines())
    assert all(f"| `{name}` |" in page for name in schema.enums)


def test_schema_doc_check_exits_1_with_one_line_when_stale(tmp_path, monkeypatch):
    module = schema_doc()
    stale = tmp_path / "schema.md"
    stale.write_text("# stale\n", encoding="utf-8")
    monkeypatch.setattr(module, "OUTPUT", stale)
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == module.render()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no heading #{anchor} in {destination.relative_to(REPO_ROOT)})")
    assert not broken, f"{page.relative_to(REPO_ROOT)} has broken links: {', '.join(broken)}"


def test_docs_exist_for_each_topic_the_readme_promises():
    names = {page.name for page in DOCS}
    assert {"migrations.md", "schema.md", "seed.md", "verification.md", "startup-and-deploy.md", "benchmarks.md",
            "troubleshooting.md", "testing.md"} <= names
    linked = {Path(target.partition("#")[0]).name for target in links(README)}
    assert names <= linked, f"docs/ pages the README does not link: {sorted(names - linked)}"


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it under {README_MAX_LINES} and move detail into docs/"


def readme_cli_table() -> list[str]:
    return re.findall(r"^\| `langlearn ([a-z][\w-]*)", README.read_text(encoding="utf-8"), re.MULTILINE)


def test_readme_cli_table_names_only_real_subcommands():
    listed = readme_cli_table()
    assert listed, "README.md has no CLI table (rows starting with | `langlearn ...`)"
    unknown = sorted(set(listed) - subcommands())
    assert not unknown, f"README's CLI table names subcommands `langlearn --help` does not list: {unknown}"


def test_readme_cli_table_lists_every_subcommand():
    missing = sorted(subcommands() - set(readme_cli_table()))
    assert not missing, f"README's CLI table lacks these subcommands of `langlearn --help`: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_langlearn_command_the_docs_show_exists(page):
    """`langlearn X [Y]` in inline code, in bash blocks and after a `$ ` prompt names a real command."""
    prose, code = split_markdown(page.read_text(encoding="utf-8"))
    shown = [span for line in prose for _, span in INLINE_CODE.findall(line)]
    shown += [line for language, line in code if language in ("bash", "sh", "shell", "yaml") or line.startswith("$ ")]
    wrong = set()
    for text in shown:
        for command, action in COMMAND.findall(text):
            if command not in subcommands():
                wrong.add(f"langlearn {command}")
            elif command in ("server", "db") and action and action not in subcommands(command):
                wrong.add(f"langlearn {command} {action}")
    assert not wrong, f"{page.relative_to(REPO_ROOT)} shows commands that do not exist: {sorted(wrong)}"


def code_blocks(page: Path, *languages: str) -> list[str]:
    """The text of each fenced block in one of `languages`, in page order."""
    blocks: list[str] = []
    language: str | None = None
    lines: list[str] = []
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            if language is None:
                language, lines = line.strip()[3:].strip(), []
            else:
                if language in languages:
                    blocks.append("\n".join(lines) + "\n")
                language = None
            continue
        if language is not None:
            lines.append(line)
    return blocks


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_python_snippet_is_valid_in_a_py_file(page):
    """No top-level `await` or `async with`: pasted into a file, each snippet compiles (names it borrows from the
    snippet before it may stay undefined)."""
    for number, block in enumerate(code_blocks(page, "python", "py"), 1):
        try:
            compile(block, f"{page.name}, python block {number}", "exec")
        except SyntaxError as error:
            pytest.fail(f"{page.relative_to(REPO_ROOT)}: python block {number} is not valid in a .py file: {error}\n{block}")


WHOLE_SCRIPTS = [
    pytest.param(block, id=f"{page.relative_to(REPO_ROOT)}-{number}")
    for page in PAGES
    for number, block in enumerate(code_blocks(page, "python", "py"), 1)
    if "asyncio.run(" in block
]


@pytest.mark.parametrize("script", WHOLE_SCRIPTS)
def test_a_python_snippet_that_is_a_whole_script_runs(script, head_db, tmp_path):
    path = tmp_path / "snippet.py"
    path.write_text(script, encoding="utf-8")
    environment = {**os.environ, "DATABASE_URL": head_db}
    result = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_aerich_config_the_docs_show_is_the_one_pyproject_sets():
    configured = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["aerich"]["tortoise_orm"]
    shown = {(page.name, value) for page in PAGES for value in re.findall(r'tortoise_orm = "([^"]+)"', page.read_text(encoding="utf-8"))}
    assert shown, "no page shows the [tool.aerich] table"
    assert {value for _, value in shown} == {configured}, f"pages show other configs than pyproject's {configured}: {sorted(shown)}"


def test_every_langlearn_environment_variable_the_docs_name_is_read_by_the_code():
    from langlearn.history.aerich import MigrationLimits

    named = {name for page in PAGES for name in re.findall(r"\bLANGLEARN_[A-Z_]+\b", page.read_text(encoding="utf-8"))}
    sources = "".join(
        path.read_text(encoding="utf-8")
        for folder in ("langlearn", "examples", "seed")
        for path in (REPO_ROOT / folder).rglob("*.py")
    )
    read = {name for name in named if name in sources} | {f"LANGLEARN_{field.upper()}" for field in vars(MigrationLimits())}
    assert named <= read, f"the docs name environment variables no code reads: {sorted(named - read)}"


def test_the_readmes_first_screen_says_both_runners_run_the_whole_history():
    intro = README.read_text(encoding="utf-8").split("## The two commands", 1)[0]
    for command in ("aerich upgrade", "aerich downgrade", "langlearn upgrade", "langlearn downgrade"):
        assert f"`{command}`" in intro, f"the README's intro does not name `{command}`"
    assert "whole" in intro and "history" in intro


def psql(database: str, command: str) -> str:
    from langlearn.local_server import psql_path

    result = subprocess.run([str(psql_path()), database, "-X", "-c", command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_foreign_key_query_lists_each_constraint_once_with_its_on_delete(head_db):
    """migrations.md's pg_constraint query, run as printed: one row per foreign key, its ON DELETE agreeing with its
    definition, every row the page shows among them; and the guide's query repeats a key of n columns n*n times."""
    page = (REPO_ROOT / "docs" / "migrations.md").read_text(encoding="utf-8")
    query = re.search(r'langlearn server psql -c "(SELECT conrelid::regclass.*?;)"', page, re.S)
    assert query, "migrations.md shows no pg_constraint query"
    output = psql(head_db, query.group(1))
    rows = [[cell.strip() for cell in line.split("|")] for line in output.splitlines() if line.count("|") == 3]
    keys = [(table, name) for table, name, _, _ in rows[1:]]
    assert keys and len(keys) == len(set(keys)), "a foreign key is listed twice"
    for _, name, definition, on_delete in rows[1:]:
        assert (f"ON DELETE {on_delete}" in definition) or (on_delete == "NO ACTION" and "ON DELETE" not in definition), name
    shown = page.split(query.group(0), 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    missing = [line for line in shown.splitlines() if line.count("|") == 3 and line not in output.splitlines()]
    assert not missing, f"rows migrations.md shows that the query does not return: {missing}"

    from tests.test_migrations import GUIDE_FK_QUERY

    guide_rows = [line for line in psql(head_db, GUIDE_FK_QUERY).splitlines() if line.count("|") == 2][1:]
    columns = {name: len(definition.split(") REFERENCES", 1)[0].split(",")) for _, name, definition, _ in rows[1:]}
    # a partitioned table's foreign key has a copy of the same name on each partition: the guide's joins by name multiply them
    copies = {name.strip(): int(count) for name, count in (line.split("|") for line in psql(
        head_db, "SELECT conname, count(*) AS copies FROM pg_constraint WHERE contype = 'f' GROUP BY conname").splitlines()[2:] if line.count("|") == 1)}
    assert len(guide_rows) == sum(n * n * copies[name] ** 3 for name, n in columns.items())
