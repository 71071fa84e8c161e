"""The HTTP contract the package ships: each refusal's status, the driver errors that mean "the database could not
serve this", and the one-line startup refusal for uvicorn's log (langlearn.logs). No web framework, no database."""

from __future__ import annotations

import logging
import traceback

import asyncpg
import pytest
from tortoise.exceptions import TransactionManagementError

from langlearn.errors import ConfigError, Interrupted, StartupError
from langlearn.logs import OneLineRefusal
from langlearn.operations import errors
from langlearn.operations.errors import Busy, Unavailable, database_refusal, status_of


@pytest.mark.parametrize(("error", "status"), [
    (errors.InvalidRequest("x"), 400), (errors.TokenReused("x"), 401), (errors.Forbidden("x"), 403), (errors.NotFound("x"), 404),
    (errors.InsufficientGems("x"), 409), (errors.WeekClosed("x"), 409), (errors.Throttled("x"), 429), (Unavailable("x"), 503),
    (Busy("x"), 503), (errors.OperationError("x"), 400),
])
def test_every_refusal_has_its_status(error, status):
    assert status_of(error) == status
    assert (error.retry_after is not None) == (status in {429, 503})  # what a client may retry says when


def test_every_refusal_the_package_defines_has_a_status_and_a_code():
    kinds = {value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, errors.OperationError)}
    for kind in kinds - {errors.OperationError, errors.Conflict, errors.Unauthorized}:
        assert kind.code != errors.OperationError.code, kind
    assert all(200 < status_of(kind("x")) < 600 for kind in kinds)


def raised_while_handling(first: BaseException, then: BaseException) -> BaseException:
    try:
        try:
            raise first
        except BaseException:
            raise then  # noqa: B904  # implicit chaining, as a rollback's failure after a lost connection
    except BaseException as error:
        return error


@pytest.mark.parametrize("error", [
    ConnectionResetError(), TimeoutError(), asyncpg.ConnectionDoesNotExistError("closed in the middle"), asyncpg.AdminShutdownError(""),
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.IdleInTransactionSessionTimeoutError(""),
    raised_while_handling(asyncpg.InternalClientError("state"), asyncpg.InterfaceError("cannot call Transaction.rollback()")),
    raised_while_handling(asyncpg.IdleInTransactionSessionTimeoutError(""), TransactionManagementError("translated")),
])
def test_a_lost_connection_is_unavailable(error):
    refusal = database_refusal(error)
    assert isinstance(refusal, Unavailable) and status_of(refusal) == 503 and refusal.retry_after == 5


@pytest.mark.parametrize("error", [asyncpg.LockNotAvailableError("canceling statement due to lock timeout"),
                                   asyncpg.DeadlockDetectedError(""), asyncpg.SerializationError("")])
def test_a_lock_not_granted_or_a_conflict_aborted_is_busy(error):
    refusal = database_refusal(error)
    assert isinstance(refusal, Busy) and refusal.code == "busy" and status_of(refusal) == 503 and refusal.retry_after == 2


@pytest.mark.parametrize("error", [asyncpg.InterfaceError("cannot call Connection.fetch(): connection has been released back to the pool"),
                                   asyncpg.UniqueViolationError(""), ValueError("a bug")])
def test_anything_else_is_no_refusal_but_a_bug(error):
    assert database_refusal(error) is None


# --- the one-line startup refusal -------------------------------------------------------------------------


def traceback_text(error: BaseException) -> str:
    """What Starlette sends uvicorn in `lifespan.startup.failed`: the formatted traceback."""
    try:
        raise error
    except BaseException:
        return traceback.format_exc()


def logged(message: str) -> str:
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, message, None, None)
    assert OneLineRefusal().filter(record)  # never drops a record
    return record.getMessage()


@pytest.mark.parametrize("error", [
    StartupError("database is behind the code: 2 migration(s) pending; run `langlearn upgrade` first"),
    ConfigError("LANGLEARN_POOL_SIZE='0' is not a whole number of at least 1; set it like 5, or unset it"),
    Interrupted("interrupted"),  # a LanglearnError whose name does not end in Error
    errors.Taken("the email is taken"),
])
def test_a_refusal_of_the_package_is_logged_as_its_one_line(error):
    assert logged(traceback_text(error)) == f"{type(error).__module__}.{type(error).__name__}: {error}"


def test_any_other_traceback_is_logged_whole():
    text = traceback_text(ValueError("a bug"))
    assert logged(text) == text
    fake = text.replace("ValueError: a bug", "langlearn.errors.NoSuchError: not a class of the package")
    assert logged(fake) == fake  # a name is not enough: the class must be a LanglearnError
    assert logged("Application startup failed. Exiting.") == "Application startup failed. Exiting."
