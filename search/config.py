"""Compose the search configuration from Hydra overrides.

Three kinds of override reach the composed config, in increasing precedence:

1. presets underneath the user's own: the space's ``overrides`` (e.g. ``base=faster_rcnn``) and, with
   ``smoke=true``, the smoke test's sizes; each applies only where the user typed nothing for that key;
2. the user's Hydra overrides (``key=value`` on search/conf/config.yaml);
3. ``cfg.PATH=VALUE``: a key of the base mmdet config to change, kept apart in ``cfg_options``
   (mmdet's ``--cfg-options``; values are parsed with Hydra's grammar).

Every problem becomes a one-line :class:`UsageError` instead of Hydra's multi-line report.
"""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from search.errors import UsageError, first_line
from search.space import load_space

CONF_DIR = Path(__file__).resolve().parent / 'conf'
GROUPS = ('backbone', 'data', 'scheduler', 'search_alg')
CFG_PREFIX = 'cfg.'
# smoke=true: a complete search small enough for tests and a first try; the user's own overrides win.
SMOKE = ('num_samples=2', 'max_epochs=2', 'train.img_scale=[160,160]', 'train.warmup_iters=5')
SMOKE_EMBEDDED = ('data.num_train=16', 'data.num_val=8', 'data.min_size=128', 'data.max_size=160')


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob('*.yaml'))


def compose_config(overrides: list[str]) -> DictConfig:
    """Return the composed config for command-line ``overrides`` (``key=value`` strings)."""
    for item in overrides:
        if '=' not in item or not _key(item):
            raise UsageError(f"'{item}' is not an override: write key=value, e.g. space=dbf num_samples=8")
    cfg_options = parse_cfg_options([o for o in overrides if _key(o).startswith(CFG_PREFIX)])
    overrides = [o for o in overrides if not _key(o).startswith(CFG_PREFIX)]
    if any(_key(o) == 'model' for o in overrides):
        raise UsageError("model= is now base=: write base=retinanet|faster_rcnn|fcos, base=PATH.py or "
                         "base=mmdet::<model-zoo config>")
    defaults = OmegaConf.load(CONF_DIR / 'config.yaml')
    typed = {_key(o): o.split('=', 1)[1] for o in overrides}
    space = load_space(typed.get('space', defaults.space))
    presets = [o for o in space.overrides if _key(o) not in typed]
    presets += _own_scheduler(typed, presets)
    if _is_true(typed.get('smoke', 'false')):
        presets += _smoke_overrides(typed, space_overrides=presets, defaults=defaults)
    from search.mmdet_config import is_preset

    base = {**dict(_pair(o) for o in presets), **typed}.get('base', defaults.base)
    if 'data' not in typed and not is_preset(str(base)):
        presets.append('data=base')  # a config of the user's or the model zoo keeps its own datasets
    presets = [o for o in presets if _key(o) not in typed]
    _check_groups(presets + overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name='config', overrides=presets + overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as err:  # Hydra raises ValueError for some overrides
        raise UsageError(f'bad override: {first_line(err)}') from None
    OmegaConf.set_struct(cfg, False)
    cfg.cfg_options = cfg_options
    OmegaConf.set_struct(cfg, True)
    return cfg


def parse_cfg_options(items: list[str]) -> dict:
    """``cfg.PATH=VALUE`` overrides -> {PATH: value}, values parsed with Hydra's grammar (null, lists, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    options = {}
    for item in items:
        key, text = item.split('=', 1)
        path = key[len(CFG_PREFIX):]
        if not path:
            raise UsageError(f"'{item}': write cfg.PATH=VALUE with a key of the base mmdet config, e.g. "
                             'cfg.model.backbone.init_cfg=null')
        try:
            options[path] = parser.parse_overrides([f'x={text}'])[0].value()
        except Exception as err:  # noqa: BLE001  (Hydra's grammar errors have several types)
            raise UsageError(f"'{item}': the value does not parse ({first_line(err)})") from None
    return options


def _smoke_overrides(typed: dict, space_overrides: list[str], defaults) -> list[str]:
    chosen = {**dict(_pair(o) for o in space_overrides), **typed}
    out = list(SMOKE)
    if chosen.get('search_alg', _default_option(defaults, 'search_alg')) == 'grid':
        out[0] = 'num_samples=1'  # a grid already gives several trials; repeating it would not make a smoke test
    from search.mmdet_config import is_preset

    if chosen.get('data', 'embedded' if is_preset(str(chosen.get('base', defaults.base))) else 'base') == 'embedded':
        out += SMOKE_EMBEDDED
    return out


# A search algorithm that works with one scheduler only picks it when the user names none.
OWN_SCHEDULER = {'bohb': 'bohb'}


def _own_scheduler(typed: dict, space_overrides: list[str]) -> list[str]:
    """``scheduler=X`` for a search algorithm that needs scheduler X, unless a scheduler was chosen.

    A scheduler the user names stays: spec.py rejects a pair that cannot work (``search_alg=bohb
    scheduler=pbt``) with one line, rather than replacing the user's choice silently.
    """
    chosen = {**dict(_pair(o) for o in space_overrides), **typed}
    own = OWN_SCHEDULER.get(chosen.get('search_alg', ''))
    return [f'scheduler={own}'] if own and 'scheduler' not in chosen else []


def _default_option(defaults, group: str) -> str:
    """The option config.yaml's defaults list picks for ``group``."""
    entries = OmegaConf.to_container(defaults.defaults)
    return next(entry[group] for entry in entries if isinstance(entry, dict) and group in entry)


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


def _pair(override: str) -> tuple[str, str]:
    return _key(override), override.split('=', 1)[1]


def _is_true(text: str) -> bool:
    return str(text).strip().lower() == 'true'
