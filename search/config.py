"""Compose the search configuration from Hydra overrides.

``space=NAME`` is a plain key: the space's own ``overrides`` (e.g. ``model=faster_rcnn``) are
applied first and the user's overrides after them, so the user always wins. Every problem becomes
a one-line :class:`UsageError` instead of Hydra's multi-line report.
"""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from search.errors import UsageError
from search.space import load_space

CONF_DIR = Path(__file__).resolve().parent / 'conf'
GROUPS = ('model', 'backbone', 'data', 'scheduler', 'search_alg')


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob('*.yaml'))


def compose_config(overrides: list[str]) -> DictConfig:
    """Return the composed config for command-line ``overrides`` (``key=value`` strings)."""
    for item in overrides:
        if '=' not in item or not _key(item):
            raise UsageError(f"'{item}' is not an override: write key=value, e.g. space=dbf num_samples=8")
    user_keys = {_key(o) for o in overrides}
    _check_groups(overrides)
    space_name = next((o.split('=', 1)[1] for o in reversed(overrides) if _key(o) == 'space'), None)
    if space_name is None:
        space_name = OmegaConf.load(CONF_DIR / 'config.yaml').space
    space = load_space(space_name)
    from_space = [o for o in space.overrides if _key(o) not in user_keys]
    _check_groups(from_space)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name='config', overrides=from_space + list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as err:  # Hydra raises ValueError for some overrides
        raise UsageError(f'bad override: {_first_line(err)}') from None


def _check_groups(overrides: list[str]) -> None:
    for item in overrides:
        key, value = item.split('=', 1)
        key = key.lstrip('+~')
        if key in GROUPS:
            options = group_options(key)
            if value not in options:
                raise UsageError(f"unknown {key} '{value}': choose one of {', '.join(options)}")


def _key(override: str) -> str:
    return override.split('=', 1)[0].lstrip('+~')


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    # Hydra puts the hint ("Key 'x' is not in struct", "To append ... use +x=...") on line 2.
    return ' '.join(lines[:2]) if lines[0].startswith('Could not override') else lines[0]
