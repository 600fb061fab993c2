"""The one exception that reaches the user, and the one way a command prints it and exits.

Every command line of the project (`bench ...` and the `python -m bench.<wing>.<module>`
helpers the recipes call) ends the same way on bad input: `<prog>: <sentence>` on stderr and
exit status 2, no traceback; Ctrl-C prints `<prog>: interrupted` and exits 130.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input or an unusable environment; the message says what is wrong and what to do."""


def exit_status(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's body; its status, or 2 after printing a UserError, 130 on Ctrl-C."""
    try:
        return int(body() or 0)
    except UserError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
