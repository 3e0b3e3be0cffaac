"""Running ``d2s`` subcommands from the example scripts.

``d2s(...)`` runs a subcommand in this process through the same entry point as the shell command (so the
scripts do what a user typing the echoed command would do, without paying for a fresh Python and its imports
at every step) and returns the JSON object the command prints as its last line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """Send what native code writes to file descriptor 1 (PISA's indexing log) to stderr meanwhile, so that
    the script's stdout keeps only its tables and summary."""
    try:
        fd = sys.__stdout__.fileno()
        err = sys.__stderr__.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (e.g. an embedded interpreter)
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    os.dup2(err, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


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
    with _native_stdout_to_stderr(), contextlib.redirect_stdout(out):
        status = main(list(argv))
    lines = out.getvalue().strip().splitlines()
    if status != 0 or not lines:
        raise StepError(f"d2s {shlex.join(argv)} failed (exit status {status}); its error is above")
    return json.loads(lines[-1]), "\n".join(lines[:-1])
