"""What every ``tuned-lens`` command shares: its logging set-up and its one error handler.

``tuned-lens train``, ``eval`` and ``demo`` each run through :func:`run_command`, so a user
error looks the same in all of them: one line on stderr naming the command, exit status 2, no
traceback. Anything that is not a user error is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping

from tuned_lens.errors import TunedLensError

__all__ = ["EXIT_USER_ERROR", "configure_logging", "run_command", "user_message"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# The library's user errors, and errors of the user's environment rather than of the library:
# a path that does not exist or cannot be written, a file where a folder was expected.
_USER_ERRORS: tuple[type[Exception], ...] = (
    TunedLensError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def configure_logging(level: str) -> None:
    """Send the library's own log records to stderr at ``level``; everyone else's at WARNING.

    The root logger is left alone (at WARNING), so INFO chatter of third-party packages
    (kaleido, choreographer, httpx, ...) never reaches the terminal.

    Args:
        level: A logging level name (``"INFO"``, ``"DEBUG"``, ...).
    """
    rank = os.environ.get("LOCAL_RANK")
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if rank is not None:
        fmt = f"[rank {rank}] " + fmt
    ours = logging.getLogger("tuned_lens")
    for handler in list(ours.handlers):
        if getattr(handler, "_tuned_lens_cli", False):
            ours.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    handler._tuned_lens_cli = True  # type: ignore[attr-defined]
    ours.addHandler(handler)
    ours.setLevel(getattr(logging, level.upper()))
    ours.propagate = False
    logging.getLogger().setLevel(logging.WARNING)


def user_message(err: BaseException, flags: Mapping[str, str] | None = None) -> str:
    """The text of a user error, with the option it names spelled as the user typed it.

    Library code names options by their Python names (``text_column``); a command line spells
    them its own way (``--text_column`` for train, ``--text-column`` for the demo). An
    :class:`~tuned_lens.errors.InvalidInputError` raised with ``option=`` gets that name
    replaced by ``flags[option]``.

    Args:
        err: The exception.
        flags: Python option name -> the flag as this command spells it.

    Returns:
        One line of text.
    """
    message = str(err)
    option = getattr(err, "option", None)
    if flags and option and option in flags:
        message = message.replace(option, flags[option], 1)
    if isinstance(err, OSError) and err.filename is not None and not message:
        message = f"{err.strerror}: {err.filename}"
    return " ".join(message.split()) or type(err).__name__


def run_command(
    command: str,
    body: Callable[[], int],
    *,
    flags: Mapping[str, str] | None = None,
    debug: bool = False,
) -> int:
    """Run one command's body with the one error policy of the command line.

    Args:
        command: The command's name, for the message (``"train"``, ``"eval"``, ``"demo"``).
        body: Does the work and returns the exit status.
        flags: Python option name -> flag spelling, for :func:`user_message`.
        debug: Re-raise user errors too (``--log_level DEBUG``), to see their traceback.

    Returns:
        The body's exit status; 2 after a user error; 130 after Ctrl-C.
    """
    try:
        return body()
    except KeyboardInterrupt:
        print(f"tuned-lens {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _USER_ERRORS as err:
        if debug:
            raise
        print(f"tuned-lens {command}: error: {user_message(err, flags)}", file=sys.stderr)
        return EXIT_USER_ERROR
