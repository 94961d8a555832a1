"""A config section that picks one implementation by name and sets its options (``scheduler:``,
``search_alg:``), checked by one rule before Ray starts.

A section's table maps each name to its options, and each option to ``(check, default)``; a check
takes the option's full name (``scheduler.grace_period``) and the value, and returns the value or
raises :class:`UsageError`. An unknown name or option is an error, never dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from search.errors import UsageError, reject_unknown_options

Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Settings:
    """A validated section: the implementation's name and all its options, defaults filled in."""

    name: str
    options: dict


def validate_section(section_name: str, section: dict, table: dict[str, dict[str, tuple[Check, Any]]]) -> tuple[str, dict]:
    """(name, checked options) of ``section``, against ``table``."""
    options = dict(section)
    name = options.pop('name')
    if not isinstance(name, str) or name not in table:
        raise UsageError(f"unknown {section_name} '{name}': choose one of {', '.join(table)}")
    reject_unknown_options(f'{section_name} {name}', options, set(table[name]))
    return name, {key: check(f'{section_name}.{key}', options.get(key, default))
                  for key, (check, default) in table[name].items()}


def whole(low: int) -> Check:
    """A check: a whole number >= ``low`` (a bool is not one)."""
    def check(key, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f'{key} must be a whole number >= {low}, got {value!r}')
        return value
    return check
