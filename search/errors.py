"""The one exception type for bad user input, and the small checks that raise it."""
import math


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


def is_number(value) -> bool:
    """A finite int or float (not a bool; an int too large for a float is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
