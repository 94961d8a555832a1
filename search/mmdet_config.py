"""Build the mmdet 2.x config a trial trains with: one way, whatever the base config is.

Every search starts from a base config file, loaded as mmdet's own tools load it (``_base_``
inheritance resolved by ``mmcv.Config.fromfile``): a built-in preset (``configs/NAME.py``), a file of
the user's, or a config of mmdet's model zoo (``mmdet::retinanet/retinanet_r50_fpn_1x_coco.py``).
The command line then changes it in layers, each only when asked for, in this order:

1. :func:`swap_backbone` (``backbone=NAME``), :func:`replace_datasets` (``data=embedded|coco``),
   :func:`apply_train` (``train.*``, ``max_epochs``) and :func:`apply_run_settings` (plugins, seed,
   device, an evaluation every epoch, absolute paths);
2. :func:`apply_cfg_options` (``cfg.KEY=VALUE``): this is the user's config as they run it, which the
   reference trial trains;
3. the space's component switch (:func:`switch_components`) and its ``mmdet:`` fragment (:func:`merge`),
   which every searched trial shares;
4. :func:`build_trial_config` (in each trial): the sampled values written at their paths.

Path syntax (docs/spaces.md): ``a.b[type=X].c`` or ``a.b[2].c``.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterator

from search.errors import UsageError, first_line, is_file

PRESETS_DIR = Path(__file__).resolve().parents[1] / 'configs'
ZOO_PREFIX = 'mmdet::'
PLUGIN = 'dyncomponents'
MAX_EPOCHS_PATH = 'runner.max_epochs'
LR_PATH = 'optimizer.lr'
# Dataset wrappers that hold one dataset under `dataset` (RepeatDataset, ClassBalancedDataset, ...).
_WRAPPED = 'dataset'
_TOKEN = re.compile(r'^(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?:type=(?P<type>[^\]]+)|(?P<index>\d+))\])?$')


# 0. The base file -------------------------------------------------------------------------------

def presets() -> list[str]:
    """Names of the built-in base configs (``configs/*.py``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob('*.py'))


def is_preset(base: str) -> bool:
    return base in presets()


def zoo_dir() -> Path:
    """The model-zoo configs that ship inside the installed mmdet package."""
    import mmdet

    return Path(mmdet.__file__).resolve().parent / '.mim' / 'configs'


def resolve_base(base: str) -> Path:
    """The file ``base=`` names: a preset name, ``mmdet::<path in the zoo>``, or a path to a ``.py`` config."""
    if not isinstance(base, str) or not base:
        raise UsageError(f'base must name an mmdet config, got {base!r}')
    if base.startswith(ZOO_PREFIX):
        path = zoo_dir() / base[len(ZOO_PREFIX):]
        if not is_file(path) or path.suffix != '.py':
            raise UsageError(f"no config '{base[len(ZOO_PREFIX):]}' in mmdet's model zoo ({zoo_dir()}); "
                             f'e.g. base=mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
        return path
    if is_preset(base):
        return PRESETS_DIR / f'{base}.py'
    if not base.endswith('.py'):
        raise UsageError(f"unknown base '{base}': choose one of {', '.join(presets())}, a path to an mmdet "
                         f'config (.py), or mmdet::<config of the model zoo>')
    from search.errors import existing_file

    return existing_file(base, 'base config')


def load_base(path: Path) -> dict:
    """The config at ``path`` as a plain dict, ``_base_`` files merged as mmdet's tools do."""
    from mmcv import Config

    try:
        return Config.fromfile(str(path))._cfg_dict.to_dict()
    except Exception as err:  # a user's file can fail in any way: syntax, a missing _base_, an import
        raise UsageError(f'base config {path} does not load: {type(err).__name__}: {first_line(err)}') from None


def describe_detector(config: dict) -> str:
    """``RetinaNet (RetinaHead)``: the detector of a config and its heads, for messages."""
    model = config.get('model') or {}
    heads = [_type_of(model.get('bbox_head')), _type_of((model.get('roi_head') or {}).get('type'))]
    heads = [h for h in heads if h]
    return f"{model.get('type', 'no model')}" + (f" ({', '.join(heads)})" if heads else '')


def _type_of(node) -> str | None:
    if isinstance(node, str):
        return node
    if isinstance(node, dict):
        return node.get('type')
    if isinstance(node, list) and node:
        return _type_of(node[0])
    return None


# 1. Layers the command line asks for -------------------------------------------------------------

def swap_backbone(config: dict, backbone: dict, out_channels: list[int], img_norm: dict | None) -> None:
    """Replace the detector's backbone, the neck's input channels and the input normalisation."""
    model = config['model']
    model['backbone'] = copy.deepcopy(backbone)
    neck = model.get('neck')
    if isinstance(neck, dict) and 'in_channels' in neck:
        neck['in_channels'] = list(out_channels)
    for step in _pipeline_steps(config):
        if step.get('type') == 'Normalize' and img_norm:
            step.update(copy.deepcopy(img_norm))


def replace_datasets(config: dict, *, classes: tuple[str, ...], img_prefix: str, train_ann: str, val_ann: str,
                     test_ann: str | None) -> None:
    """Point train, val and test at COCO files (test: the test split, else val) and set every head's classes.

    Dataset wrappers that hold one dataset (``RepeatDataset``, ``ClassBalancedDataset``...) are kept
    and their inner dataset is replaced; a list of datasets cannot be replaced.
    """
    from mmdet.datasets import DATASETS, CocoDataset

    data = config.setdefault('data', {})
    if 'test' not in data and 'val' in data:
        data['test'] = copy.deepcopy(data['val'])
    for split, ann in (('train', train_ann), ('val', val_ann), ('test', test_ann or val_ann)):
        if split not in data:
            raise UsageError(f'the base config has no data.{split}: data= replaces the datasets of a config '
                             'that defines data.train and data.val')
        inner = _inner_dataset(data, split)
        dataset_class = DATASETS.get(str(inner.get('type')))
        if dataset_class is None or not issubclass(dataset_class, CocoDataset):
            inner['type'] = 'CocoDataset'  # a VOC or custom dataset of the base becomes COCO-format data
        inner.pop('data_root', None)
        inner.update(classes=list(classes), ann_file=ann, img_prefix=img_prefix)
    set_num_classes(config['model'], len(classes))


def set_num_classes(model: dict, num_classes: int) -> None:
    """Set ``num_classes`` in every head that has one (single-stage heads, RoI heads, lists of them)."""
    roi_head = model.get('roi_head') or {}
    for head in (model.get('bbox_head'), roi_head.get('bbox_head'), roi_head.get('mask_head')):
        for item in head if isinstance(head, list) else [head]:
            if isinstance(item, dict) and 'num_classes' in item:
                item['num_classes'] = num_classes


def dataset_splits(config: dict) -> dict[str, dict]:
    """``train``/``val``/``test`` -> the innermost dataset dict of the config's data section."""
    data = config.get('data') or {}
    return {split: _inner_dataset(data, split) for split in ('train', 'val', 'test') if split in data}


def _inner_dataset(data: dict, split: str) -> dict:
    node = data[split]
    while isinstance(node, dict) and isinstance(node.get(_WRAPPED), dict):
        node = node[_WRAPPED]
    if not isinstance(node, dict) or 'datasets' in node or isinstance(node.get('ann_file'), (list, tuple)):
        raise UsageError(f'data.{split} of the base config combines several datasets; DynTune needs one '
                         f'dataset per split (a RepeatDataset-style wrapper around one is fine)')
    return node


def apply_train(config: dict, train: dict, max_epochs: int | None) -> None:
    """Change the recipe where ``train.*`` or ``max_epochs`` was given (None keeps the base's own)."""
    given = {k: v for k, v in train.items() if v is not None}
    optimizer = config.setdefault('optimizer', {})
    for key in ('lr', 'momentum', 'weight_decay'):
        if key in given:
            if key == 'momentum' and 'momentum' not in optimizer:
                raise UsageError(f"train.momentum: the base config's optimizer {optimizer.get('type')} has no momentum")
            optimizer[key] = float(given[key])
    if 'grad_clip' in given:
        config['optimizer_config'] = {**(config.get('optimizer_config') or {}),
                                      'grad_clip': dict(max_norm=float(given['grad_clip']), norm_type=2)}
    lr_config = config.setdefault('lr_config', {})
    if 'lr_steps' in given:
        warmup = {k: v for k, v in lr_config.items() if k.startswith('warmup')}
        config['lr_config'] = lr_config = dict(policy='BudgetStep', step_fractions=[float(f) for f in given['lr_steps']],
                                               gamma=0.1, **warmup)
    if 'warmup_iters' in given:
        lr_config.setdefault('warmup', 'linear')
        lr_config.setdefault('warmup_ratio', 0.001)
        lr_config['warmup_iters'] = int(given['warmup_iters'])
    data = config.setdefault('data', {})
    if 'batch_size' in given:
        data['samples_per_gpu'] = int(given['batch_size'])
    if 'workers' in given:
        data['workers_per_gpu'] = int(given['workers'])
    if 'img_scale' in given:
        scale = tuple(int(v) for v in given['img_scale'])
        for step in _pipeline_steps(config):
            if step.get('type') in ('Resize', 'MultiScaleFlipAug') and 'img_scale' in step:
                step['img_scale'] = scale
    if max_epochs is not None:
        config.setdefault('runner', {})['max_epochs'] = int(max_epochs)


def train_img_scale(config: dict) -> tuple[int, int] | None:
    """The ``img_scale`` of the training pipeline's first keep-ratio Resize (None when there is none)."""
    train = (config.get('data') or {}).get('train')
    if train is None:
        return None
    for step in _inner_dataset(config['data'], 'train').get('pipeline', []):
        if step.get('type') == 'Resize' and step.get('keep_ratio', True) and step.get('img_scale'):
            scale = step['img_scale']
            scale = scale[0] if isinstance(scale, list) and isinstance(scale[0], (list, tuple)) else scale
            return tuple(int(v) for v in scale)
    return None


def apply_run_settings(config: dict, *, seed: int, device: str, cwd: Path) -> None:
    """What a search's trial needs whatever the base: the plugins, seed and device, a bbox evaluation
    after every epoch (the reported metrics), training only in the workflow, and absolute paths
    (a trial runs in its own folder)."""
    runner = config.get('runner') or {}
    if runner.get('type', 'EpochBasedRunner') != 'EpochBasedRunner':
        raise UsageError(f"the base config trains with {runner.get('type')}; DynTune searches epoch-based "
                         "training: set runner=dict(type='EpochBasedRunner', max_epochs=N) in it")
    if 'max_epochs' not in runner:
        raise UsageError('the base config has no runner.max_epochs; set it, or give max_epochs=N')
    imports = config.get('custom_imports') or {}
    names = list(imports.get('imports') or [])
    config['custom_imports'] = dict(imports, imports=names + [PLUGIN] * (PLUGIN not in names),
                                    allow_failed_imports=False)
    evaluation = dict(config.get('evaluation') or {})
    metrics = evaluation.get('metric', 'bbox')
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    evaluation.update(interval=1, metric=metrics + ['bbox'] * ('bbox' not in metrics))
    evaluation.pop('save_best', None)  # Tune keeps the best checkpoint; mmdet's copy would be a second one
    config.update(evaluation=evaluation, workflow=[('train', 1)], seed=int(seed), device=device, gpu_ids=[0],
                  resume_from=None)
    for dataset in dataset_splits(config).values():
        for key in ('ann_file', 'img_prefix', 'data_root'):
            if isinstance(dataset.get(key), str) and dataset[key]:
                dataset[key] = _absolute(dataset[key], cwd, dataset.get('data_root') if key != 'data_root' else None)
    if isinstance(config.get('load_from'), str) and '://' not in config['load_from']:
        config['load_from'] = str((cwd / Path(config['load_from']).expanduser()).resolve())


def _absolute(value: str, cwd: Path, data_root: str | None) -> str:
    if data_root and not os.path.isabs(value):
        value = os.path.join(data_root, value)  # as mmdet's CustomDataset joins them
    path = Path(value).expanduser()
    out = str(path if path.is_absolute() else (cwd / path).resolve())
    return out + '/' if value.endswith('/') and not out.endswith('/') else out


def apply_cfg_options(config: dict, options: dict[str, Any], *, skip_missing: bool = False) -> None:
    """``cfg.KEY=VALUE`` overrides: each path must exist in the config (unless ``skip_missing``)."""
    for path, value in options.items():
        try:
            set_path(config, path, copy.deepcopy(value), what=f'cfg.{path}')
        except UsageError:
            if not skip_missing:
                raise


def _pipeline_steps(config: dict) -> Iterator[dict]:
    for dataset in dataset_splits(config).values():
        for step in dataset.get('pipeline') or []:
            if isinstance(step, dict):
                yield step
                yield from (t for t in step.get('transforms') or [] if isinstance(t, dict))


# 2. What a space needs of the base -------------------------------------------------------------

def unmet_requirements(config: dict, requires: dict) -> list[str]:
    """The requirements of a space (``Space.requires``) that ``config`` does not meet, in words."""
    from search.space import ANY

    problems = []
    for path, allowed in requires.items():
        try:
            value = get_path(config, path)
        except UsageError:
            problems.append(f'{path} (missing)')
            continue
        if allowed != ANY and value not in allowed:
            problems.append(f'{path} in [{", ".join(allowed)}] (the base has {value})')
    return problems


def merge_space(config: dict, space) -> dict:
    """The searched trials' shared config: ``space``'s component switched on in ``config``, its fragment merged.

    The fragment's ``custom_hooks`` are added to the base's (one of the same type is merged into it),
    so hooks of the user's config stay.
    """
    out = copy.deepcopy(config)
    switch_components(out, space.requires)
    fragment = dict(space.mmdet)
    hooks = fragment.pop('custom_hooks', None) or []
    out = merge(out, fragment)
    mine = out.setdefault('custom_hooks', [])
    for hook in hooks:
        same = [i for i, h in enumerate(mine) if isinstance(h, dict) and h.get('type') == hook.get('type')]
        if same:
            mine[same[0]] = merge(mine[same[0]], hook)
        else:
            mine.append(copy.deepcopy(hook))
    return out


def switch_components(config: dict, requires: dict) -> None:
    """Write the value each mapping requirement gives for the base's value (e.g. the dynamic RoI head)."""
    for path, allowed in requires.items():
        if isinstance(allowed, dict):
            set_path(config, path, allowed[get_path(config, path)])


# 3. Weights the base names -----------------------------------------------------------------------

def weight_sources(config: dict) -> list[tuple[str, str]]:
    """(where, checkpoint) for each pretrained checkpoint the config loads: ``load_from``, every
    ``init_cfg`` of type Pretrained and every ``pretrained`` string in the model."""
    found = [('load_from', config['load_from'])] if isinstance(config.get('load_from'), str) else []

    def walk(node, where):
        if isinstance(node, dict):
            if node.get('type') in ('Pretrained', 'PretrainedInit') and isinstance(node.get('checkpoint'), str):
                found.append((f'{where}.checkpoint', node['checkpoint']))
            for key, value in node.items():
                if key == 'pretrained' and isinstance(value, str):
                    found.append((f'{where}.pretrained', value))
                else:
                    walk(value, f'{where}.{key}')
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f'{where}[{i}]')

    walk(config.get('model'), 'model')
    return found


def check_weights(config: dict) -> None:
    """Every checkpoint the config loads is a local file or in torch's download cache.

    A URL that is not cached yet is downloaded once, here, so that trials do not all fetch it; when
    that fails (no internet) the search stops with one line saying how to pass a local file.
    """
    for where, checkpoint in weight_sources(config):
        if '://' not in checkpoint:
            if not is_file(Path(checkpoint).expanduser()):
                raise UsageError(f'{where}: weights file {checkpoint} does not exist')
            continue
        url, local = weights_url(checkpoint)
        if local is not None and is_file(local):
            continue
        reason = 'mmcv knows no such model' if url is None else _download(url, local)
        if reason:
            fix = ('load_from=/path/to/weights.pth' if where == 'load_from'
                   else f'cfg.{where}=/path/to/weights.pth, or train from scratch with cfg.{where.rsplit(".", 1)[0]}=null')
            raise UsageError(f'{where} names weights by URL ({checkpoint}) that are not in the local cache '
                             f'({local or "none for that name"}) and could not be downloaded ({reason}); pass a local '
                             f'file: {fix}')


def weights_url(checkpoint: str) -> tuple[str | None, Path | None]:
    """(URL, the local file mmcv loads it from) for a checkpoint named by URL; (None, None) if unknown."""
    from mmcv.runner.checkpoint import get_external_models, get_mmcls_models, get_torchvision_models

    scheme, name = checkpoint.split('://', 1)
    tables = {'torchvision': get_torchvision_models, 'open-mmlab': get_external_models,
              'openmmlab': get_external_models, 'mmcls': get_mmcls_models}
    if scheme in tables:
        url = tables[scheme]().get(name)
        if url is None:
            return None, None
        if not url.startswith(('http://', 'https://')):  # open-mmlab:// may map to a local file
            return url, Path(url)
    elif scheme in ('http', 'https'):
        url = checkpoint
    else:
        return None, None
    import torch

    return url, Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(url.split('?')[0])


def _download(url: str, local: Path) -> str:
    """Download ``url`` to ``local`` where mmcv looks for it; return why it failed ('' on success)."""
    import socket

    import torch

    local.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        print(f'DynTune: downloading {url} -> {local}', flush=True)
        torch.hub.download_url_to_file(url, str(local), progress=False)
    except Exception as err:  # noqa: BLE001  (no network, HTTP errors, timeouts: all say the same to the user)
        return f'{type(err).__name__}: {first_line(err)}'
    finally:
        socket.setdefaulttimeout(previous)
    return ''


# 4. Learning rate relative to the base -------------------------------------------------------------

def factor_base(config: dict, path: str) -> float:
    """The value a factor distribution at ``path`` multiplies.

    For ``optimizer.lr`` it is the base's rate scaled linearly from ``auto_scale_lr.base_batch_size``
    to this trial's batch (``data.samples_per_gpu`` on one device), the rule of mmdet's
    ``--auto-scale-lr``; when the base enables ``auto_scale_lr`` itself, mmdet scales the rate in
    training, so it is taken as it is. Elsewhere it is the value at the path.
    """
    value = get_path(config, path)
    from search.errors import is_number

    if not is_number(value) or value <= 0:
        raise UsageError(f"a factor distribution at '{path}' needs a number > 0 there in the base config, got {value!r}")
    if path == LR_PATH and not (config.get('auto_scale_lr') or {}).get('enable'):
        base_batch = (config.get('auto_scale_lr') or {}).get('base_batch_size')
        batch = (config.get('data') or {}).get('samples_per_gpu')
        if base_batch and batch:
            value = value * batch / base_batch
    return float(value)


# 5. A trial --------------------------------------------------------------------------------------

def build_trial_config(base: dict, params: dict[str, Any]):
    """Write ``params`` (path -> value) into a copy of ``base`` and return an ``mmcv.Config``."""
    from mmcv import Config

    config = copy.deepcopy(base)
    for path, value in params.items():
        set_path(config, path, value)
    return Config(config)


def merge(base: dict, fragment: dict) -> dict:
    """Recursive merge: dicts merge key by key, everything else replaces; ``_delete_: true`` replaces a dict."""
    out = copy.deepcopy(base)
    for key, value in (fragment or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get('_delete_', False):
            out[key] = merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != '_delete_'}
        else:
            out[key] = copy.deepcopy(value)
    return out


def get_path(config: dict, path: str, what: str | None = None):
    """Value at ``path`` in ``config``; :class:`UsageError` if it does not exist."""
    parent, key = _resolve_parent(config, path, what or f"parameter path '{path}'")
    return parent[key]


def set_path(config: dict, path: str, value, what: str | None = None) -> None:
    """Set an existing key at ``path``; a missing key is an error so a value is never silently unused."""
    parent, key = _resolve_parent(config, path, what or f"parameter path '{path}'")
    parent[key] = value


def has_path(config: dict, path: str) -> bool:
    try:
        get_path(config, path)
    except UsageError:
        return False
    return True


def _resolve_parent(config: dict, path: str, what: str):
    tokens = path.split('.')
    node = config
    for depth, token in enumerate(tokens):
        match = _TOKEN.match(token)
        if match is None:
            raise UsageError(f"{what}: bad segment '{token}' (write key, key[type=Name] or key[N])")
        key = match['key']
        if not isinstance(node, dict) or key not in node:
            where = '.'.join(tokens[:depth]) or 'the config'
            raise UsageError(f"{what}: '{key}' not found in {where}; only keys the config has can be set "
                             '(a space adds defaults in its mmdet: block)')
        last = depth == len(tokens) - 1
        if match['type'] is None and match['index'] is None:
            if last:
                return node, key
            node = node[key]
            continue
        items = node[key]
        if not isinstance(items, list):
            raise UsageError(f"{what}: '{key}' is not a list")
        if match['index'] is not None:
            index = int(match['index'])
            if index >= len(items):
                raise UsageError(f"{what}: '{key}' has {len(items)} elements, no [{index}]")
        else:
            hits = [i for i, item in enumerate(items) if isinstance(item, dict) and item.get('type') == match['type']]
            if len(hits) != 1:
                raise UsageError(f"{what}: {len(hits)} elements of '{key}' have type '{match['type']}', need exactly one")
            index = hits[0]
        if last:
            return items, index
        node = items[index]
    raise UsageError(f'{what} is empty')
