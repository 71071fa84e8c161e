"""The migration that makes usernames NFKC-normalised, on a populated database: backfill, and a refusal that names its fix."""

from __future__ import annotations

import pytest

from langlearn import history
from langlearn.errors import LanglearnError

VERSIONS = history.version_files()
MIGRATION = next(name for name in VERSIONS if name.endswith("_sign_in_throttling_and_username_nfkc.py"))
BEFORE = VERSIONS[VERSIONS.index(MIGRATION) - 1]
INSERT = "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, 'x')"


async def test_existing_usernames_are_normalised_and_the_check_holds_after_the_upgrade(empty_db, connect):
    await history.upgrade(empty_db, to=BEFORE)
    connection = await connect(empty_db)
    await connection.execute(INSERT, "wide@example.com", "ｗｉｄｅ")  # fullwidth, allowed before
    await connection.execute(INSERT, "kelvin@example.com", "\u212aelvin")
    await connection.execute(INSERT, "plain@example.com", "Plain.Name")

    await history.upgrade(empty_db)

    assert [row["username"] for row in await connection.fetch("SELECT username FROM users ORDER BY email")] == ["Kelvin", "Plain.Name", "wide"]
    assert await connection.fetchval("SELECT convalidated FROM pg_constraint WHERE conname = 'users_username_nfkc_check'") is True
    await history.downgrade(empty_db, to=BEFORE)  # the way back drops the CHECK and the table, and keeps the names
    assert await connection.fetchval("SELECT count(*) FROM pg_constraint WHERE conname = 'users_username_nfkc_check'") == 0
    assert await connection.fetchval("SELECT to_regclass('sign_in_throttles')") is None


async def test_two_usernames_that_become_one_are_refused_by_name_with_the_fix_and_nothing_changes(empty_db, connect):
    await history.upgrade(empty_db, to=BEFORE)
    connection = await connect(empty_db)
    await connection.execute(INSERT, "bob@example.com", "bob")
    await connection.execute(INSERT, "wide@example.com", "ＢＯＢ")  # distinct under lower() in a C-locale database, one name under NFKC

    with pytest.raises(LanglearnError) as refused:
        await history.upgrade(empty_db)

    message = str(refused.value)
    assert "'bob'" in message and "'ＢＯＢ'" in message and "are one name once NFKC-normalised" in message
    assert "UPDATE users SET username = '<new name>' WHERE id = '<its id>'" in message and "upgrade again" in message
    assert sorted(row["username"] for row in await connection.fetch("SELECT username FROM users")) == ["bob", "ＢＯＢ"]
    assert await connection.fetchval("SELECT to_regclass('sign_in_throttles')") is None

    await connection.execute("UPDATE users SET username = 'bob2' WHERE email = 'wide@example.com'")  # the fix the message names
    await history.upgrade(empty_db)
    assert (await history.read_state(connection)).at_head
