"""The write path: async domain operations on Tortoise, each one transaction, safe under concurrency by construction.

    accounts   register, sign in, refresh tokens rotated per device with reuse detection, logout
    lessons    complete a lesson: graded on the server, everything it moves in one transaction
    wallet     earn, spend, purchase, activate an item; idempotent by the client's key
    ledger     a wallet's statement: balance, totals and the ledger in keyset pages
    reviews    review a word: the SM-2 step of the rule book, and the day's review session
    social     follow, unfollow, the feed of the people followed (keyset pages)
    leagues    close a week: final ranks, promotions and demotions, rewards; safe to run twice or at once

Each operation runs inside an initialised Tortoise context (`langlearn.startup.database()`), takes
row locks or single-statement conditional updates (never a read-modify-write race), and raises an
`OperationError` whose `code` is the one the HTTP contract names (`insufficient_gems`, …).

The contract, with no web framework in it, is `langlearn.operations.errors`: every refusal's kind,
its HTTP status (`HTTP_STATUS`, `status_of`) and, for the kinds worth retrying, `retry_after`; and
`database_refusal`, which names what the driver raises when the database cannot serve a request (a
lost connection: `Unavailable`; a row lock not granted within the pool's `lock_timeout`: `Busy`).
docs/write-path.md lists every operation's signature with its refusals.

With hot standbys (`langlearn.routing`): every transaction runs on the primary (`in_transaction(PRIMARY)`), the
reads outside transactions (ledger, feed) take `routing.reader()`, and each write operation's result carries
`lsn`, the primary's WAL position after its COMMIT (two round trips more: the query and the pool's reset of its
connection), for `routing.read_after`.
"""
