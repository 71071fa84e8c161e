"""Type-check (mypy --strict) and layer-check (import-linter) the package as it installs.

The repo keeps `models/`, `seed/` and `migrations/` at its top level and setuptools' `package-dir`
maps them onto `langlearn.models`, `langlearn.seed` and `langlearn.migrations`. An editable install
resolves that mapping with an import hook, which neither mypy nor import-linter follows, so this
lays the package out as it installs, in `build/package-view/` (symlinks to the real files, read
from `[tool.setuptools]` in pyproject.toml), runs both tools there and prints the real paths.

    python scripts/package_checks.py          # both; exit 1 when either finds something
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIEW = ROOT / "build" / "package-view"


def lay_out_view() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shutil.rmtree(VIEW, ignore_errors=True)
    for package in setuptools["packages"]:
        parent = next((name for name in sorted(setuptools["package-dir"], key=len, reverse=True)
                       if package == name or package.startswith(name + ".")), None)
        source = ROOT / setuptools["package-dir"][parent] / package[len(parent) + 1:].replace(".", "/") if parent else ROOT / package.replace(".", "/")
        target = VIEW / package.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for path in [*source.glob("*.py"), *source.glob("py.typed")]:
            (target / path.name).symlink_to(path)


def real_paths(output: str) -> str:
    """Rewrite `langlearn/models/users.py:12:` (a path in the view) as `models/users.py:12:`."""
    def real(match: re.Match[str]) -> str:
        path = VIEW / match.group(1)
        return os.path.relpath(path.resolve(), ROOT) if path.exists() else match.group(1)

    return re.sub(r"^(langlearn/[\w/]+\.py)", real, output, flags=re.MULTILINE)


def run(title: str, command: list[str]) -> int:
    result = subprocess.run(command, cwd=VIEW, env={**os.environ, "PYTHONPATH": str(VIEW)}, capture_output=True, text=True)
    print(f"== {title}: {'ok' if result.returncode == 0 else 'FAILED'}")
    if result.returncode != 0 or "-v" in sys.argv:
        print(real_paths(result.stdout + result.stderr).rstrip())
    return result.returncode


def main() -> int:
    lay_out_view()
    config = str(ROOT / "pyproject.toml")
    bin_dir = Path(sys.executable).parent
    failures = [
        run("mypy --strict", [str(bin_dir / "mypy"), "--config-file", config, "-p", "langlearn"]),
        run("import-linter", [str(bin_dir / "lint-imports"), config]),
    ]
    return 1 if any(failures) else 0


if __name__ == "__main__":
    sys.exit(main())
