"""The one exception type for bad user input, the small checks that raise it, and holding stderr.

A usage error is exactly one line on stderr however late it is found: ``run.py`` holds what
Python writes to stderr (import warnings of torch and mmcv, Ray's start-up log) while the search is
validated and set up, drops it when a :class:`UsageError` ends the run, and writes it out when
training starts (``release_stderr``, called by the driver) or anything else ends the run.
"""
import math
import sys


class UsageError(ValueError):
    """Bad input from the user (command line, space file, dataset, machine).

    ``run.py`` prints it as one line and exits with code 2, before Ray or any training starts.
    The message names the problem and the fix.
    """

    def __init__(self, message: str):
        # One line whatever the message quotes (a key, a file name with a newline in it).
        super().__init__(' '.join(str(message).splitlines()))


def reject_unknown_options(what: str, options: dict, allowed: set) -> None:
    """Raise if ``options`` has keys outside ``allowed``: a misspelt option is an error, never dropped."""
    extra = set(options) - set(allowed)
    if extra:
        raise UsageError(f"{what} has no option(s) {sorted(extra)}; allowed: {sorted(allowed) or 'none'}")


def is_file(path) -> bool:
    """Whether ``path`` is a file; False, not an OSError, for a name the file system cannot hold."""
    from pathlib import Path

    try:
        return Path(path).is_file()
    except OSError:  # e.g. a name longer than the file system allows
        return False


def existing_file(value, key: str):
    """``value`` as an absolute ``Path`` of an existing file, or a UsageError naming ``key``."""
    from pathlib import Path

    path = Path(str(value)).expanduser().resolve()
    if not is_file(path):
        raise UsageError(f'{key} {path} does not exist')
    return path


def first_line(err: Exception) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors.

    Hydra puts the hint of a failed override ("Key 'x' is not in struct") on the second line, so that
    line is kept with the first.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return ' '.join(lines[:2]) if lines[0].startswith('Could not override') else lines[0]


def is_number(value) -> bool:
    """A finite int or float (not a bool; an int too large for a float is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class _HeldStderr:
    """Stands in for ``sys.stderr``: keeps what is written until :meth:`release`, then passes it through.

    Logging handlers created meanwhile (torch's, Ray's) keep this object as their stream, so after
    the release it forwards every write to the real stderr. Anything writing to the file descriptor
    itself (``fileno()``, child processes, tracebacks of a crash after the release) is not held.
    """

    def __init__(self, target):
        self._target = target
        self._held: list[str] | None = []

    def write(self, text: str) -> int:
        if self._held is None:
            return self._target.write(text)
        self._held.append(text)
        return len(text)

    def flush(self) -> None:
        if self._held is None:
            self._target.flush()

    def release(self, keep: bool) -> None:
        held, self._held = self._held, None
        if held and keep:
            self._target.write(''.join(held))
            self._target.flush()

    def __getattr__(self, name):  # encoding, fileno, isatty, ... of the real stream
        return getattr(self._target, name)


_held_stderr: _HeldStderr | None = None


def hold_stderr() -> None:
    """Hold what is written to ``sys.stderr`` from now until :func:`release_stderr`."""
    global _held_stderr
    if _held_stderr is None:
        _held_stderr = _HeldStderr(sys.stderr)
        sys.stderr = _held_stderr


def release_stderr(keep: bool = True) -> None:
    """Write out (``keep``) or drop what was held, and give ``sys.stderr`` back; a no-op when nothing is held."""
    global _held_stderr
    held, _held_stderr = _held_stderr, None
    if held is not None:
        if sys.stderr is held:
            sys.stderr = held._target
        held.release(keep)
