"""Turn the composed Hydra config into a validated :class:`SearchSpec`.

Every user error is found here, before Ray starts: unknown names were caught by
``search.config``; here come ranges, the dataset, the machine, the experiment folder, and a dry
run that writes the lowest value of every parameter into the trial config and builds the detector.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from search.errors import UsageError, is_number as _is_number
from search.mmdet_config import build_base_config, build_trial_config, get_path
from search.space import Distribution, Space, is_space_file, load_space

# What smoke=true changes: a complete search small enough for tests and a first try (docs: README).
SMOKE = dict(num_samples=2, max_epochs=2, img_scale=[160, 160], num_train=16, num_val=8, min_size=128,
             max_size=160, warmup_iters=5)
MAX_EPOCHS_PATH = 'runner.max_epochs'
# What build_spec reads from the group sections; the rest of the config must have config.yaml's keys.
GROUP_KEYS = {'model': {'mmdet': {}}, 'backbone': {'mmdet': {}, 'out_channels': None},
              'data': dict.fromkeys(('name', 'root', 'train_ann', 'val_ann', 'img_prefix')),
              'scheduler': {'name': None}, 'search_alg': {'name': None}}


@dataclass(frozen=True)
class TrialSpec:
    """What every trial needs: the shared mmdet config and which of its paths are sampled."""

    base_config: dict
    param_paths: tuple[str, ...]
    cpus_per_trial: float
    gpus_per_trial: float  # a share of one GPU; with gpus_per_trial=auto the driver sets it from a probe


@dataclass(frozen=True)
class SearchSpec:
    """A validated search: what to sample, how to schedule it, where to write it."""

    space: Space
    params: dict[str, Distribution]
    trial: TrialSpec
    scheduler: dict
    search_alg: dict
    num_samples: int
    max_epochs: int
    metric: str
    mode: str
    seed: int
    objectives: tuple[str, ...]
    objective_modes: tuple[str, ...]
    budget: str
    schedule_aware: bool
    finalize_top_k: int
    finalize_seeds: int
    max_concurrent_trials: int | None
    search_budget_s: float | None
    max_failures: int
    num_to_keep: int
    experiment_dir: Path
    experiment_name: str
    resume: bool
    ray: dict
    pack_gpus: bool
    smoke: bool
    config: dict = field(repr=False)

    @property
    def experiment_path(self) -> Path:
        return self.experiment_dir / self.experiment_name

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def scheduler_metric(self) -> dict:
        """Metric and mode for a scheduler's constructor: only when Tune's own (single) metric is off."""
        return dict(metric=self.metric, mode=self.mode) if self.search_alg.get('name') == 'nsga2' else {}


def build_spec(cfg: DictConfig, *, dry_run: bool = True) -> SearchSpec:
    """Validate ``cfg`` (from :func:`search.config.compose_config`) and return the search spec."""
    try:
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # an unset required value (`???`), e.g. data=coco without data.root
        raise UsageError(f'missing value: {str(err).splitlines()[0]} (set it on the command line, key=value)') from None
    _check_shape(raw)
    raw = _resumed_config(raw)
    smoke = _bool(raw, 'smoke')
    if smoke:
        # A grid already gives several trials; repeating it would not make a smoke test.
        raw['num_samples'] = 1 if raw['search_alg']['name'] == 'grid' else SMOKE['num_samples']
        raw['max_epochs'] = SMOKE['max_epochs']
        raw['train']['img_scale'] = SMOKE['img_scale']
        raw['train']['warmup_iters'] = SMOKE['warmup_iters']
    space = load_space(str(raw['space']))
    if is_space_file(str(raw['space'])):  # so resume=true finds it from any directory
        raw['space'] = str(Path(str(raw['space'])).expanduser().resolve())
    params = dict(space.params)
    if smoke and MAX_EPOCHS_PATH in params:
        params[MAX_EPOCHS_PATH] = Distribution('choice', (SMOKE['max_epochs'],))

    num_samples = _int(raw, 'num_samples', low=1)
    max_epochs = _int(raw, 'max_epochs', low=1)
    if MAX_EPOCHS_PATH in params:
        if params[MAX_EPOCHS_PATH].low < 1:
            raise UsageError(f"space {space.name}: {MAX_EPOCHS_PATH} must be >= 1 epoch, got {params[MAX_EPOCHS_PATH].low}")
        max_epochs = int(params[MAX_EPOCHS_PATH].high)
    mode = raw['mode']
    if mode not in ('max', 'min'):
        raise UsageError(f"mode must be max or min, got '{mode}'")
    objectives = objectives_of(raw)
    metric = objectives[0]
    objective_modes = (mode,) + ('min',) * (len(objectives) - 1)
    budget = raw['budget']
    if budget not in ('epochs', 'compute'):
        raise UsageError(f"budget must be epochs or compute, got '{budget}'")
    finalize = raw['finalize']
    cpus = _number(raw, 'cpus_per_trial', low=0, strict=True)
    pack_gpus = raw['gpus_per_trial'] == 'auto'
    gpus = 1.0 if pack_gpus else _number(raw, 'gpus_per_trial', low=0)
    ray_cfg = dict(raw['ray'])
    if gpus > 0 and not ray_cfg.get('address'):
        _require_local_gpu(raw['gpus_per_trial'])
    train = _check_train(raw['train'])
    max_concurrent = raw.get('max_concurrent_trials')
    if max_concurrent is not None:
        max_concurrent = _int(raw, 'max_concurrent_trials', low=1)

    search_budget = raw.get('search_budget_s')
    if search_budget is not None:
        search_budget = _number(raw, 'search_budget_s', low=0, strict=True)
    _int(raw, 'seed', low=0)
    dataset = _dataset(raw['data'], smoke)
    base = build_base_config(
        model=raw['model']['mmdet'], backbone=_backbone(raw['backbone']),
        neck_in_channels=raw['backbone']['out_channels'], img_norm=raw['backbone'].get('img_norm'),
        data=dict(classes=dataset.classes, train_ann=dataset.train_ann, val_ann=dataset.val_ann,
                  img_prefix=dataset.img_prefix),
        train=train, max_epochs=max_epochs, seed=raw['seed'], device='cuda' if gpus > 0 else 'cpu',
        space_fragment=space.mmdet)
    trial = TrialSpec(base_config=base, param_paths=tuple(params), cpus_per_trial=cpus, gpus_per_trial=gpus)
    if dry_run:
        _dry_run(trial, params)

    exp_dir = Path(str(raw['experiment']['dir'])).expanduser().resolve()
    name = raw['experiment'].get('name') or f"{space.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    if '/' in str(name) or str(name) in ('.', '..'):
        raise UsageError(f"experiment.name '{name}' must be a plain folder name (set the parent with experiment.dir)")
    resume = _bool(raw, 'resume')
    path = exp_dir / str(name)
    if resume and not path.is_dir():
        raise UsageError(f'resume=true but experiment {path} does not exist; check experiment.dir and experiment.name')
    if not resume and path.exists():
        raise UsageError(f'experiment {path} already exists: add resume=true to continue it, or pick another experiment.name')

    return SearchSpec(
        space=space, params=params, trial=trial, scheduler=dict(raw['scheduler']), search_alg=dict(raw['search_alg']),
        num_samples=num_samples, max_epochs=max_epochs, metric=metric, mode=mode,
        seed=int(raw['seed']), objectives=objectives, objective_modes=objective_modes, budget=budget,
        schedule_aware=_bool(raw, 'schedule_aware'), finalize_top_k=_int(finalize, 'top_k', low=0, where='finalize.'),
        finalize_seeds=_int(finalize, 'seeds', low=1, where='finalize.'), max_concurrent_trials=max_concurrent,
        search_budget_s=search_budget, max_failures=_int(raw, 'max_failures', low=0),
        num_to_keep=_int(raw['checkpoint'], 'num_to_keep', low=1, where='checkpoint.'), experiment_dir=exp_dir,
        experiment_name=str(name), resume=resume, ray=ray_cfg, pack_gpus=pack_gpus, smoke=smoke, config=raw)


def _check_shape(raw: dict) -> None:
    """Every key of config.yaml, and those read from the groups, is there: ``~key`` or ``train=null`` is a UsageError."""
    from search.config import CONF_DIR

    reference = OmegaConf.to_container(OmegaConf.load(CONF_DIR / 'config.yaml'))
    reference.pop('defaults', None)
    reference.update(GROUP_KEYS)
    _check_keys(raw, reference, '')


def _check_keys(raw: dict, reference: dict, where: str) -> None:
    for key, value in reference.items():
        if key not in raw:
            raise UsageError(f'{where}{key} is missing from the config: set it with {where}{key}=VALUE instead of deleting it')
        if isinstance(value, dict):
            if not isinstance(raw[key], dict):
                raise UsageError(f'{where}{key} must be a section (key: value mapping), got {raw[key]!r}; '
                                 f'set its keys one by one ({where}{key}.KEY=VALUE) instead of replacing it')
            _check_keys(raw[key], value, f'{where}{key}.')


def _resumed_config(raw: dict) -> dict:
    """With resume=true, the search continues with the configuration it was started with."""
    if raw.get('resume') is not True:
        return raw
    from search.files import SPEC_FILE

    path = Path(str(raw['experiment']['dir'])).expanduser().resolve() / str(raw['experiment'].get('name'))
    saved = path / SPEC_FILE
    if not raw['experiment'].get('name') or not saved.is_file():
        raise UsageError(f'resume=true but {path} is not a DynTune experiment (no {SPEC_FILE}); '
                         'give the experiment.dir and experiment.name of the search to continue')
    import yaml

    config = yaml.safe_load(saved.read_text())
    config['resume'] = True
    config['experiment'] = dict(raw['experiment'])
    config['ray'] = dict(raw['ray'])  # where to run may change between attempts; what to search may not
    return config


def objectives_of(raw: dict) -> tuple[str, ...]:
    """``objectives`` (first maximised or minimised by ``mode``, the rest minimised), or just ``metric``."""
    objectives = raw.get('objectives')
    if objectives is None:
        if raw['search_alg']['name'] == 'nsga2':
            return (str(raw['metric']), 'compute_seconds')
        return (str(raw['metric']),)
    if (not isinstance(objectives, list) or len(objectives) < 2
            or not all(isinstance(o, str) and o for o in objectives) or len(set(objectives)) != len(objectives)):
        raise UsageError(f'objectives must be a list of two or more distinct metric names, e.g. '
                         f'[bbox_mAP,compute_seconds], got {objectives!r}')
    return tuple(objectives)


def _dataset(data: dict, smoke: bool):
    from search.data.coco_check import check_dataset

    if data['name'] == 'embedded':
        from search.data.embedded import ensure_embedded_dataset

        sizes = (dict(num_train=SMOKE['num_train'], num_val=SMOKE['num_val'], min_size=SMOKE['min_size'],
                      max_size=SMOKE['max_size']) if smoke
                 else {k: _int(data, k, low=1, where='data.') for k in ('num_train', 'num_val', 'min_size', 'max_size')})
        root = data.get('root') or ensure_embedded_dataset(seed=_int(data, 'seed', low=0, where='data.'), **sizes)
    else:
        root = data['root']
    return check_dataset(root, data['train_ann'], data['val_ann'], data['img_prefix'])


def _backbone(backbone: dict) -> dict:
    channels = backbone['out_channels']
    if not (isinstance(channels, list) and channels and all(_is_number(c) and c == int(c) > 0 for c in channels)):
        raise UsageError(f'backbone.out_channels must list the channels of the outputs given to the neck, e.g. '
                         f'[64, 128, 256, 512], got {channels!r}')
    norm = backbone.get('img_norm')
    if norm is not None and not (isinstance(norm, dict) and {'mean', 'std'} <= set(norm)):
        raise UsageError(f'backbone.img_norm must be null (ImageNet) or {{mean: [..], std: [..], to_rgb: ..}}, got {norm!r}')
    module = dict(backbone['mmdet'])
    checkpoint = backbone.get('checkpoint')
    if checkpoint:
        path = Path(str(checkpoint)).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f'backbone.checkpoint {path} does not exist')
        module['init_cfg'] = dict(type='Pretrained', checkpoint=str(path))
        module.pop('pretrained', None)
    return module


def _check_train(train: dict) -> dict:
    out = dict(train)
    for key in ('lr', 'grad_clip'):
        _number(out, key, low=0, strict=True, where='train.')
    for key in ('momentum',):
        value = _number(out, key, low=0, where='train.')
        if value >= 1:
            raise UsageError(f'train.momentum must be in [0, 1), got {value}')
    _number(out, 'weight_decay', low=0, where='train.')
    _int(out, 'warmup_iters', low=0, where='train.')
    _int(out, 'batch_size', low=1, where='train.')
    _int(out, 'workers', low=0, where='train.')
    scale = out['img_scale']
    if not (isinstance(scale, list) and len(scale) == 2 and all(isinstance(v, int) and v >= 32 for v in scale)):
        raise UsageError(f'train.img_scale must be [long, short] whole numbers >= 32, got {scale}')
    steps = out['lr_steps']
    if not isinstance(steps, list) or not all(_is_number(f) and 0 < f <= 1 for f in steps):
        raise UsageError(f'train.lr_steps must be a list of fractions of the budget in (0, 1], got {steps}')
    return out


def lowest_params(params: dict[str, Distribution]) -> dict:
    """Every parameter at its lowest value (a choice's first)."""
    return {path: _pick(dist, 'low') for path, dist in params.items()}


def _dry_run(trial: TrialSpec, params: dict[str, Distribution]) -> None:
    """Write each parameter's lowest and highest value into the config and build the detector once."""
    from mmdet.models import build_detector

    import dyncomponents  # noqa: F401  (registers the plugins)

    for pick in ('low', 'high'):
        values = {path: _pick(dist, pick) for path, dist in params.items()}
        cfg = build_trial_config(trial.base_config, values)
        for path in values:
            get_path(cfg._cfg_dict.to_dict(), path)
        _build_hooks(cfg, pick)
    try:
        build_detector(cfg.model, train_cfg=cfg.get('train_cfg'), test_cfg=cfg.get('test_cfg'))
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f'the detector does not build from this config: {type(err).__name__}: '
                         f'{str(err).splitlines()[0] if str(err) else ""}') from None


def _build_hooks(cfg, pick: str) -> None:
    """Construct the custom hooks, so a schedule value out of its range fails here, not in a trial."""
    from mmcv.runner import HOOKS
    from mmcv.utils import build_from_cfg

    import search.hooks  # noqa: F401  (the trials' registry holds the search's hooks too)

    for hook in cfg.get('custom_hooks', []):
        hook = {k: v for k, v in hook.items() if k != 'priority'}  # the runner's option, not the hook's
        try:
            build_from_cfg(hook, HOOKS)
        except (ValueError, KeyError, TypeError) as err:
            raise UsageError(f"custom hook {hook.get('type')} does not build with every parameter at its {pick}est "
                             f'value: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}; '
                             'narrow the range in the space file') from None


def _pick(dist: Distribution, which: str):
    if dist.kind == 'choice':
        from search.space import _thaw

        return _thaw(dist.args[0] if which == 'low' else dist.args[-1])
    return dist.low if which == 'low' else dist.high


def _require_local_gpu(gpus) -> None:
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f'gpus_per_trial={gpus} but this machine has no usable GPU: use gpus_per_trial=0, '
                         'or ray.address=... to run on a cluster with GPUs')


def _int(raw: dict, key: str, low: int, where: str = '') -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UsageError(f'{where}{key} must be a whole number >= {low}, got {value!r}')
    return value


def _number(raw: dict, key: str, low: float, strict: bool = False, where: str = '') -> float:
    value = raw[key]
    ok = _is_number(value) and (value > low if strict else value >= low)
    if not ok:
        raise UsageError(f"{where}{key} must be a number {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _bool(raw: dict, key: str) -> bool:
    value = raw[key]
    if not isinstance(value, bool):
        raise UsageError(f'{key} must be true or false, got {value!r}')
    return value
