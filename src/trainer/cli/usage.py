"""How every command ends on a user's mistake: one line on stderr, `COMMAND: error: ...`, and exit status 2 (the
status argparse and Hydra give a wrong command line), so that scripts and sweeps can tell a mistake from a
failure (1) or a signal (128 + its number). The checks raise UsageError; each command ends on it where Hydra
would otherwise add its own report (a callback, the job), and the Python API (python_api) lets it reach the
caller."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, NoReturn

USAGE_ERROR = 2


class UsageError(Exception):
    """A user's mistake, in the one line the command prints before exiting with status 2."""


def exit_with_usage_error(command: str, message: str) -> NoReturn:
    print(f"{command}: error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


@contextlib.contextmanager
def usage_errors_end(command: str) -> Iterator[None]:
    """A UsageError raised inside ends `command` in its one line and exit status 2."""
    try:
        yield
    except UsageError as error:
        exit_with_usage_error(command, str(error))
