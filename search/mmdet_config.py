"""Build the mmdet 2.x config a trial trains with.

Two steps, so that every problem is found before Ray starts:

1. :func:`build_base_config` (driver side, once): model preset + backbone + dataset + the shared
   training recipe + the space's ``mmdet:`` fragment -> a plain dict.
2. :func:`build_trial_config` (trial side, per trial): the base dict with the trial's sampled
   parameters written at their paths -> an ``mmcv.Config``. The driver calls it with the lowest
   and highest value of every distribution so a bad path fails early.

Path syntax (docs/spaces.md): ``a.b[type=X].c`` or ``a.b[2].c``.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from search.errors import UsageError

PLUGINS = dict(imports=['dyncomponents'], allow_failed_imports=False)
IMAGENET_NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
_TOKEN = re.compile(r'^(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?:\[(?:type=(?P<type>[^\]]+)|(?P<index>\d+))\])?$')


def build_base_config(*, model: dict, backbone: dict, neck_in_channels: list[int], img_norm: dict | None,
                      data: dict, train: dict, max_epochs: int, seed: int, device: str,
                      space_fragment: dict) -> dict:
    """Compose the plain-dict mmdet config shared by all trials of a search.

    Args:
        model (dict): the mmdet ``model`` dict of the preset, without backbone.
        backbone (dict): the mmdet backbone dict.
        neck_in_channels (list[int]): channels of the backbone outputs, for the FPN.
        img_norm (dict | None): the normalisation the backbone's weights expect (None: ImageNet's).
        data (dict): ``classes``, ``train_ann``, ``val_ann``, ``img_prefix`` (absolute paths).
        train (dict): the ``train:`` section of the search config (lr, batch size, image scale...).
        max_epochs (int): the epoch budget.
        seed (int): training seed.
        device (str): ``cpu`` or ``cuda``.
        space_fragment (dict): the space's ``mmdet:`` block, merged last.
    """
    model = copy.deepcopy(model)
    model['backbone'] = copy.deepcopy(backbone)
    model['neck']['in_channels'] = list(neck_in_channels)
    _set_num_classes(model, len(data['classes']))
    norm = dict(img_norm or IMAGENET_NORM)
    scale = tuple(train['img_scale'])
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', img_scale=scale, keep_ratio=True),
        dict(type='RandomFlip', flip_ratio=0.5),
        dict(type='Normalize', **norm),
        dict(type='Pad', size_divisor=32),
        dict(type='DefaultFormatBundle'),
        dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='MultiScaleFlipAug', img_scale=scale, flip=False, transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Normalize', **norm),
            dict(type='Pad', size_divisor=32),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ]),
    ]
    classes = list(data['classes'])

    def dataset(ann_file, pipeline):
        return dict(type='CocoDataset', classes=classes, ann_file=ann_file, img_prefix=data['img_prefix'],
                    pipeline=pipeline)

    config = dict(
        custom_imports=copy.deepcopy(PLUGINS),
        model=model,
        data=dict(samples_per_gpu=int(train['batch_size']), workers_per_gpu=int(train['workers']),
                  train=dataset(data['train_ann'], train_pipeline),
                  val=dataset(data['val_ann'], test_pipeline),
                  test=dataset(data['val_ann'], test_pipeline)),
        evaluation=dict(interval=1, metric='bbox'),
        optimizer=dict(type='SGD', lr=float(train['lr']), momentum=float(train['momentum']),
                       weight_decay=float(train['weight_decay'])),
        optimizer_config=dict(grad_clip=dict(max_norm=float(train['grad_clip']), norm_type=2)),
        # Decay points are fractions of runner.max_epochs (dyncomponents/schedules), so they stay
        # right when a space samples the budget.
        lr_config=dict(policy='BudgetStep', step_fractions=[float(f) for f in train['lr_steps']], gamma=0.1,
                       warmup='linear', warmup_iters=int(train['warmup_iters']), warmup_ratio=0.001),
        runner=dict(type='EpochBasedRunner', max_epochs=int(max_epochs)),
        checkpoint_config=dict(interval=1),
        log_config=dict(interval=10, hooks=[dict(type='TextLoggerHook')]),
        custom_hooks=[],
        dist_params=dict(backend='nccl'),
        log_level='INFO',
        load_from=None,
        resume_from=None,
        workflow=[('train', 1)],
        opencv_num_threads=0,
        mp_start_method='fork',
        auto_scale_lr=dict(enable=False, base_batch_size=16),
        seed=int(seed),
        gpu_ids=[0],
        device=device,
    )
    return merge(config, space_fragment)


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


def get_path(config: dict, path: str):
    """Value at ``path`` in ``config``; :class:`UsageError` if it does not exist."""
    parent, key = _resolve_parent(config, path)
    return parent[key]


def set_path(config: dict, path: str, value) -> None:
    """Set an existing key at ``path``; a missing key is an error so a value is never silently unused."""
    parent, key = _resolve_parent(config, path)
    parent[key] = value


def _resolve_parent(config: dict, path: str):
    tokens = path.split('.')
    node = config
    for depth, token in enumerate(tokens):
        match = _TOKEN.match(token)
        if match is None:
            raise UsageError(f"parameter path '{path}': bad segment '{token}' (write key, key[type=Name] or key[N])")
        key = match['key']
        if not isinstance(node, dict) or key not in node:
            where = '.'.join(tokens[:depth]) or 'the config'
            raise UsageError(f"parameter path '{path}': '{key}' not found in {where}; "
                             'add its default to the space\'s mmdet: block or fix the path')
        last = depth == len(tokens) - 1
        if match['type'] is None and match['index'] is None:
            if last:
                return node, key
            node = node[key]
            continue
        items = node[key]
        if not isinstance(items, list):
            raise UsageError(f"parameter path '{path}': '{key}' is not a list")
        if match['index'] is not None:
            index = int(match['index'])
            if index >= len(items):
                raise UsageError(f"parameter path '{path}': '{key}' has {len(items)} elements, no [{index}]")
        else:
            hits = [i for i, item in enumerate(items) if isinstance(item, dict) and item.get('type') == match['type']]
            if len(hits) != 1:
                raise UsageError(f"parameter path '{path}': {len(hits)} elements of '{key}' have type "
                                 f"'{match['type']}', need exactly one")
            index = hits[0]
        if last:
            return items, index
        node = items[index]
    raise UsageError(f"parameter path '{path}' is empty")


def _set_num_classes(model: dict, num_classes: int) -> None:
    for head in (model.get('bbox_head'), (model.get('roi_head') or {}).get('bbox_head')):
        if isinstance(head, dict):
            head['num_classes'] = num_classes


def absolute(root: str | Path, relative: str) -> str:
    return str((Path(root) / relative).resolve()) + ('/' if relative.endswith('/') else '')
