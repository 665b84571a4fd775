"""How every command ends on a user's mistake: one line on stderr, `COMMAND: error: ...`, and exit status 2 (the
status argparse and Hydra give a wrong command line), so that scripts and sweeps can tell a mistake from a
failure (1) or a signal (128 + its number)."""

from __future__ import annotations

import sys
from typing import NoReturn

USAGE_ERROR = 2


def exit_with_usage_error(command: str, message: str) -> NoReturn:
    print(f"{command}: error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)
