"""Logging for a service on the package: a refused startup in one line.

A web server logs a failed startup's whole traceback: uvicorn gets it as text, in the ASGI
`lifespan.startup.failed` message Starlette sends, and writes it to `uvicorn.error`. When the
exception is one of the package's refusals on purpose (a `LanglearnError`: a database behind the
code, a missing setting), its message is one line naming the problem and the fix, and the frames
around it only bury it. `OneLineRefusal` keeps that line; any other traceback (a bug) stays whole.

    logging.getLogger("uvicorn.error").addFilter(OneLineRefusal())
"""

from __future__ import annotations

import logging
import re
import sys

from langlearn.errors import LanglearnError

# the last line of a traceback: `module.path.ClassName: message`
EXCEPTION_LINE = re.compile(r"^(?P<module>langlearn(?:\.\w+)*)\.(?P<name>\w+): .*$")


def refusal_line(text: str) -> str | None:
    """The last line of a traceback's text when the exception it ends with is a LanglearnError; None otherwise."""
    if not text.startswith("Traceback"):
        return None
    last = text.rstrip().splitlines()[-1]
    match = EXCEPTION_LINE.match(last)
    if match is None:
        return None
    # the class is named by the module that defines it, which raising it imported
    kind = getattr(sys.modules.get(match["module"]), match["name"], None)
    return last if isinstance(kind, type) and issubclass(kind, LanglearnError) else None


class OneLineRefusal(logging.Filter):
    """Shortens a record whose message is a traceback ending in a LanglearnError to that last line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if line := refusal_line(record.getMessage()):
            record.msg, record.args = line, None
        return True
