"""Password hashes for seeded accounts: always real argon2id hashes, never a password or a fast hash.

A real argon2id hash costs ~130 ms and 64 MiB by design, so hashing 20 000 accounts one by one
would take three quarters of an hour. Seeded accounts are not people, so they do not each need a
secret of their own: a handful of random secrets are hashed once per run (`POOL_SIZE` real hashes,
each with its own salt) and the accounts share them round-robin. Nobody knows those secrets, so no
seeded account can be signed into, which is what a load-test database wants; the hashes still have
the cost and format of real ones, so sign-in benchmarks measure the real verification.

Only the documented demo accounts (demo preset) get the demo password, each with its own salt.

Reproducibility: secrets and salts are derived from the seed (BLAKE2b), so two runs with one seed
store identical hashes and a resumed run matches an uninterrupted one. The price is that anyone
with the seed could recompute the pool's secrets; that is why the seed refuses production
databases, and why a forced run (`--force`) draws them from the OS instead and gives the demo
accounts no known password.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher

POOL_SIZE = 4


def _derived(seed: int, purpose: str, size: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{purpose}".encode(), digest_size=size).digest()


class Passwords:
    """`passwords(index)` is the stored hash of the account with that index."""

    def __init__(self, seed: int, *, demo_password: str | None, demo_accounts: int, unpredictable: bool) -> None:
        hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile

        def material(purpose: str, size: int) -> bytes:
            return secrets.token_bytes(size) if unpredictable else _derived(seed, purpose, size)

        self.pool = [
            hasher.hash(material(f"pool-secret:{i}", 32), salt=material(f"pool-salt:{i}", 16)) for i in range(POOL_SIZE)
        ]
        self.demo: list[str] = []
        if demo_password is not None and not unpredictable:
            self.demo = [hasher.hash(demo_password, salt=material(f"demo-salt:{i}", 16)) for i in range(demo_accounts)]

    def __call__(self, index: int) -> str:
        if index < len(self.demo):
            return self.demo[index]
        return self.pool[index % POOL_SIZE]
