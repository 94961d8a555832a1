"""Dynamic Backbone Freezing: schedules against hand tables, the gate, the hook in real mmcv runners."""
import copy
import logging
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmcv.runner import HOOKS, EpochBasedRunner, Hook
from torch import nn

from dyncomponents.dbf import (FREEZE_SCHEDULES, AlwaysFrozenSchedule, BackboneGate, BudgetStepFreezeSchedule,
                               DynamicBackboneFreezingHook, EpochListFreezeSchedule, NeverFrozenSchedule,
                               StepFreezeSchedule, build_freeze_schedule, step_trains)


def trained_epochs(schedule, max_epochs, iters_per_epoch=1):
    return [e for e in range(max_epochs) if schedule.trains(e, 0, max_epochs, iters_per_epoch)]


# ---------------------------------------------------------------- schedules

def test_dbf_seed_step_epoch_rho20_over_100_epochs():
    assert trained_epochs(StepFreezeSchedule(rho=20), 100) == [0, 20, 40, 60, 80]


def test_dbf_seed_steps_list_readme_example():
    s = EpochListFreezeSchedule(steps=[i for i in range(1, 100, 20)])
    assert trained_epochs(s, 100) == [1, 21, 41, 61, 81]
    assert not s.trains(0, 0, 100, 1)


@pytest.mark.parametrize('cfg, max_epochs, expected', [
    (dict(type='StepFreezeSchedule', rho=1), 4, [0, 1, 2, 3]),
    (dict(type='StepFreezeSchedule', rho=3), 9, [0, 3, 6]),
    (dict(type='StepFreezeSchedule', rho=3, phase=2), 9, [2, 5, 8]),
    (dict(type='StepFreezeSchedule', rho=4, duty=2), 8, [0, 1, 4, 5]),
    # warm-up 2 epochs, then period 4 counted from epoch 2 with offset 1 and 2 trained epochs
    (dict(type='StepFreezeSchedule', rho=4, phase=1, duty=2, warmup=2), 12, [0, 1, 3, 4, 7, 8, 11]),
    (dict(type='BudgetStepFreezeSchedule', period=0.25), 8, [0, 2, 4, 6]),
    (dict(type='BudgetStepFreezeSchedule', period=0.25), 12, [0, 3, 6, 9]),
    # rho=4, duty=2, phase=2, warmup=2 for 8 epochs
    (dict(type='BudgetStepFreezeSchedule', period=0.5, phase=0.5, duty=0.5, warmup=0.25), 8, [0, 1, 4, 5]),
    # period 0.25 of 4 epochs rounds to rho=1 (never frozen); min_rho=2 keeps a frozen epoch per period
    (dict(type='BudgetStepFreezeSchedule', period=0.25), 4, [0, 1, 2, 3]),
    (dict(type='BudgetStepFreezeSchedule', period=0.25, min_rho=2), 4, [0, 2]),
    (dict(type='EpochListFreezeSchedule', steps=[3, 0]), 5, [0, 3]),
    (dict(type='EpochListFreezeSchedule', steps=[]), 5, []),
    (dict(type='AlwaysFrozenSchedule'), 5, []),
    (dict(type='NeverFrozenSchedule'), 5, [0, 1, 2, 3, 4]),
])
def test_dbf_schedule_tables(cfg, max_epochs, expected):
    assert trained_epochs(build_freeze_schedule(cfg), max_epochs) == expected


def test_dbf_iteration_granularity_table():
    # rho=4 iterations with 2 trained toggles every 2 global iterations, across epoch borders.
    s = StepFreezeSchedule(rho=4, duty=2, by_epoch=False)
    table = [[s.trains(e, i, 2, 3) for i in range(3)] for e in range(2)]
    assert table == [[True, True, False], [False, True, True]]
    assert s.trained_epochs(2, 3) == [2 / 3, 2 / 3]


def test_dbf_budget_schedule_same_shape_for_any_budget():
    # a trained warm-up of 20 % of the budget, then half of every period of 20 % of the budget
    s = BudgetStepFreezeSchedule(period=0.2, duty=0.5, warmup=0.2)
    for max_epochs in (10, 20, 40):
        assert sum(s.trained_epochs(max_epochs, 1)) / max_epochs == pytest.approx(0.2 + 0.8 * 0.5)
        assert s.last_phase_change_epoch(max_epochs, 1) == 0.4 * max_epochs


@pytest.mark.parametrize('schedule, max_epochs, iters, expected', [
    (StepFreezeSchedule(rho=4, warmup=2), 20, 5, 6),
    (StepFreezeSchedule(rho=4, warmup=2), 5, 5, 5),
    (StepFreezeSchedule(rho=1), 20, 5, 0),
    (StepFreezeSchedule(rho=8, duty=4, by_epoch=False), 20, 3, 3),
    (BudgetStepFreezeSchedule(period=0.25, warmup=0.25), 8, 5, 4),
    (EpochListFreezeSchedule(steps=[1, 21, 41, 61, 81]), 100, 5, 2),
    (EpochListFreezeSchedule(steps=[0]), 100, 5, 2),
    (AlwaysFrozenSchedule(), 10, 5, 0),
    (NeverFrozenSchedule(), 10, 5, 0),
])
def test_dbf_last_phase_change_epoch(schedule, max_epochs, iters, expected):
    assert schedule.last_phase_change_epoch(max_epochs, iters) == expected


@given(rho=st.integers(1, 30), data=st.data(), warmup=st.integers(0, 10))
@settings(max_examples=60, deadline=None)
def test_dbf_every_period_trains_exactly_duty_steps(rho, data, warmup):
    phase = data.draw(st.integers(0, rho - 1))
    duty = data.draw(st.integers(1, rho))
    assert all(step_trains(t, rho, phase, duty, warmup) for t in range(warmup))
    for start in (warmup, warmup + 3 * rho):
        assert sum(step_trains(t, rho, phase, duty, warmup) for t in range(start, start + rho)) == duty


@pytest.mark.parametrize('cfg, message', [
    (dict(type='StepFreezeSchedule', rho=0), 'rho must be an int >= 1, got 0'),
    (dict(type='StepFreezeSchedule', rho=2.5), 'got 2.5'),
    (dict(type='StepFreezeSchedule', rho=3, phase=3), 'phase must be an int in [0, 2], got 3'),
    (dict(type='StepFreezeSchedule', rho=3, duty=4), 'duty must be an int in [1, 3], got 4'),
    (dict(type='StepFreezeSchedule', warmup=-1), 'warmup must be an int >= 0, got -1'),
    (dict(type='BudgetStepFreezeSchedule', period=0), 'period must be a number in (0, 1], got 0'),
    (dict(type='BudgetStepFreezeSchedule', phase=1.0), 'phase must be a number in [0, 1), got 1.0'),
    (dict(type='BudgetStepFreezeSchedule', warmup=1.5), 'warmup must be a number in [0, 1], got 1.5'),
    (dict(type='BudgetStepFreezeSchedule', min_rho=0), 'min_rho must be an int >= 1, got 0'),
    (dict(type='EpochListFreezeSchedule', steps=[1, -2]), 'got -2'),
    (dict(type='NoSuchSchedule'), 'NoSuchSchedule'),
    ('StepFreezeSchedule', 'registered types'),
])
def test_dbf_bad_arguments_raise_value_error_with_value_and_rule(cfg, message):
    with pytest.raises((ValueError, KeyError)) as info:
        build_freeze_schedule(cfg)
    assert message in str(info.value)


def test_dbf_hook_and_schedules_registered():
    assert HOOKS.get('DynamicBackboneFreezingHook') is DynamicBackboneFreezingHook
    for name in ('StepFreezeSchedule', 'BudgetStepFreezeSchedule', 'EpochListFreezeSchedule',
                 'AlwaysFrozenSchedule', 'NeverFrozenSchedule'):
        assert FREEZE_SCHEDULES.get(name) is not None
    with pytest.raises(ValueError, match="bn_mode must be one of .*got 'frozen'"):
        DynamicBackboneFreezingHook(bn_mode='frozen')


# ---------------------------------------------------------------- the gate on a toy detector

class ToyDetector(nn.Module):
    """Backbone (conv + BN) -> neck -> head, with mmcv's ``train_step`` protocol."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.neck = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 1)

    def forward(self, img):
        return self.head(self.neck(self.backbone(img)).mean((2, 3)))

    def train_step(self, data, optimizer):
        loss = ((self(data['img']) - data['target']) ** 2).mean()
        return dict(loss=loss, log_vars=dict(loss=loss.item()), num_samples=data['img'].shape[0])


def toy_batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [dict(img=torch.rand(2, 3, 8, 8, generator=g), target=torch.rand(2, 1, generator=g)) for _ in range(n)]


@pytest.mark.parametrize('trains', [True, False])
def test_dbf_gate_frozen_runs_backbone_under_no_grad_and_leaves_grads_none(trains):
    torch.manual_seed(0)
    model = ToyDetector()
    gate = BackboneGate(model.backbone)
    gate.install()
    gate.trains = trains
    grad_enabled = []
    model.backbone[0].register_forward_hook(lambda m, i, o: grad_enabled.append(torch.is_grad_enabled()))
    model.train_step(toy_batches(1)[0], None)['loss'].backward()
    assert grad_enabled == [trains]
    assert all((p.grad is not None) == trains for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.neck.parameters())
    gate.remove()
    assert 'forward' not in model.backbone.__dict__
    assert list(model.state_dict()) == list(ToyDetector().state_dict())


@pytest.mark.parametrize('bn_mode, stats_change', [('train', True), ('eval', False)])
def test_dbf_bn_mode_controls_running_statistics_while_frozen(bn_mode, stats_change):
    model = ToyDetector().train()
    gate = BackboneGate(model.backbone, bn_mode)
    gate.install()
    gate.trains = False
    bn = model.backbone[1]
    before = bn.running_mean.clone()
    model(toy_batches(1)[0]['img'])
    assert (not torch.equal(bn.running_mean, before)) == stats_change
    assert bn.training  # eval is only for the frozen forward


# ---------------------------------------------------------------- the hook in a real EpochBasedRunner

class Recorder(Hook):
    """Snapshots parameters and the DBF metrics after every epoch (registered after the DBF hook)."""

    def __init__(self, dbf):
        self.dbf = dbf
        self.backbone, self.head, self.metrics = [], [], []

    def after_train_epoch(self, runner):
        model = runner.model
        self.backbone.append([p.detach().clone() for p in model.backbone.parameters()])
        self.head.append([p.detach().clone() for p in model.head.parameters()])
        self.metrics.append(self.dbf.epoch_metrics())


class LegacyZeroGradOptimizerHook(Hook):
    """The torch 1.x step: ``zero_grad`` keeps zero tensors, which momentum and weight decay would move."""

    def after_train_iter(self, runner):
        runner.optimizer.zero_grad(set_to_none=False)
        runner.outputs['loss'].backward()
        runner.optimizer.step()


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def run_toy(tmp_path, schedule, max_epochs, optimizer_hook=None, resume_from=None, model=None):
    torch.manual_seed(0)
    model = model or ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    runner = EpochBasedRunner(model, optimizer=optimizer, work_dir=str(tmp_path),
                              logger=logging.getLogger('test_dbf'), max_epochs=max_epochs)
    if optimizer_hook is None:
        runner.register_training_hooks(lr_config=None, optimizer_config=dict(grad_clip=None),
                                       checkpoint_config=dict(interval=1))
    else:
        runner.register_training_hooks(lr_config=None, checkpoint_config=dict(interval=1))
        runner.register_hook(optimizer_hook, priority='ABOVE_NORMAL')
    dbf = DynamicBackboneFreezingHook(schedule=schedule)
    recorder = Recorder(dbf)
    runner.register_hook(dbf)
    runner.register_hook(recorder, priority='LOW')
    if resume_from:
        runner.resume(resume_from)
    initial = [p.detach().clone() for p in model.backbone.parameters()]
    runner.run([toy_batches(3)], [('train', 1)])
    return runner, recorder, initial


@pytest.mark.parametrize('optimizer_hook', [None, LegacyZeroGradOptimizerHook()], ids=['mmcv', 'zero-grads'])
def test_dbf_frozen_epoch_keeps_backbone_bit_identical_with_sgd_momentum_and_decay(tmp_path, optimizer_hook):
    # epoch 0 trains (fills the momentum buffers), epochs 1 and 2 are frozen, epoch 3 trains again
    runner, rec, initial = run_toy(tmp_path, dict(type='EpochListFreezeSchedule', steps=[0, 3]), 4, optimizer_hook)
    assert not same(initial, rec.backbone[0])
    assert runner.optimizer.state[next(runner.model.backbone.parameters())]['momentum_buffer'].abs().sum() > 0
    assert same(rec.backbone[0], rec.backbone[1]) and same(rec.backbone[1], rec.backbone[2])
    assert not same(rec.backbone[2], rec.backbone[3])
    assert all(not same(rec.head[i], rec.head[i + 1]) for i in range(3))
    assert [m['dbf_trained'] for m in rec.metrics] == [1.0, 0.0, 0.0, 1.0]
    assert [m['dbf_trained_fraction'] for m in rec.metrics] == pytest.approx([1.0, 0.5, 1 / 3, 0.5])
    assert all(m['dbf_epoch_seconds'] > 0 and m['dbf_epoch_peak_mem_mb'] > 0 for m in rec.metrics)
    assert 'forward' not in runner.model.backbone.__dict__  # the gate is removed after the run


def test_dbf_epoch_metrics_are_the_declared_ones_and_reading_clears_nothing(tmp_path):
    _, rec, _ = run_toy(tmp_path, dict(type='StepFreezeSchedule', rho=2), 2)
    assert all(set(m) == set(DynamicBackboneFreezingHook.METRICS.names()) for m in rec.metrics)
    assert rec.dbf.epoch_metrics() == rec.metrics[-1]  # read once per epoch already, still there


def test_dbf_iteration_granularity_reports_trained_share(tmp_path):
    _, rec, _ = run_toy(tmp_path, dict(type='StepFreezeSchedule', rho=3, by_epoch=False), 2)
    # 3 iterations per epoch, one trained in every 3 global iterations
    assert [m['dbf_trained'] for m in rec.metrics] == pytest.approx([1 / 3, 1 / 3])


def test_dbf_resume_mid_schedule_takes_the_same_decisions(tmp_path):
    schedule = dict(type='StepFreezeSchedule', rho=3, phase=1)
    _, full, _ = run_toy(tmp_path / 'full', schedule, 4)
    # resume after 2 epochs: epochs 2 and 3 must be decided and counted as in the full run
    _, resumed, _ = run_toy(tmp_path / 'resumed', schedule, 4, resume_from=str(tmp_path / 'full' / 'epoch_2.pth'))
    assert len(resumed.metrics) == 2
    assert resumed.metrics == [dict(m, dbf_epoch_seconds=r['dbf_epoch_seconds'],
                                    dbf_epoch_peak_mem_mb=r['dbf_epoch_peak_mem_mb'])
                               for m, r in zip(full.metrics[2:], resumed.metrics)]
    assert [m['dbf_trained'] for m in full.metrics] == [0.0, 1.0, 0.0, 0.0]


def test_dbf_hook_rejects_a_detector_without_backbone(tmp_path):
    model = nn.Linear(1, 1)
    model.train_step = lambda data, optimizer: None
    runner = EpochBasedRunner(model, work_dir=str(tmp_path), logger=logging.getLogger('test_dbf'), max_epochs=1)
    with pytest.raises(ValueError, match='needs a detector with a `backbone` module, got Linear'):
        DynamicBackboneFreezingHook().before_run(runner)


# ---------------------------------------------------------------- a real mmdet detector

def retinanet_r18(num_classes=3):
    return dict(
        type='RetinaNet',
        backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch'),
        neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=32, start_level=1,
                  add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(type='RetinaHead', num_classes=num_classes, in_channels=32, stacked_convs=1, feat_channels=32,
                       anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                             ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
                       loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                       loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=10))


def demo_mm_batches(n, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    meta = dict(img_shape=(size, size, 3), ori_shape=(size, size, 3), pad_shape=(size, size, 3),
                scale_factor=1.0, flip=False)
    batches = []
    for _ in range(n):
        xy = torch.rand(2, 1, 2, generator=g) * size / 2
        boxes = torch.cat([xy, xy + size / 4 + torch.rand(2, 1, 2, generator=g) * size / 4], dim=2)
        batches.append(dict(img=torch.rand(2, 3, size, size, generator=g), img_metas=[dict(meta), dict(meta)],
                            gt_bboxes=list(boxes), gt_labels=[torch.tensor([1]), torch.tensor([2])]))
    return batches


@pytest.mark.slow
def test_dbf_real_retinanet_in_mmdataparallel_frozen_epoch_is_bit_identical(tmp_path):
    from mmcv import ConfigDict
    from mmcv.parallel import MMDataParallel
    from mmdet.models import build_detector

    torch.manual_seed(0)
    detector = build_detector(ConfigDict(retinanet_r18()))
    model = MMDataParallel(detector, device_ids=None)
    optimizer = torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    runner = EpochBasedRunner(model, optimizer=optimizer, work_dir=str(tmp_path),
                              logger=logging.getLogger('test_dbf'), max_epochs=2)
    runner.register_training_hooks(lr_config=None, optimizer_config=dict(grad_clip=dict(max_norm=35)))
    dbf = DynamicBackboneFreezingHook(schedule=dict(type='StepFreezeSchedule', rho=2))
    runner.register_hook(dbf)
    snapshots = []

    class Snap(Hook):
        def after_train_epoch(self, runner):
            snapshots.append(copy.deepcopy(detector.state_dict()))

    runner.register_hook(Snap(), priority='LOW')
    start = copy.deepcopy(detector.state_dict())
    runner.run([demo_mm_batches(2)], [('train', 1)])

    def changed(a, b, prefix):
        return [k for k in a if k.startswith(prefix) and a[k].is_floating_point() and not torch.equal(a[k], b[k])]

    weights = [k for k, _ in detector.backbone.named_parameters(prefix='backbone')]
    assert set(weights) <= set(changed(start, snapshots[0], 'backbone.'))  # epoch 0 trains every weight
    assert set(changed(snapshots[0], snapshots[1], 'backbone.')).isdisjoint(weights)  # epoch 1 frozen
    assert changed(snapshots[0], snapshots[1], 'bbox_head.')
    # the seed's default BN behaviour: running statistics keep updating while frozen
    assert 'backbone.bn1.running_mean' in changed(snapshots[0], snapshots[1], 'backbone.')


# ---------------------------------------------------------------- a short real training with mmdet's train_detector

def small_coco_subset(root, tmp_path, n_images):
    """Write an annotation file with the first ``n_images`` train images (into tmp_path, never the repo)."""
    import json

    coco = json.loads((root / 'annotations' / 'train.json').read_text())
    images = coco['images'][:n_images]
    keep = {im['id'] for im in images}
    coco = dict(coco, images=images, annotations=[a for a in coco['annotations'] if a['image_id'] in keep])
    path = tmp_path / 'train_subset.json'
    path.write_text(json.dumps(coco))
    return path, tuple(c['name'] for c in coco['categories'])


@pytest.mark.slow
def test_dbf_short_real_training_on_bccd_freezes_on_scheduled_epochs(shared_dataset, tmp_path):
    from mmcv import Config
    from mmdet.apis import train_detector
    from mmdet.datasets import build_dataset
    from mmdet.models import build_detector

    root = shared_dataset('bccd')
    ann, classes = small_coco_subset(root, tmp_path, 8)
    norm = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                dict(type='Resize', img_scale=(128, 96), keep_ratio=True), dict(type='RandomFlip', flip_ratio=0.0),
                dict(type='Normalize', **norm), dict(type='Pad', size_divisor=32), dict(type='DefaultFormatBundle'),
                dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])]
    snapshots = []

    class Snap(Hook):
        def after_train_epoch(self, runner):
            snapshots.append({k: v.clone() for k, v in runner.model.module.state_dict().items()})

    train = dict(type='CocoDataset', ann_file=str(ann), img_prefix=str(root / 'images') + '/', classes=classes,
                 pipeline=pipeline)
    cfg = Config(dict(
        model=retinanet_r18(len(classes)),
        data=dict(samples_per_gpu=2, workers_per_gpu=0, train=train, val=train, test=train),  # unused: validate=False
        optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
        optimizer_config=dict(grad_clip=dict(max_norm=35, norm_type=2)), lr_config=None,
        runner=dict(type='EpochBasedRunner', max_epochs=3), checkpoint_config=dict(interval=1),
        log_config=dict(interval=50, hooks=[]), log_level='WARNING', workflow=[('train', 1)],
        custom_imports=dict(imports=['dyncomponents'], allow_failed_imports=False),
        custom_hooks=[dict(type='DynamicBackboneFreezingHook', schedule=dict(type='StepFreezeSchedule', rho=2))],
        work_dir=str(tmp_path / 'work'), gpu_ids=[0], device='cpu', seed=0, resume_from=None, load_from=None))
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    dataset = build_dataset(cfg.data.train)
    model.CLASSES = dataset.CLASSES
    cfg.custom_hooks.append(Snap())  # registered after the DBF hook, same priority
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train_detector(model, [dataset], cfg, distributed=False, validate=False)

    weights = [k for k, _ in model.backbone.named_parameters(prefix='backbone')]
    heads = [k for k, _ in model.bbox_head.named_parameters(prefix='bbox_head')]
    before = [start] + snapshots[:-1]
    moved = [[k for k in weights if not torch.equal(a[k], b[k])] for a, b in zip(before, snapshots)]
    assert [len(m) == len(weights) for m in moved] == [True, False, True]  # epochs 0 and 2 train
    assert moved[1] == []  # epoch 1 frozen: every backbone weight bit-identical
    assert all(any(not torch.equal(a[k], b[k]) for k in heads) for a, b in zip(before, snapshots))
    meta = torch.load(tmp_path / 'work' / 'epoch_3.pth', map_location='cpu', weights_only=False)['meta']
    assert meta['hook_msgs']['dbf_trained_epochs'] == pytest.approx(2.0)
    assert meta['hook_msgs']['dbf_seen_epochs'] == pytest.approx(3.0)
