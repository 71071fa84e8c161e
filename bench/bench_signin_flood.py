"""What a flood of wrong sign-ins does to everyone else: `GET /me` p99 alone, then under the flood, in one run.

    python bench/bench_signin_flood.py                       # 2 workers, 12 flooding clients, 10 s per phase
    python bench/bench_signin_flood.py --flooders 24 --seconds 20

Why: a sign-in costs an argon2id hash (~0.15 s of CPU) and needs no account, so wrong sign-ins are the
cheapest way to take the service's CPU. The flood here is the worst case for the hashing pool: every
request names a new unknown email and comes from a new address (`X-Forwarded-For`, trusted from the
loopback proxy address as uvicorn does by default), so the per-account and per-address throttling of
`langlearn.operations.throttle` never stops it; what bounds its cost is the hashing pool of
`langlearn.operations.accounts`.

The service runs under uvicorn as deployed (`--workers 2`) against a fresh database of its own on the
configured server (DATABASE_URL, else the private development server), migrated at start and dropped at
the end. A signed-in user sends `GET /me` back to back from `--readers` clients for `--seconds` with no
flood (the baseline), then again while `--flooders` clients send wrong sign-ins back to back. Printed:
p50 and p99 of each phase, the ratio of the p99s, and the flood's answers by status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench_operations import free_port, wait_until_up  # the same service handling as the write-path bench

from langlearn.databases import create_database, drop_database
from langlearn.settings import database_url

REPO_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "flood bench password 7"
REQUEST_TIMEOUT_SECONDS = 60.0


@dataclass
class Phase:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def start_service(url: str, port: int, workers: int, log_path: Path) -> subprocess.Popen[str]:
    environment = {**os.environ, "DATABASE_URL": url, "MIGRATE_ON_START": "apply", "LANGLEARN_SECRET_KEY": secrets.token_urlsafe(48)}
    with open(log_path, "w") as log:  # the child holds its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", "examples", "service.app:app", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--forwarded-allow-ips", "127.0.0.1", "--no-access-log", "--log-level", "warning"],
            cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, text=True,
        )


async def read_me(http: httpx.AsyncClient, token: str, until: float, phase: Phase) -> None:
    while time.perf_counter() < until:
        started = time.perf_counter()
        response = await http.get("/me", headers={"Authorization": f"Bearer {token}"})
        phase.latencies_ms.append((time.perf_counter() - started) * 1000)
        phase.statuses[response.status_code] += 1


async def flood(http: httpx.AsyncClient, stop: asyncio.Event, phase: Phase) -> None:
    """Wrong sign-ins back to back, each for a new unknown email from a new address (a botnet's spray)."""
    while not stop.is_set():
        address = f"198.51.{secrets.randbelow(256)}.{secrets.randbelow(256)}"
        body = {"email": f"nobody-{uuid.uuid4().hex[:12]}@example.com", "password": "wrong guess", "device_id": "x", "device_type": "web"}
        response = await http.post("/auth/token", json=body, headers={"X-Forwarded-For": address})
        phase.statuses[response.status_code] += 1
        if response.status_code in (429, 503):  # refused before any hashing: a client told to wait, waits a little
            await asyncio.sleep(0.05)


async def measure(http: httpx.AsyncClient, token: str, readers: int, seconds: float, flooders: int) -> tuple[Phase, Phase]:
    reads, floods = Phase(), Phase()
    stop = asyncio.Event()
    flooding = [asyncio.create_task(flood(http, stop, floods)) for _ in range(flooders)]
    if flooders:
        await asyncio.sleep(1.0)  # the flood under way before reading
    until = time.perf_counter() + seconds
    await asyncio.gather(*(read_me(http, token, until, reads) for _ in range(readers)))
    stop.set()
    await asyncio.gather(*flooding)
    return reads, floods


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2, as deployed)")
    parser.add_argument("--flooders", type=int, default=12, help="concurrent clients sending wrong sign-ins (default 12)")
    parser.add_argument("--readers", type=int, default=4, help="concurrent clients sending GET /me (default 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per phase (default 10)")
    args = parser.parse_args(argv)
    server = database_url()
    name = f"bench_signin_flood_{uuid.uuid4().hex[:8]}"
    url = await create_database(server, name)
    log_path = Path(tempfile.mkdtemp(prefix="bench-signin-flood-")) / "service.log"
    port = free_port()
    process = start_service(url, port, args.workers, log_path)
    try:
        limits = httpx.Limits(max_connections=args.readers + args.flooders + 4)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT_SECONDS, limits=limits) as http:
            await wait_until_up(http, process, log_path, timeout=90)  # two workers start
            email = f"flood-bench-{uuid.uuid4().hex[:8]}@example.com"
            registered = await http.post("/auth/register", json={"email": email, "username": email.split("@")[0], "password": PASSWORD})
            assert registered.status_code == 201, registered.text
            signed_in = await http.post("/auth/token", json={"email": email, "password": PASSWORD, "device_id": "bench", "device_type": "web"})
            assert signed_in.status_code == 200, signed_in.text
            token = signed_in.json()["access_token"]
            await measure(http, token, args.readers, 1.0, 0)  # warm-up: pools and caches filled
            baseline, _ = await measure(http, token, args.readers, args.seconds, 0)
            flooded, floods = await measure(http, token, args.readers, args.seconds, args.flooders)
    finally:
        process.terminate()
        process.wait(timeout=30)
        await drop_database(server, name, refuse_production=False)
    print(f"{args.workers} workers; {args.readers} clients reading GET /me for {args.seconds:g} s per phase; service log {log_path}")
    print("| phase | GET /me answered | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for label, phase in (("no flood", baseline), (f"{args.flooders} clients flooding wrong sign-ins", flooded)):
        print(f"| {label} | {dict(phase.statuses)} | {phase.percentile(0.5):.1f} | {phase.percentile(0.99):.1f} |")
    print(f"flood answers: {dict(sorted(floods.statuses.items()))} "
          f"({sum(floods.statuses.values()) / args.seconds:.1f} sign-ins/s)")
    print(f"GET /me p99 under the flood / without: {flooded.percentile(0.99) / baseline.percentile(0.99):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
