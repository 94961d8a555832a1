"""Search spaces: the ``spaces/*.yaml`` files and their distributions (format: docs/spaces.md).

A space is data: a description, Hydra overrides it prefers, what it needs of the base mmdet config
(``requires``), an mmdet config fragment merged into every trial, and the parameters sampled per
trial, each keyed by a path in the mmdet config. A space file may ``extends:`` another and change
only what differs. Loading and checking a space imports no Ray (the spec validates spaces before Ray
starts, and a test checks it); only :func:`to_tune`, which converts a distribution to a Ray Tune
sampler, imports ``ray.tune``, when it is called.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from search.errors import UsageError, first_line, is_number as _is_number

SPACES_DIR = Path(__file__).resolve().parents[1] / 'spaces'
SPACE_KEYS = {'description', 'extends', 'overrides', 'requires', 'mmdet', 'params'}
KINDS = ('choice', 'uniform', 'loguniform', 'int')
FACTOR = '_factor'  # `loguniform_factor: [0.3, 3]`: a factor of the base config's own value at the path
ANY = '*'  # `requires: {path: '*'}`: the base config must have the path, whatever its value


@dataclass(frozen=True)
class Distribution:
    """One sampled parameter.

    Args:
        kind (str): ``choice``, ``uniform``, ``loguniform`` or ``int`` (both ends included).
        args (tuple): the values of a ``choice``, else ``(low, high)``.
        factor (bool): the values are factors of the base config's value at the parameter's path;
            :meth:`scaled` turns them into values before the search starts.
    """

    kind: str
    args: tuple
    factor: bool = False

    @property
    def low(self):
        return min(self.args) if self.kind == 'choice' else self.args[0]

    @property
    def high(self):
        return max(self.args) if self.kind == 'choice' else self.args[1]

    @property
    def structured(self) -> bool:
        """A choice among lists: search algorithms see them as JSON strings (:func:`to_tune`, :meth:`decode`)."""
        return self.kind == 'choice' and any(isinstance(v, tuple) for v in self.args)

    def decode(self, value):
        """The config value of a sampled ``value`` (undoes :func:`to_tune`'s JSON encoding of list choices)."""
        return json.loads(value) if self.structured and isinstance(value, str) else value

    def scaled(self, base: float) -> 'Distribution':
        """The distribution of ``factor x base``: the values a factor distribution stands for."""
        if not self.factor:
            return self
        if self.kind == 'choice':
            return Distribution('choice', tuple(_significant(v * base) for v in self.args))
        low, high = _significant(self.args[0] * base), _significant(self.args[1] * base)
        if self.kind == 'int':
            low, high = max(1, round(low)), max(1, round(high))
            return Distribution('int', (low, high)) if low < high else Distribution('choice', (low,))
        return Distribution(self.kind, (low, high))


@dataclass(frozen=True)
class Space:
    """A loaded, validated ``spaces/NAME.yaml``.

    Attributes:
        requires (dict): config path -> what the base config must hold there: a list of allowed
            values, ``'*'`` (anything), or a mapping base value -> the value the trials use (how a
            space switches its component on in the user's model, e.g. StandardRoIHead ->
            DynamicRCNNRoIHead).
    """

    name: str
    description: str
    overrides: tuple[str, ...] = ()
    requires: dict = field(default_factory=dict)
    mmdet: dict = field(default_factory=dict)
    params: dict[str, Distribution] = field(default_factory=dict)


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob('*.yaml'))


def is_space_file(name: str) -> bool:
    """``space=`` names a file (``my_space.yaml``, ``runs/x.yml``) rather than one of ``spaces/``."""
    return name.endswith(('.yaml', '.yml'))


def load_space(name: str, _seen: tuple[str, ...] = ()) -> Space:
    """Load and check ``spaces/<name>.yaml``, or the space file at path ``name`` (ending in .yaml or .yml).

    Any problem is a :class:`UsageError`.
    """
    path = _space_path(name)
    if str(path) in _seen:
        raise UsageError(f"space file {path} extends itself through {' -> '.join(_seen)}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        raise UsageError(f'space file {path} is not valid YAML: {first_line(err)}') from None
    if not isinstance(raw, dict):
        raise UsageError(f'space file {path} must be a mapping with keys {sorted(SPACE_KEYS)}')
    unknown = set(raw) - SPACE_KEYS
    if unknown:
        raise UsageError(f'space file {path} has unknown keys {sorted(unknown)}; allowed: {sorted(SPACE_KEYS)}')
    parent = None
    if raw.get('extends') is not None:
        if not isinstance(raw['extends'], str):
            raise UsageError(f"space file {path}: 'extends' names one space (a name in spaces/ or a .yaml path)")
        parent_name = raw['extends']
        if is_space_file(parent_name) and not Path(parent_name).expanduser().is_absolute():
            parent_name = str(path.parent / parent_name)  # relative to the file that extends it
        parent = load_space(parent_name, _seen + (str(path),))
    overrides = raw.get('overrides') or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and '=' in o for o in overrides):
        raise UsageError(f"space file {path}: 'overrides' must be a list of key=value strings")
    mmdet = raw.get('mmdet') or {}
    if not isinstance(mmdet, dict):
        raise UsageError(f"space file {path}: 'mmdet' must be a mapping (a fragment of an mmdet config)")
    requires = _parse_requires(raw.get('requires') or {}, path)
    params = raw.get('params') or {}
    if not isinstance(params, dict):
        raise UsageError(f"space file {path}: 'params' must map config paths to distributions")
    # In a space that extends another, `path: null` drops the parent's parameter.
    parsed = {str(key): None if spec is None and parent else parse_distribution(str(key), spec, where=str(path))
              for key, spec in params.items()}
    space = Space(name=path.stem, description=str(raw.get('description', '')), overrides=tuple(overrides),
                  requires=requires, mmdet=mmdet, params={k: v for k, v in parsed.items() if v is not None})
    if parent is None:
        return space
    from search.mmdet_config import merge

    merged = {k: v for k, v in {**parent.params, **parsed}.items() if v is not None}
    return replace(space, description=space.description or parent.description,
                   overrides=tuple(overrides) if 'overrides' in raw else parent.overrides,
                   requires={**parent.requires, **requires}, mmdet=merge(parent.mmdet, mmdet), params=merged)


def _space_path(name: str) -> Path:
    if is_space_file(name):  # a user's own space outside the repo
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f'space file {path} does not exist')
        return path
    names = available_spaces()
    if name not in names:
        raise UsageError(f"unknown space '{name}': choose one of {', '.join(names)} (files in {SPACES_DIR}),"
                         f" or give the path of a .yaml file")
    return SPACES_DIR / f'{name}.yaml'


def _parse_requires(requires: Any, path: Path) -> dict:
    if not isinstance(requires, dict):
        raise UsageError(f"space file {path}: 'requires' must map config paths to allowed values")
    out = {}
    for key, allowed in requires.items():
        if allowed == ANY:
            out[str(key)] = ANY
        elif isinstance(allowed, list) and allowed and all(isinstance(v, str) for v in allowed):
            out[str(key)] = tuple(allowed)
        elif isinstance(allowed, dict) and allowed and all(isinstance(k, str) and isinstance(v, str)
                                                           for k, v in allowed.items()):
            out[str(key)] = dict(allowed)
        else:
            raise UsageError(f"space file {path}: requires '{key}' must be '*', a list of allowed values, or a "
                             f'mapping base value -> value the trials use; got {allowed!r}')
    return out


def parse_distribution(key: str, spec: Any, where: str = 'space') -> Distribution:
    """Parse ``{kind: args}`` (or ``{kind_factor: args}``) into a :class:`Distribution`; bad ranges name the rule."""
    prefix = f"{where}: parameter '{key}'"
    kinds = ', '.join(KINDS + tuple(k + FACTOR for k in KINDS))
    if not isinstance(spec, dict) or len(spec) != 1:
        raise UsageError(f'{prefix} must be one of {{{": ..., ".join(KINDS)}: ...}}, got {spec!r}')
    name, args = next(iter(spec.items()))
    factor = isinstance(name, str) and name.endswith(FACTOR)
    kind = name[:-len(FACTOR)] if factor else name
    if kind not in KINDS:
        raise UsageError(f"{prefix}: unknown distribution '{name}', choose one of {kinds}")
    if not isinstance(args, list) or not args:
        raise UsageError(f'{prefix}: {name} needs a non-empty list, got {args!r}')
    if kind == 'choice':
        if factor and not all(_is_number(v) and v > 0 for v in args):
            raise UsageError(f'{prefix}: choice_factor needs factors > 0, got {args!r}')
        return Distribution(kind, tuple(_freeze(v) for v in args), factor)
    if len(args) != 2 or not all(_is_number(v) for v in args):
        raise UsageError(f'{prefix}: {name} needs [low, high] numbers, got {args!r}')
    low, high = args
    if not low < high:
        raise UsageError(f'{prefix}: {name} needs low < high, got low={low} high={high}')
    if (kind == 'loguniform' or factor) and low <= 0:
        raise UsageError(f'{prefix}: {name} needs low > 0, got low={low}')
    if kind == 'int' and not factor:
        if not (float(low).is_integer() and float(high).is_integer()):
            raise UsageError(f'{prefix}: int needs whole-number bounds, got {args!r}')
        low, high = int(low), int(high)
    return Distribution(kind, (low, high), factor)


def to_tune(dist: Distribution, grid: bool = False):
    """The Ray Tune sampler for ``dist`` (a grid axis when ``grid`` is set).

    Choices among lists are offered as their JSON text, since Optuna's categorical distributions
    hold only scalars; :meth:`Distribution.decode` turns a sampled text back into the list.
    """
    from ray import tune

    if dist.factor:
        raise ValueError('a factor distribution must be scaled (Distribution.scaled) before it is sampled')
    values = [json.dumps(_thaw(v)) if dist.structured else _thaw(v) for v in dist.args]
    if grid:
        if dist.kind != 'choice':
            raise UsageError(f'search_alg=grid needs every parameter to be a choice, got {dist.kind}{list(dist.args)}')
        return tune.grid_search(values)
    if dist.kind == 'choice':
        return tune.choice(values)
    if dist.kind == 'uniform':
        return tune.uniform(*dist.args)
    if dist.kind == 'loguniform':
        return tune.loguniform(*dist.args)
    return tune.randint(dist.args[0], dist.args[1] + 1)  # Ray's upper bound is exclusive


def lowest(dist: Distribution):
    """The distribution's lowest value (a choice's first), as a config value."""
    return _thaw(dist.args[0]) if dist.kind == 'choice' else dist.low


def highest(dist: Distribution):
    """The distribution's highest value (a choice's last), as a config value."""
    return _thaw(dist.args[-1]) if dist.kind == 'choice' else dist.high


def _significant(value: float) -> float:
    """``value`` to 6 significant digits: 0.3 x 0.004 is 0.0012, not 0.0012000000000000001."""
    return float(f'{value:.6g}')


def _freeze(value):
    """Lists inside a choice become tuples so a Distribution is hashable."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _thaw(value):
    return [_thaw(v) for v in value] if isinstance(value, tuple) else copy.deepcopy(value)
