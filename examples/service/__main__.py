"""The service's runner: uvicorn with the settings a deployment needs, whatever uvicorn's defaults are.

    PYTHONPATH=examples python -m service --host 0.0.0.0 --port 8000 --workers 4

- No `server: uvicorn` header: the banner names the server (and so its known flaws) to every client.
- Client addresses (sign-in records `last_login_ip`) come from the connection, not from
  `X-Forwarded-For`, unless `FORWARDED_ALLOW_IPS` lists the proxies to believe (addresses or
  networks, comma-separated; uvicorn's own variable). Plain uvicorn believes any client of
  127.0.0.1 by default, so any local process, or a proxy that passes the header through, could
  name whatever address it liked.

Every other setting (the database, the startup mode, the keys) is the app's, read from the
environment (`service.app`, docs/security.md).
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import uvicorn

from langlearn import LanglearnError

APP = "service.app:app"
APP_DIR = str(Path(__file__).resolve().parents[1])  # examples/: the workers import `service` from there
TRUSTED_PROXIES_VARIABLE = "FORWARDED_ALLOW_IPS"


def trusted_proxies() -> list[str]:
    return [address.strip() for address in os.environ.get(TRUSTED_PROXIES_VARIABLE, "").split(",") if address.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the example service with uvicorn.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True, help="log each request's line (default: on)")
    options = parser.parse_args()
    try:
        importlib.import_module(APP.partition(":")[0])  # reads every knob of the app: a bad one is its one line, not an import traceback
    except LanglearnError as error:
        raise SystemExit(f"error: {error}") from None
    proxies = trusted_proxies()
    uvicorn.run(
        APP,
        app_dir=APP_DIR,
        host=options.host,
        port=options.port,
        workers=options.workers,
        access_log=options.access_log,
        server_header=False,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


if __name__ == "__main__":
    main()
