"""Running ``d2s`` subcommands from the example scripts.

``d2s(...)`` runs a subcommand in this process through the same entry point as the shell command (so the
scripts do what a user typing the echoed command would do, without paying for a fresh Python and its imports
at every step) and returns the JSON object the command prints as its last line.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
from typing import Any


class StepError(RuntimeError):
    """A ``d2s`` step failed; the command's own message has been printed on stderr."""


def d2s(*argv: str, echo: bool = True) -> tuple[Any, str]:
    """Run ``d2s ARGV``: (the JSON of its last stdout line, the stdout before that line).

    Progress bars and error messages go to stderr as usual; a failure raises :class:`StepError`.
    """
    from pyterrier_d2s.cli import main

    if echo:
        print("$ d2s " + shlex.join(argv), file=sys.stderr, flush=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(argv))
    lines = out.getvalue().strip().splitlines()
    if status != 0 or not lines:
        raise StepError(f"d2s {shlex.join(argv)} failed (exit status {status}); its error is above")
    return json.loads(lines[-1]), "\n".join(lines[:-1])
