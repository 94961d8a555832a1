"""Turn the composed Hydra config into a validated :class:`SearchSpec`.

Every user error is found here, before Ray starts: unknown names were caught by ``search.config``;
here come the settings' types and ranges, the scheduler's and search algorithm's options, the base
mmdet config and what the space needs of it, the weights it loads, the dataset, the machine, the
experiment folder, and a dry run that writes the lowest and highest value of every parameter into
the trial config and builds the detector. The driver then only runs what the spec says.
"""
from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from search.errors import UsageError, existing_file, is_file, is_number as _is_number
from search.files import REFERENCE_KEY
from search.mmdet_config import (MAX_EPOCHS_PATH, apply_cfg_options, apply_run_settings, apply_train,
                                 build_trial_config, check_weights, dataset_splits, describe_detector, factor_base,
                                 get_path, has_path, load_base, merge_space, replace_datasets, resolve_base, set_path,
                                 swap_backbone, train_img_scale, unmet_requirements)
from search.resources import check_trial_fits_locally
from search.schedulers import SchedulerSettings, check_pairing, check_scheduler_fits, validate_scheduler
from search.search_algs import SearchAlgSettings, validate_search_alg
from search.storage import is_uri
from search.space import Distribution, Space, available_spaces, highest, is_space_file, load_space, lowest

# What build_spec reads from the group sections; the rest of the config must have config.yaml's keys.
GROUP_KEYS = {'data': dict.fromkeys(('name', 'test_ann')),
              'scheduler': {'name': None}, 'search_alg': {'name': None}}


@dataclass(frozen=True)
class TrialSpec:
    """What every trial needs: the mmdet configs and which of their paths are sampled.

    Attributes:
        base_config (dict): the searched trials' config, sampled paths at the base's values.
        reference_config (dict | None): the reference trial's config (the user's, component off,
            full budget), or None when the search has no reference.
        params (dict[str, Distribution]): the sampled parameters (values, not factors).
    """

    base_config: dict
    reference_config: dict | None
    params: dict
    cpus_per_trial: float
    gpus_per_trial: float  # a share of one GPU; with gpus_per_trial=auto the driver sets it from a probe

    @property
    def param_paths(self) -> tuple[str, ...]:
        return tuple(self.params)

    def config_for(self, tune_config: dict):
        """The ``mmcv.Config`` a trial with Tune config ``tune_config`` trains."""
        from mmcv import Config

        if tune_config.get(REFERENCE_KEY):
            return Config(copy.deepcopy(self.reference_config))
        values = {path: dist.decode(tune_config[path]) for path, dist in self.params.items() if path in tune_config}
        return build_trial_config(self.base_config, values)


@dataclass(frozen=True)
class RaySettings:
    """Where the search runs and what it prints."""

    address: str | None
    dashboard: bool
    dashboard_host: str
    verbose: int


@dataclass(frozen=True)
class SearchSpec:
    """A validated search: what to sample, how to schedule it, where to write it."""

    space: Space
    params: dict[str, Distribution]
    trial: TrialSpec
    scheduler: SchedulerSettings
    search_alg: SearchAlgSettings
    ray: RaySettings
    num_samples: int
    max_epochs: int
    metric: str
    mode: str
    seed: int
    objectives: tuple[str, ...]
    objective_modes: tuple[str, ...]
    budget: str
    schedule_aware: bool
    reference: bool
    test_ann: str | None  # the test split the exported best is evaluated on after the search
    finalize_top_k: int
    finalize_seeds: int
    max_concurrent_trials: int | None
    search_budget_s: float | None
    max_failures: int
    num_to_keep: int
    experiment_dir: Path | str  # a local folder, or a storage URI such as s3://bucket/prefix (search/storage.py)
    experiment_name: str
    resume: bool
    pack_gpus: bool
    smoke: bool
    config: dict = field(repr=False)
    # warm_start=PATH: the earlier experiment's best configurations (Tune configs), the search's first points
    warm_start_points: tuple = ()

    @property
    def store(self):
        """The experiment folder in its storage (:class:`search.storage.ExperimentStore`)."""
        return _store(self.experiment_dir, self.experiment_name)

    @property
    def experiment_path(self) -> Path:
        """The experiment folder on this machine: the folder itself, or the local cache of one in a URI."""
        if isinstance(self.experiment_dir, Path):
            return self.experiment_dir / self.experiment_name
        return self.store.local

    @property
    def multi_objective(self) -> bool:
        """A searcher optimises several objectives: Tune's single metric is then unset and the
        scheduler is told ``metric`` and ``mode`` itself."""
        return len(self.objectives) > 1 and self.search_alg.multi_objective


def build_spec(cfg: DictConfig, *, dry_run: bool = True) -> SearchSpec:
    """Validate ``cfg`` (from :func:`search.config.compose_config`) and return the search spec."""
    try:
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # an unset required value (`???`), e.g. data=coco without data.root
        raise UsageError(f'missing value: {str(err).splitlines()[0]} (set it on the command line, key=value)') from None
    _check_shape(raw)
    raw = _resumed_config(raw)
    space = load_space(str(raw['space']))
    if is_space_file(str(raw['space'])):  # so resume=true finds it from any directory
        raw['space'] = str(Path(str(raw['space'])).expanduser().resolve())
    search_alg = validate_search_alg(raw['search_alg'])
    objectives, modes = objectives_and_modes(raw, search_alg)
    _check_metrics(objectives)
    scheduler = validate_scheduler(raw['scheduler'])
    check_pairing(scheduler.name, search_alg.name, _one_of(raw, 'budget', ('epochs', 'compute')))
    ray = _ray_settings(raw['ray'])
    cpus, gpus, pack_gpus = _resources(raw, ray)
    configs = build_configs(raw, space, device='cuda' if gpus > 0 else 'cpu')
    check_scheduler_fits(scheduler, configs.params, space.name, search_alg.name)
    warm_start = _warm_start(raw, configs.params, search_alg)
    trial = TrialSpec(base_config=configs.trials, reference_config=configs.reference, params=configs.params,
                      cpus_per_trial=cpus, gpus_per_trial=gpus)
    if dry_run:
        _dry_run(trial)
    finalize = raw['finalize']
    exp_dir, name, resume = _experiment(raw, space)
    return SearchSpec(
        space=space, params=configs.params, trial=trial, scheduler=scheduler, search_alg=search_alg, ray=ray,
        num_samples=_int(raw, 'num_samples', low=1), max_epochs=configs.max_epochs, metric=objectives[0],
        mode=modes[0], seed=_int(raw, 'seed', low=0), objectives=objectives, objective_modes=modes,
        budget=_one_of(raw, 'budget', ('epochs', 'compute')), schedule_aware=_bool(raw, 'schedule_aware'),
        reference=configs.reference is not None, test_ann=configs.test_ann,
        finalize_top_k=_int(finalize, 'top_k', low=0, where='finalize.'),
        finalize_seeds=_int(finalize, 'seeds', low=1, where='finalize.'),
        max_concurrent_trials=None if raw['max_concurrent_trials'] is None else _int(raw, 'max_concurrent_trials', low=1),
        search_budget_s=None if raw['search_budget_s'] is None else _number(raw, 'search_budget_s', low=0, strict=True),
        max_failures=_int(raw, 'max_failures', low=0),
        num_to_keep=_int(raw['checkpoint'], 'num_to_keep', low=1, where='checkpoint.'), experiment_dir=exp_dir,
        experiment_name=name, resume=resume, pack_gpus=pack_gpus, smoke=_bool(raw, 'smoke'), config=raw,
        warm_start_points=warm_start)


# -- the configuration's shape, resume and plain settings --------------------------------------------

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

    store = _store(raw['experiment']['dir'], str(raw['experiment'].get('name')))
    if not raw['experiment'].get('name') or not _reachable(store, lambda: store.is_file(SPEC_FILE)):
        raise UsageError(f'resume=true but {store.display} is not a DynTune experiment (no {SPEC_FILE}); '
                         'give the experiment.dir and experiment.name of the search to continue')
    import yaml

    config = yaml.safe_load(store.read_text(SPEC_FILE))
    config['resume'] = True
    config['experiment'] = dict(raw['experiment'])
    config['ray'] = dict(raw['ray'])  # where to run may change between attempts; what to search may not
    return config


def objectives_and_modes(raw: dict, search_alg: SearchAlgSettings | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The objectives (``objectives``, or just ``metric``) and their modes: the first by ``mode``, the rest minimised.

    A multi-objective search algorithm without ``objectives`` optimises the metric and ``compute_seconds``.
    """
    mode = raw['mode']
    if mode not in ('max', 'min'):
        raise UsageError(f"mode must be max or min, got '{mode}'")
    objectives = raw.get('objectives')
    if objectives is None:
        multi = search_alg.multi_objective if search_alg else raw['search_alg']['name'] in ('nsga2',)
        objectives = [str(raw['metric']), 'compute_seconds'] if multi else [str(raw['metric'])]
    elif (not isinstance(objectives, list) or len(objectives) < 2
            or not all(isinstance(o, str) and o for o in objectives) or len(set(objectives)) != len(objectives)):
        raise UsageError(f'objectives must be a list of two or more distinct metric names, e.g. '
                         f'[bbox_mAP,compute_seconds], got {objectives!r}')
    return tuple(objectives), (mode,) + ('min',) * (len(objectives) - 1)


def _check_metrics(objectives: tuple[str, ...]) -> None:
    """Every objective is a metric the trials report: the COCO metrics, the search's own, the components'."""
    from search.metrics import metric_names

    known = metric_names()
    unknown = [o for o in objectives if o not in known]
    if unknown:
        raise UsageError(f"unknown metric {', '.join(map(repr, unknown))} (metric, objectives): the trials report "
                         f"{', '.join(known)}")


def _ray_settings(ray: dict) -> RaySettings:
    from search.errors import reject_unknown_options

    reject_unknown_options('ray', ray, {'address', 'dashboard', 'dashboard_host', 'verbose'})
    address = ray.get('address')
    if address is not None and (not isinstance(address, str) or not address):
        raise UsageError(f'ray.address must be auto or host:port, got {address!r}')
    verbose = _int(ray, 'verbose', low=0, where='ray.')
    if verbose > 3:
        raise UsageError(f'ray.verbose must be 0, 1, 2 or 3, got {verbose}')
    host = ray.get('dashboard_host')
    if not isinstance(host, str) or not host:
        raise UsageError(f'ray.dashboard_host must be an address such as 127.0.0.1, got {host!r}')
    return RaySettings(address=address, dashboard=_bool(ray, 'dashboard', where='ray.'), dashboard_host=host,
                       verbose=verbose)


def _resources(raw: dict, ray: RaySettings) -> tuple[float, float, bool]:
    cpus = _number(raw, 'cpus_per_trial', low=0, strict=True)
    pack_gpus = raw['gpus_per_trial'] == 'auto'
    gpus = 1.0 if pack_gpus else _number(raw, 'gpus_per_trial', low=0)
    if gpus > 0 and not ray.address:
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"gpus_per_trial={raw['gpus_per_trial']} but this machine has no usable GPU: use "
                             'gpus_per_trial=0, or ray.address=... to run on a cluster with GPUs')
    if not ray.address:
        check_trial_fits_locally(cpus, gpus)  # Ray would keep a trial larger than the machine PENDING forever
    return cpus, gpus, pack_gpus


def _experiment(raw: dict, space: Space) -> tuple[Path | str, str, bool]:
    where = str(raw['experiment']['dir'])
    exp_dir = where if is_uri(where) else Path(where).expanduser().resolve()
    name = raw['experiment'].get('name')
    if name is not None and (not isinstance(name, (str, int)) or not str(name).strip()):
        raise UsageError(f'experiment.name {name!r} is not a folder name: give one, or leave it out for '
                         f'<space>-<date>-<time>')
    name = name if name is not None else f"{space.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    if '/' in str(name) or str(name) in ('.', '..'):
        raise UsageError(f"experiment.name '{name}' must be a plain folder name (set the parent with experiment.dir)")
    resume = _bool(raw, 'resume')
    store = _store(exp_dir, str(name))
    exists = _reachable(store, store.exists)
    if resume and not exists:
        raise UsageError(f'resume=true but experiment {store.display} does not exist; check experiment.dir and experiment.name')
    if not resume and exists:
        raise UsageError(f'experiment {store.display} already exists: add resume=true to continue it, or pick another experiment.name')
    return exp_dir, str(name), resume


def _store(experiment_dir, name: str):
    """The experiment folder ``experiment_dir``/``name`` in its storage (a path or a URI)."""
    from search.storage import ExperimentStore, join_uri

    return ExperimentStore.from_uri(join_uri(experiment_dir, name))


def _reachable(store, check):
    """``check()`` on the experiment's storage; a storage that cannot be reached is a usage error, in one line."""
    try:
        return check()
    except OSError as err:  # e.g. no credentials, an unknown bucket, an endpoint that does not answer
        raise UsageError(f'experiment.dir {store.display} cannot be reached: {str(err).splitlines()[0]}') from None


def _warm_start(raw: dict, params: dict, search_alg: SearchAlgSettings) -> tuple:
    """The best configurations of the experiment ``warm_start`` names, as Tune configs of ``params`` (search/warm_start.py)."""
    if raw['warm_start'] is None or raw.get('resume') is True:
        return ()  # a resumed search restores its searcher, which had the points already
    if search_alg.name == 'grid':
        raise UsageError('warm_start does not work with search_alg=grid: a grid runs every point anyway')
    from search.warm_start import WARM_START_POINTS, best_points

    return tuple(best_points(raw['warm_start'], params, min(WARM_START_POINTS, _int(raw, 'num_samples', low=1))))


# -- the mmdet configs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Configs:
    """The mmdet configs of a search (see search/mmdet_config.py for the layers)."""

    trials: dict
    reference: dict | None
    params: dict[str, Distribution]
    max_epochs: int
    test_ann: str | None


def build_configs(raw: dict, space: Space, *, device: str) -> Configs:
    """The base config with the command line's changes, the space's component, and the sampled values."""
    path = resolve_base(str(raw['base']))
    config = load_base(path)
    if raw.get('backbone'):
        swap_backbone(config, *_backbone(raw['backbone']))
    max_epochs = None if raw['max_epochs'] is None else _int(raw, 'max_epochs', low=1)
    apply_train(config, _check_train(raw['train']), max_epochs)
    if raw['load_from'] is not None:
        config['load_from'] = _existing_file(raw['load_from'], 'load_from')
    apply_run_settings(config, seed=_int(raw, 'seed', low=0), device=device, cwd=Path.cwd())
    test_ann = _data(raw['data'], config)
    options = raw.get('cfg_options', {})  # compose_config adds it; a config built otherwise may have none
    if not isinstance(options, dict):
        raise UsageError(f'cfg_options must map config paths to values (set them with cfg.PATH=VALUE), got {options!r}')
    yours = copy.deepcopy(config)  # the user's config as they run it: what the reference trains
    apply_cfg_options(yours, options, skip_missing=True)
    _check_fits(space, yours)
    trials = merge_space(config, space)
    apply_cfg_options(trials, options)
    params = _params(space, trials, options, fixed_budget=max_epochs is not None)
    budget = int(params[MAX_EPOCHS_PATH].high) if MAX_EPOCHS_PATH in params else int(get_path(trials, MAX_EPOCHS_PATH))
    check_weights(trials)
    reference = _reference_config(yours, space, budget) if _bool(raw, 'reference') else None
    _warn_small_objects(trials)
    return Configs(trials=trials, reference=reference, params=params, max_epochs=budget, test_ann=test_ann)


def _check_fits(space: Space, yours: dict) -> None:
    """The space's requirements hold in the user's config; else one line naming the detector and the spaces that fit."""
    problems = unmet_requirements(yours, space.requires)
    if problems:
        fitting = [name for name in available_spaces() if not unmet_requirements(yours, load_space(name).requires)]
        raise UsageError(f"space {space.name} does not fit the base config ({describe_detector(yours)}): it needs "
                         f"{'; '.join(problems)}; spaces that fit it: {', '.join(fitting) or 'none'}")


def _reference_config(yours: dict, space: Space, budget: int) -> dict:
    """The reference trial's config: the user's, the full budget, and factor 1 where the space samples a factor."""
    reference = copy.deepcopy(yours)
    reference['runner']['max_epochs'] = budget  # as long as any searched trial trains
    for path, dist in space.params.items():
        if dist.factor and path != MAX_EPOCHS_PATH and has_path(reference, path):
            set_path(reference, path, factor_base(reference, path))  # factor 1: the base's own value
    check_weights(reference)
    return reference


def _params(space: Space, trials: dict, options: dict, fixed_budget: bool) -> dict[str, Distribution]:
    """The space's parameters as values (factors scaled by the base's), each checked to exist in ``trials``."""
    params = {}
    for path, dist in space.params.items():
        if path in options:
            raise UsageError(f'cfg.{path} sets a parameter that space {space.name} samples: remove one of them')
        if path == MAX_EPOCHS_PATH and fixed_budget:
            continue  # max_epochs=N fixes every trial's budget
        get_path(trials, path)
        dist = dist.scaled(factor_base(trials, path)) if dist.factor else dist
        if path == MAX_EPOCHS_PATH and dist.low < 1:
            raise UsageError(f'space {space.name}: {MAX_EPOCHS_PATH} must be >= 1 epoch, got {dist.low}')
        params[path] = dist
    return params


def _data(data: dict, config: dict) -> str | None:
    """Check the dataset and put it in ``config``; return the test split's annotation file, if any."""
    from search.data.coco_check import check_dataset

    if data['name'] == 'base':
        return _base_data(data, config)
    _check_keys(data, dict.fromkeys(('root', 'train_ann', 'val_ann', 'img_prefix')), 'data.')
    if data['name'] == 'embedded':
        from search.data.embedded import ensure_embedded_dataset

        sizes = {k: _int(data, k, low=1, where='data.') for k in ('num_train', 'num_val', 'min_size', 'max_size')}
        root = data.get('root') or ensure_embedded_dataset(seed=_int(data, 'seed', low=0, where='data.'), **sizes)
    else:
        root = data['root']
    info = check_dataset(root, data['train_ann'], data['val_ann'], data['img_prefix'], test_ann=data.get('test_ann'))
    replace_datasets(config, classes=info.classes, img_prefix=info.img_prefix, train_ann=info.train_ann,
                     val_ann=info.val_ann, test_ann=info.test_ann)
    return info.test_ann


def _base_data(data: dict, config: dict) -> str | None:
    """The base config's own datasets (data=base): check the COCO ones and that the heads fit their classes."""
    from search.data.coco_check import check_annotation_file
    from mmdet.datasets import DATASETS, CocoDataset

    splits = dataset_splits(config)
    if 'train' not in splits or 'val' not in splits:
        raise UsageError('the base config has no data.train and data.val: give data=coco data.root=PATH')
    if data.get('test_ann') is not None:
        splits.setdefault('test', copy.deepcopy(splits['val']))
        splits['test']['ann_file'] = _existing_file(data['test_ann'], 'data.test_ann')
    classes = None
    for split, dataset in splits.items():
        dataset_class = DATASETS.get(str(dataset.get('type')))
        if dataset_class is None or not issubclass(dataset_class, CocoDataset):
            continue  # another format: mmdet checks it when it loads it
        ann, prefix = Path(str(dataset.get('ann_file'))), Path(str(dataset.get('img_prefix', '')))
        if not is_file(ann):
            raise UsageError(f'data.{split}.ann_file {ann} of the base config does not exist: point the base at '
                             'your data (cfg.data.train.ann_file=...) or give data=coco data.root=PATH')
        found, _ = check_annotation_file(ann, prefix)
        names = tuple(dataset.get('classes') or found)
        classes = classes or names
    if classes is not None:
        heads = _num_classes(config['model'])
        if heads and heads != {len(classes)}:
            raise UsageError(f"the base config's heads have num_classes {sorted(heads)} but its dataset has "
                             f'{len(classes)} classes: set cfg.model...num_classes, or data.*.classes')
    test = splits.get('test')
    if test is not None and test.get('ann_file') != splits['val'].get('ann_file'):
        return str(test['ann_file'])
    return None


def _num_classes(model: dict) -> set[int]:
    roi_head = model.get('roi_head') or {}
    found = set()
    for head in (model.get('bbox_head'), roi_head.get('bbox_head')):
        for item in head if isinstance(head, list) else [head]:
            if isinstance(item, dict) and 'num_classes' in item:
                found.add(int(item['num_classes']))
    return found


def _warn_small_objects(config: dict) -> None:
    """One warning line when the median object would shrink below ~8 px at the training scale."""
    from search.data.coco_check import object_size_warning

    scale = train_img_scale(config)
    train = dataset_splits(config).get('train', {})
    if scale and isinstance(train.get('ann_file'), str) and is_file(train['ann_file']):
        warning = object_size_warning(Path(train['ann_file']), scale)
        if warning:
            print(f'DynTune warning: {warning}', flush=True)


def _backbone(backbone: dict) -> tuple[dict, list[int], dict | None]:
    channels = backbone['out_channels']
    if not (isinstance(channels, list) and channels and all(_is_number(c) and c == int(c) > 0 for c in channels)):
        raise UsageError(f'backbone.out_channels must list the channels of the outputs given to the neck, e.g. '
                         f'[64, 128, 256, 512], got {channels!r}')
    norm = backbone.get('img_norm')
    if norm is not None and not (isinstance(norm, dict) and {'mean', 'std'} <= set(norm)):
        raise UsageError(f'backbone.img_norm must be null (ImageNet) or {{mean: [..], std: [..], to_rgb: ..}}, got {norm!r}')
    module = dict(backbone['mmdet'])
    if backbone.get('checkpoint'):
        module['init_cfg'] = dict(type='Pretrained', checkpoint=_existing_file(backbone['checkpoint'], 'backbone.checkpoint'))
        module.pop('pretrained', None)
    imagenet = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
    return module, [int(c) for c in channels], norm or imagenet


def _existing_file(value, key: str) -> str:
    return str(existing_file(value, key))


def _check_train(train: dict) -> dict:
    """The ``train.*`` values given (None: the base's own), each checked."""
    given = {k: v for k, v in train.items() if v is not None}
    for key in ('lr', 'grad_clip'):
        if key in given:
            _number(given, key, low=0, strict=True, where='train.')
    if 'momentum' in given and _number(given, 'momentum', low=0, where='train.') >= 1:
        raise UsageError(f"train.momentum must be in [0, 1), got {given['momentum']}")
    if 'weight_decay' in given:
        _number(given, 'weight_decay', low=0, where='train.')
    for key, low in (('warmup_iters', 0), ('batch_size', 1), ('workers', 0)):
        if key in given:
            _int(given, key, low=low, where='train.')
    scale = given.get('img_scale')
    if scale is not None and not (isinstance(scale, list) and len(scale) == 2
                                  and all(isinstance(v, int) and not isinstance(v, bool) and v >= 32 for v in scale)):
        raise UsageError(f'train.img_scale must be [long, short] whole numbers >= 32, got {scale}')
    steps = given.get('lr_steps')
    if steps is not None and (not isinstance(steps, list) or not all(_is_number(f) and 0 < f <= 1 for f in steps)):
        raise UsageError(f'train.lr_steps must be a list of fractions of the budget in (0, 1], got {steps}')
    return dict(train)


# -- the dry run ---------------------------------------------------------------------------------

def lowest_params(params: dict[str, Distribution]) -> dict:
    """Every parameter at its lowest value (a choice's first)."""
    return {path: lowest(dist) for path, dist in params.items()}


def _dry_run(trial: TrialSpec) -> None:
    """Write each parameter's lowest and highest value into the config, build the hooks and the detectors."""
    from mmdet.models import build_detector

    import dyncomponents  # noqa: F401  (registers the plugins)

    configs = []
    for pick, values in (('low', lowest_params(trial.params)),
                         ('high', {path: highest(dist) for path, dist in trial.params.items()})):
        cfg = build_trial_config(trial.base_config, values)
        _build_hooks(cfg, pick)
        configs.append(cfg)
    if trial.reference_config is not None:
        from mmcv import Config

        configs.append(Config(copy.deepcopy(trial.reference_config)))
    for cfg in (configs[0], configs[-1]):
        try:
            build_detector(cfg.model, train_cfg=cfg.get('train_cfg'), test_cfg=cfg.get('test_cfg'))
        except (ValueError, KeyError, TypeError, AssertionError) as err:
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


# -- typed reads of plain settings -------------------------------------------------------------------

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


def _bool(raw: dict, key: str, where: str = '') -> bool:
    value = raw[key]
    if not isinstance(value, bool):
        raise UsageError(f'{where}{key} must be true or false, got {value!r}')
    return value


def _one_of(raw: dict, key: str, allowed: tuple[str, ...]) -> str:
    value = raw[key]
    if value not in allowed:
        raise UsageError(f"{key} must be {' or '.join(allowed)}, got '{value}'")
    return value
