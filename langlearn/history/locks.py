"""Which table lock each migration statement takes, as PostgreSQL's documentation lists them, for a reviewer.

`langlearn migrations sql --review` notes each statement's lock (and what it blocks while held) so a
release can be judged without knowing the lock table by heart. The rules follow the PostgreSQL manual's
"Explicit Locking" and each command's page (ALTER TABLE takes the strongest lock of its subcommands);
they read the statement's head, not a parse tree, so anything they do not recognise is reported as
such ("read it") rather than guessed. Row locks and waits are not modelled: a lock here is what the
statement asks for, and how long it is held depends on the rows and on the transaction it runs in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlparse

# what other sessions cannot do while each mode is held (ordinary reads, writes, and schema changes)
BLOCKS = {
    "ACCESS EXCLUSIVE": "blocks reads and writes",
    "EXCLUSIVE": "blocks writes",
    "SHARE ROW EXCLUSIVE": "blocks writes",
    "SHARE": "blocks writes",
    "SHARE UPDATE EXCLUSIVE": "reads and writes go on; blocks schema changes and VACUUM",
    "ROW EXCLUSIVE": "reads and writes go on; locks the rows it writes",
}
STRENGTH = ["ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"]

IDENTIFIER = r'(?:"(?:[^"]|"")+"|[\w$]+)'  # quoted (a doubled quote inside) or not
NAME = rf"{IDENTIFIER}(?:\.{IDENTIFIER})?"  # schema-qualified or not
ALTER_TABLE = re.compile(rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{NAME})\s*(?P<rest>.*)$", re.I | re.S)
CREATE_INDEX = re.compile(
    rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?P<concurrently>CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?:{NAME}\s+)?ON\s+(?:ONLY\s+)?(?P<table>{NAME})",
    re.I | re.S,
)
DROP_INDEX = re.compile(rf"^DROP\s+INDEX\s+(?P<concurrently>CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?(?P<index>{NAME})", re.I)
DROP_TABLE = re.compile(rf"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<table>{NAME}(?:\s*,\s*{NAME})*)", re.I)
CREATE_TABLE = re.compile(rf"^CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<table>{NAME})(?P<rest>.*)$", re.I | re.S)
PARTITION_OF = re.compile(rf"\bPARTITION\s+OF\s+(?P<parent>{NAME})", re.I)
REFERENCES = re.compile(rf"\bREFERENCES\s+(?P<table>{NAME})", re.I)
COMMENT_ON = re.compile(rf"^COMMENT\s+ON\s+(?:TABLE\s+(?P<table>{NAME})|COLUMN\s+(?P<column>{NAME})\.[\w\"$]+)", re.I)
WRITE = re.compile(rf"^(?:WITH\b.*?\)\s*)?(?:UPDATE\s+(?:ONLY\s+)?|DELETE\s+FROM\s+(?:ONLY\s+)?|INSERT\s+INTO\s+)(?P<table>{NAME})", re.I | re.S)
NO_TABLE_LOCK = re.compile(
    r"^(?:CREATE\s+TYPE|ALTER\s+TYPE|DROP\s+TYPE|CREATE\s+SEQUENCE|DROP\s+SEQUENCE|SET\b|RESET\b|SELECT\s+set_config\b"
    r"|CREATE\s+EXTENSION|CREATE\s+SCHEMA)",
    re.I,
)
DO_BLOCK = re.compile(r"^DO\b", re.I)

# ALTER TABLE subcommands weaker than ACCESS EXCLUSIVE (anything else takes ACCESS EXCLUSIVE)
ALTER_TABLE_WEAKER = (
    (re.compile(r"\bVALIDATE\s+CONSTRAINT\b", re.I), "SHARE UPDATE EXCLUSIVE"),
    (re.compile(r"\bDETACH\s+PARTITION\b.*\bCONCURRENTLY\b|\bDETACH\s+PARTITION\b.*\bFINALIZE\b", re.I | re.S), "SHARE UPDATE EXCLUSIVE"),
    (re.compile(r"\bATTACH\s+PARTITION\b", re.I), "SHARE UPDATE EXCLUSIVE"),
    (re.compile(r"\bADD\s+(?:CONSTRAINT\s+\S+\s+)?FOREIGN\s+KEY\b", re.I), "SHARE ROW EXCLUSIVE"),
    (re.compile(r"\bSET\s+STATISTICS\b|\bSET\s*\(|\bRESET\s*\(|\bCLUSTER\s+ON\b|\bSET\s+WITHOUT\s+CLUSTER\b", re.I), "SHARE UPDATE EXCLUSIVE"),
)


# outside a transaction, the runners send it partition by partition on a partitioned table (partitionwise.py)
CONCURRENT_BUILD = "built without blocking writes (partition by partition on a partitioned table)"
CONCURRENT_DROP = "a partitioned table's index is dropped plainly instead: ACCESS EXCLUSIVE for milliseconds, catalog only"


def unquoted(name: str) -> str:
    return name.replace('"', "")


@dataclass(frozen=True)
class Lock:
    """A table lock a statement asks for."""

    mode: str  # PostgreSQL's name, e.g. "ACCESS EXCLUSIVE"
    relation: str  # the table (or, for DROP INDEX, "the table of <index>") it is taken on, unquoted

    def __post_init__(self) -> None:
        object.__setattr__(self, "relation", unquoted(self.relation))

    def __str__(self) -> str:
        return f"{self.mode} on {self.relation} ({BLOCKS[self.mode]})"


@dataclass(frozen=True)
class LockNote:
    """What a reviewer reads above a statement: its locks, or why it has none, or that it is not classified."""

    locks: tuple[Lock, ...] = ()
    remark: str = ""

    def __str__(self) -> str:
        shown = "; ".join(str(lock) for lock in self.locks)
        return "; ".join(part for part in (shown, self.remark) if part)


def lock_note(statement: str) -> LockNote:
    """The table locks `statement` asks for."""
    text = " ".join(sqlparse.format(statement, strip_comments=True).split())
    if not text or NO_TABLE_LOCK.match(text):
        return LockNote(remark="no table lock")
    if match := ALTER_TABLE.match(text):
        return LockNote(_alter_table(match["table"], match["rest"]))
    if match := CREATE_INDEX.match(text):
        return LockNote((Lock("SHARE UPDATE EXCLUSIVE" if match["concurrently"] else "SHARE", match["table"]),),
                        CONCURRENT_BUILD if match["concurrently"] else "")
    if match := DROP_INDEX.match(text):
        mode = "SHARE UPDATE EXCLUSIVE" if match["concurrently"] else "ACCESS EXCLUSIVE"
        return LockNote((Lock(mode, f"the table of {match['index']}"),), CONCURRENT_DROP if match["concurrently"] else "")
    if match := DROP_TABLE.match(text):
        return LockNote(tuple(Lock("ACCESS EXCLUSIVE", name.strip()) for name in match["table"].split(",")))
    if match := CREATE_TABLE.match(text):
        parent = PARTITION_OF.search(match["rest"])
        locks = [Lock("ACCESS EXCLUSIVE", parent["parent"])] if parent else []
        locks += [Lock("SHARE ROW EXCLUSIVE", name) for name in dict.fromkeys(REFERENCES.findall(match["rest"]))]
        return LockNote(tuple(locks), f"a new table {unquoted(match['table'])}")
    if match := COMMENT_ON.match(text):
        table = match["table"] or match["column"]
        return LockNote((Lock("SHARE UPDATE EXCLUSIVE", table),))
    if DO_BLOCK.match(text):
        return LockNote(remark="a DO block: the locks of the statements in its body, held until it ends; read it")
    if match := WRITE.match(text):
        return LockNote((Lock("ROW EXCLUSIVE", match["table"]),), "writes rows: its time grows with the rows it touches")
    return LockNote(remark="not classified: read it")


def _alter_table(table: str, rest: str) -> tuple[Lock, ...]:
    """ALTER TABLE takes the strongest lock among its subcommands; a new foreign key also locks the table it references."""
    subcommands = [part.strip() for part in _top_level_commas(rest) if part.strip()]
    modes = [next((mode for pattern, mode in ALTER_TABLE_WEAKER if pattern.search(part)), "ACCESS EXCLUSIVE") for part in subcommands]
    locks = [Lock(max(modes or ["ACCESS EXCLUSIVE"], key=STRENGTH.index), table)]
    locks += [Lock("SHARE ROW EXCLUSIVE", name) for name in dict.fromkeys(REFERENCES.findall(rest)) if name != table]
    attached = re.search(rf"\bATTACH\s+PARTITION\s+(?P<partition>{NAME})", rest, re.I)
    if attached:
        locks.append(Lock("ACCESS EXCLUSIVE", attached["partition"]))
    return tuple(locks)


def _top_level_commas(text: str) -> list[str]:
    """`text` split at the commas outside parentheses and quotes (ALTER TABLE's subcommand separators)."""
    parts, depth, start, quote = [], 0, 0, ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    return [*parts, text[start:]]
