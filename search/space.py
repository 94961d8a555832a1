"""Search spaces: the ``spaces/*.yaml`` files and their distributions (format: docs/spaces.md).

A space is data: a description, Hydra overrides it prefers, an mmdet config fragment merged into
every trial, and the parameters sampled per trial, each keyed by a path in the mmdet config.
Converting a distribution to Ray Tune is a pure function (:func:`to_tune`) so tests need no Ray.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from search.errors import UsageError, is_number as _is_number

SPACES_DIR = Path(__file__).resolve().parents[1] / 'spaces'
SPACE_KEYS = {'description', 'overrides', 'mmdet', 'params'}
KINDS = ('choice', 'uniform', 'loguniform', 'int')


@dataclass(frozen=True)
class Distribution:
    """One sampled parameter.

    Args:
        kind (str): ``choice``, ``uniform``, ``loguniform`` or ``int`` (both ends included).
        args (tuple): the values of a ``choice``, else ``(low, high)``.
    """

    kind: str
    args: tuple

    @property
    def low(self):
        return min(self.args) if self.kind == 'choice' else self.args[0]

    @property
    def high(self):
        return max(self.args) if self.kind == 'choice' else self.args[1]


@dataclass(frozen=True)
class Space:
    """A loaded, validated ``spaces/NAME.yaml``."""

    name: str
    description: str
    overrides: tuple[str, ...] = ()
    mmdet: dict = field(default_factory=dict)
    params: dict[str, Distribution] = field(default_factory=dict)


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob('*.yaml'))


def is_space_file(name: str) -> bool:
    """``space=`` names a file (``my_space.yaml``, ``runs/x.yml``) rather than one of ``spaces/``."""
    return name.endswith(('.yaml', '.yml'))


def load_space(name: str) -> Space:
    """Load and check ``spaces/<name>.yaml``, or the space file at path ``name`` (ending in .yaml or .yml).

    Any problem is a :class:`UsageError`.
    """
    if is_space_file(name):  # a user's own space outside the repo
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f'space file {path} does not exist')
        name = path.stem
    else:
        names = available_spaces()
        if name not in names:
            raise UsageError(f"unknown space '{name}': choose one of {', '.join(names)} (files in {SPACES_DIR}),"
                             f" or give the path of a .yaml file")
        path = SPACES_DIR / f'{name}.yaml'
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        raise UsageError(f'space file {path} is not valid YAML: {_first_line(err)}') from None
    if not isinstance(raw, dict):
        raise UsageError(f'space file {path} must be a mapping with keys {sorted(SPACE_KEYS)}')
    unknown = set(raw) - SPACE_KEYS
    if unknown:
        raise UsageError(f'space file {path} has unknown keys {sorted(unknown)}; allowed: {sorted(SPACE_KEYS)}')
    overrides = raw.get('overrides') or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and '=' in o for o in overrides):
        raise UsageError(f"space file {path}: 'overrides' must be a list of key=value strings")
    mmdet = raw.get('mmdet') or {}
    if not isinstance(mmdet, dict):
        raise UsageError(f"space file {path}: 'mmdet' must be a mapping (a fragment of an mmdet config)")
    params = raw.get('params') or {}
    if not isinstance(params, dict):
        raise UsageError(f"space file {path}: 'params' must map config paths to distributions")
    parsed = {str(key): parse_distribution(str(key), spec, where=str(path)) for key, spec in params.items()}
    return Space(name=name, description=str(raw.get('description', '')), overrides=tuple(overrides),
                 mmdet=mmdet, params=parsed)


def parse_distribution(key: str, spec: Any, where: str = 'space') -> Distribution:
    """Parse ``{kind: args}`` into a :class:`Distribution`, rejecting invalid ranges with the rule broken."""
    prefix = f"{where}: parameter '{key}'"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise UsageError(f'{prefix} must be one of {{{": ..., ".join(KINDS)}: ...}}, got {spec!r}')
    kind, args = next(iter(spec.items()))
    if kind not in KINDS:
        raise UsageError(f"{prefix}: unknown distribution '{kind}', choose one of {', '.join(KINDS)}")
    if not isinstance(args, list) or not args:
        raise UsageError(f'{prefix}: {kind} needs a non-empty list, got {args!r}')
    if kind == 'choice':
        return Distribution(kind, tuple(_freeze(v) for v in args))
    if len(args) != 2 or not all(_is_number(v) for v in args):
        raise UsageError(f'{prefix}: {kind} needs [low, high] numbers, got {args!r}')
    low, high = args
    if not low < high:
        raise UsageError(f'{prefix}: {kind} needs low < high, got low={low} high={high}')
    if kind == 'loguniform' and low <= 0:
        raise UsageError(f'{prefix}: loguniform needs low > 0, got low={low}')
    if kind == 'int' and not (float(low).is_integer() and float(high).is_integer()):
        raise UsageError(f'{prefix}: int needs whole-number bounds, got {args!r}')
    if kind == 'int':
        low, high = int(low), int(high)
    return Distribution(kind, (low, high))


def to_tune(dist: Distribution, grid: bool = False):
    """The Ray Tune sampler for ``dist`` (a grid axis when ``grid`` is set)."""
    from ray import tune

    if grid:
        if dist.kind != 'choice':
            raise UsageError(f'search_alg=grid needs every parameter to be a choice, got {dist.kind}{list(dist.args)}')
        return tune.grid_search([_thaw(v) for v in dist.args])
    if dist.kind == 'choice':
        return tune.choice([_thaw(v) for v in dist.args])
    if dist.kind == 'uniform':
        return tune.uniform(*dist.args)
    if dist.kind == 'loguniform':
        return tune.loguniform(*dist.args)
    return tune.randint(dist.args[0], dist.args[1] + 1)  # Ray's upper bound is exclusive


def _freeze(value):
    """Lists inside a choice become tuples so a Distribution is hashable."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _thaw(value):
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
