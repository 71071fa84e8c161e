# Sourced by scripts/run and scripts/test: make .venv (a supported Python, the project installed
# editable with its test extra) and re-install only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

supported() {  # pgserver (the private server) ships wheels for CPython 3.11 and 3.12
    "$1" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null
}

if [ ! -x .venv/bin/python ] || ! supported .venv/bin/python; then
    python=""
    for candidate in "${PYTHON:-}" python3.12 python3.11 python3; do
        if [ -n "$candidate" ] && command -v "$candidate" >/dev/null && supported "$candidate"; then
            python="$candidate"; break
        fi
    done
    if [ -z "$python" ]; then
        echo "error: no Python 3.11 or 3.12 found; install one or set PYTHON=/path/to/python3.12" >&2
        exit 2
    fi
    rm -rf .venv
    "$python" -m venv .venv
fi

stamp=$(sha256sum pyproject.toml | cut -c1-64)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
    echo "Installing the project into .venv ..." >&2
    if ! { .venv/bin/python -m pip install --upgrade pip && .venv/bin/python -m pip install -e ".[test]"; } > .venv/install.log 2>&1; then
        tail -n 30 .venv/install.log >&2
        echo "error: installing the project failed; the full log is .venv/install.log" >&2
        exit 1
    fi
    echo "$stamp" > .venv/.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
