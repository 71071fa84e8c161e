"""One exception base for everything this package refuses on purpose.

An embedding service writes one `except LanglearnError`; each CLI turns it into one line on stderr
and an exit code (`exit_code`: 1 refused or failed, 2 usage, configuration or unreachable server).
Every message is one line that names the problem and the fix, and never holds a password.
"""

from __future__ import annotations


class LanglearnError(Exception):
    """Base of every error this package raises on purpose; the message is one line.

    The message names things as a caller of the Python API sees them (`steps=0`, `archive=`); `command_line`, when
    given, is the same line as the `langlearn` command's user sees it (`--steps 0`, `--archive DIR`)."""

    exit_code = 1

    def __init__(self, *args: object, command_line: str | None = None) -> None:
        super().__init__(*args)
        self.command_line = command_line

    def for_command_line(self) -> str:
        """The message as the `langlearn` command prints it (naming its options and commands instead of arguments)."""
        return self.command_line or str(self)


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


def _whose(app: str | None) -> str:
    """The subject of a refusal about a history: the database (the package's), or a service's app's history in it."""
    return "database" if app is None else f"app {app!r} in the database"


class DatabaseBehind(StartupError):
    """The database lacks migrations this code has (`pending`, oldest first); `app`: a service's app, None for the package's."""

    def __init__(self, pending: tuple[str, ...], app: str | None = None) -> None:
        self.pending, self.app = pending, app
        super().__init__(f"{self._what()}; apply them with `langlearn upgrade`, or start with migrate='apply'")

    def _what(self) -> str:
        return f"{_whose(self.app)} is behind the code: {len(self.pending)} migration(s) pending, the first {self.pending[0]}"

    def for_command_line(self) -> str:
        return f"{self._what()}; run `langlearn upgrade` (`langlearn status` lists them)"


class DatabaseAhead(StartupError):
    """The database recorded migrations this code does not have (`unknown`); `app`: a service's app, None for the package's."""

    def __init__(self, unknown: tuple[str, ...], app: str | None = None) -> None:
        self.unknown, self.app = unknown, app
        super().__init__(
            f"{_whose(app)} is ahead of the code: it recorded {', '.join(unknown)}, which this code does not have; "
            "deploy the code that has it, or run `langlearn downgrade` with that code"
        )


class HistoryEdited(StartupError):
    """Applied migrations whose files changed since they ran (`versions`); the message names the first."""

    def __init__(self, message: str, versions: tuple[str, ...]) -> None:
        self.versions = versions
        super().__init__(message)


class MigrationLockTimeout(StartupError):
    """The migration lock (or another advisory lock) was not had within `waited` seconds; `holder` says who held it."""

    def __init__(self, message: str, waited: float, holder: str | None) -> None:
        self.waited, self.holder = waited, holder
        super().__init__(message)


class PlanChanged(StartupError):
    """The database changed between the plan a user confirmed and the run; nothing was done."""


class MigrationFailed(StartupError):
    """Migration `version` failed at statement `statement` (1-based) of `statements`; the database stays at `at`."""

    def __init__(self, message: str, version: str, statement: int, statements: int, at: str | None) -> None:
        self.version, self.statement, self.statements, self.at = version, statement, statements, at
        super().__init__(message)


class SchemaDrift(StartupError):
    """The live schema differs from the models; `findings` are the errors found (langlearn.verify.Finding)."""

    def __init__(self, message: str, findings: tuple[object, ...]) -> None:
        self.findings = findings
        super().__init__(message)


class SeedError(LanglearnError):
    """The seed refused or failed; the database is as it was, or resumable."""


class ContentDataError(SeedError):
    """A seed data file is missing or malformed; the message names the file and the field."""

    exit_code = 2
