"""One exception base for everything this package refuses on purpose.

An embedding service writes one `except LanglearnError`; each CLI turns it into one line on stderr
and an exit code (`exit_code`: 1 refused or failed, 2 usage, configuration or unreachable server).
Every message is one line that names the problem and the fix, and never holds a password.
"""

from __future__ import annotations


class LanglearnError(Exception):
    """Base of every error this package raises on purpose; the message is one line."""

    exit_code = 1

    def for_command_line(self) -> str:
        """The message as the `langlearn` command prints it (a subclass may name commands instead of arguments)."""
        return str(self)


class ConfigError(LanglearnError):
    """The database configuration is unusable or the server unreachable; the message says what to change."""

    exit_code = 2


class UsageError(LanglearnError):
    """A bad command line or argument; the message names the option and what it accepts."""

    exit_code = 2


class NotConfirmed(LanglearnError):
    """A command that deletes or overwrites data was not confirmed (no --yes, or not answered yes): refused, nothing done."""


class Interrupted(LanglearnError):
    """A command stopped by SIGINT or SIGTERM; the message says where it stopped and how to resume."""

    exit_code = 130


class StartupError(LanglearnError):
    """The service must not start (wrong schema, lock not obtained, failed migration)."""


class DatabaseBehind(StartupError):
    """The database lacks migrations this code has (`pending`, oldest first)."""

    def __init__(self, pending: tuple[str, ...]) -> None:
        self.pending = pending
        super().__init__(f"{self._what()}; apply them with `langlearn upgrade`, or start with migrate='apply'")

    def _what(self) -> str:
        return f"database is behind the code: {len(self.pending)} migration(s) pending, the first {self.pending[0]}"

    def for_command_line(self) -> str:
        return f"{self._what()}; run `langlearn upgrade` (`langlearn status` lists them)"


class SeedError(LanglearnError):
    """The seed refused or failed; the database is as it was, or resumable."""


class ContentDataError(SeedError):
    """A seed data file is missing or malformed; the message names the file and the field."""

    exit_code = 2
