"""Sign-in throttling per account and per client address, with its state in PostgreSQL, and the errors of load refused.

Every sign-in attempt is counted under two keys, in the table `sign_in_throttles` (so the limit holds
across the workers and replicas of a service, which share only the database):
- `account:<SHA-256 of the normalised email>`, for any email, registered or not: a 429 says nothing about
  whether an account exists, and the table holds no email in clear;
- `address:<client address>` (an IPv6 address by its /64, the block one subscriber gets), when known.

An attempt is counted *before* its password is verified, in one statement (`ADMIT`) that upserts both
rows unless one is blocked: concurrent guesses cannot all slip through before the first failure is
written (the row lock serialises them, account key first, then address: one lock order). The n-th
attempt of a key, from its `free`-th on, blocks that key for `first_wait` × 2^(n − free), at most
`longest_wait`: the next attempt inside that wait gets `SignInThrottled` (429) with the seconds left, and is
not counted against the blocked key. A count restarts after `forget_after` without attempts.

A successful sign-in forgives: its account's row is deleted, and its attempt no longer counts for the
address (an address keeps its count otherwise: one's own account signed into between guesses must not
reset the address). An attempt refused by the hashing pool (`Busy`) is uncounted for both keys.

Rows idle for `forget_after` are worthless; one sign-in in `PRUNE_EVERY` deletes up to `PRUNE_BATCH` of
them (one DELETE on the `last_attempt_at` index), so the table stays as small as the last hour's keys.

Round trips per sign-in: 1 (`ADMIT`), +1 when refused (the wait left), +1 on success (inside the sign-in's
transaction); the pruning's DELETE once in `PRUNE_EVERY`.

Limits (see docs/security.md): a per-account limit lets anyone delay an account's sign-ins (the price of
stopping guesses at it); a per-address limit hits everyone behind one NAT; an attacker with many addresses
is stopped only per account, and by the hashing pool's bound on the CPU a flood can take.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tortoise import connections

from langlearn.operations.errors import SignInThrottled

ACCOUNT, ADDRESS = "account:", "address:"
IPV6_SUBSCRIBER_PREFIX = 64
PRUNE_EVERY = 100  # sign-ins per pruning, on average
PRUNE_BATCH = 1000  # rows deleted by one pruning at most


@dataclass(frozen=True)
class Throttling:
    """How many attempts in a row a key gets before waits are imposed, and how the waits grow."""

    account_free: int = 5
    address_free: int = 30
    first_wait: timedelta = timedelta(seconds=2)
    longest_wait: timedelta = timedelta(minutes=15)
    forget_after: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if min(self.account_free, self.address_free) < 1:
            raise ValueError("a key gets at least one attempt before waiting")
        if not timedelta(0) < self.first_wait <= self.longest_wait < self.forget_after:
            raise ValueError("0 < first_wait <= longest_wait < forget_after (a blocked row is never pruned)")


@dataclass(frozen=True)
class SignInKeys:
    """The throttling keys of one attempt: the account's always, the address's when the client's is known."""

    account: str
    address: str | None

    @property
    def all(self) -> list[str]:
        return [self.account] if self.address is None else [self.account, self.address]  # the lock order: account first


def keys_for(email: str, address: str | None) -> SignInKeys:
    """`email` as the account is looked up (normalised), `address` a valid IP address or None."""
    account = ACCOUNT + hashlib.sha256(email.encode()).hexdigest()
    if address is None:
        return SignInKeys(account, None)
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return SignInKeys(account, f"{ADDRESS}{parsed.ipv4_mapped}")
        return SignInKeys(account, f"{ADDRESS}{ipaddress.ip_network(f'{parsed}/{IPV6_SUBSCRIBER_PREFIX}', strict=False)}")
    return SignInKeys(account, f"{ADDRESS}{parsed}")


# $1 keys, $2 account_free, $3 address_free, $4 first_wait, $5 longest_wait, $6 forget_after (seconds)
def _free(key: str) -> str:
    return f"CASE WHEN {key} LIKE '{ACCOUNT}%' THEN $2::int ELSE $3::int END"


def _blocked_until(attempts: str, key: str) -> str:
    return (f"CASE WHEN {attempts} >= {_free(key)} "
            f"THEN now() + make_interval(secs => least($5::float8, $4::float8 * 2 ^ least({attempts} - {_free(key)}, 30))) END")


_COUNTED = "CASE WHEN t.last_attempt_at > now() - make_interval(secs => $6::float8) THEN t.attempts + 1 ELSE 1 END"
ADMIT = f"""
INSERT INTO sign_in_throttles AS t (key, attempts, last_attempt_at, blocked_until)
SELECT k.key, 1, now(), {_blocked_until("1", "k.key")} FROM unnest($1::text[]) WITH ORDINALITY AS k(key, position) ORDER BY k.position
ON CONFLICT (key) DO UPDATE
SET attempts = {_COUNTED}, last_attempt_at = now(), blocked_until = {_blocked_until(_COUNTED, "t.key")}
WHERE t.blocked_until IS NULL OR t.blocked_until <= now()
RETURNING key
"""
WAIT_LEFT = "SELECT extract(epoch FROM max(blocked_until) - now()) AS seconds FROM sign_in_throttles WHERE key = ANY($1::text[])"
UNCOUNT = "UPDATE sign_in_throttles SET attempts = greatest(attempts - 1, 0) WHERE key = ANY($1::text[])"
FORGIVE = f"WITH forgiven AS (DELETE FROM sign_in_throttles WHERE key = $1) {UNCOUNT.replace('$1', '$2')}"
PRUNE = """
DELETE FROM sign_in_throttles WHERE key IN (
    SELECT key FROM sign_in_throttles WHERE last_attempt_at < now() - make_interval(secs => $1::float8) LIMIT $2
)
"""
THROTTLED_MESSAGE = "too many sign-in attempts for this account or from this address; retry after {seconds} s"


async def admit(keys: SignInKeys, throttling: Throttling) -> None:
    """Count this attempt under its keys, or raise `SignInThrottled` while one of them is blocked (that key's count stays)."""
    connection = connections.get("default")
    parameters: list[Any] = [keys.all, throttling.account_free, throttling.address_free, throttling.first_wait.total_seconds(),
                             throttling.longest_wait.total_seconds(), throttling.forget_after.total_seconds()]
    admitted = await connection.execute_query_dict(ADMIT, parameters)
    if random.randrange(PRUNE_EVERY) == 0:
        await prune(throttling.forget_after)
    if len(admitted) < len(keys.all):
        # a key admitted while another is blocked keeps its count: the attempt was made
        left = (await connection.execute_query_dict(WAIT_LEFT, [keys.all]))[0]["seconds"]
        seconds = max(1, math.ceil(left or 0))
        raise SignInThrottled(THROTTLED_MESSAGE.format(seconds=seconds), retry_after=seconds)


async def uncount(keys: SignInKeys) -> None:
    """Take back an attempt that was never judged (refused before its password was verified)."""
    await connections.get("default").execute_query(UNCOUNT, [keys.all])


async def forgive(connection: Any, keys: SignInKeys) -> None:
    """A successful sign-in: the account starts afresh; the address only stops counting this attempt."""
    await connection.execute_query(FORGIVE, [keys.account, [keys.address] if keys.address else []])


async def prune(forget_after: timedelta) -> int:
    """Delete up to `PRUNE_BATCH` rows idle for `forget_after` (their counts would restart anyway); how many went."""
    count, _ = await connections.get("default").execute_query(PRUNE, [forget_after.total_seconds(), PRUNE_BATCH])
    return int(count)
