"""Tests of DynamicRCNNRoIHead: update rule, timing, empty batches, checkpoints, dense images."""
import copy
import math
import time

import mmcv
import pytest
import torch
from mmcv.runner import load_checkpoint, save_checkpoint
from mmdet.models import build_head
from mmdet.models.builder import HEADS

import dyncomponents  # noqa: F401  (registration)
from dyncomponents.dynamic_rcnn import DynamicRCNNRoIHead, dynamic_update

GT = [0., 0., 100., 100.]


def _head_cfg(type_='DynamicRCNNRoIHead', sampler_num=64, **dynamic):
    dyn = dict(iou_topk=1, beta_topk=1, update_iter_interval=3, initial_iou=0.4, initial_beta=2.0)
    dyn.update(dynamic)
    return dict(
        type=type_,
        bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                                out_channels=8, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16,
                       roi_feat_size=7, num_classes=2,
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                       target_stds=[0.1, 0.1, 0.2, 0.2]),
                       reg_class_agnostic=False,
                       loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                       loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0)),
        train_cfg=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                          min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=sampler_num, pos_fraction=0.25, neg_pos_ub=-1,
                         add_gt_as_proposals=True),
            pos_weight=-1, debug=False, dynamic_rcnn=dyn),
        test_cfg=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))


def _make(cfg):
    torch.manual_seed(0)
    return build_head(mmcv.ConfigDict(cfg))  # mmdet reads train_cfg by attribute


def _build(sampler_num=64, **dynamic):
    return _make(_head_cfg(sampler_num=sampler_num, **dynamic))


def _step(head, proposals, gts=(GT,), num_imgs=1):
    """One forward_train on a 128x128 image whose only positive candidates are ``proposals``."""
    torch.manual_seed(1)
    x = [torch.rand(num_imgs, 8, 128 // s, 128 // s) for s in (4, 8, 16, 32)]
    far = [[110., 110., 126., 126.], [100., 0., 127., 20.]]  # IoU 0 with GT: negatives
    props = torch.tensor(list(proposals) + far)
    props = torch.cat([props, torch.full((len(props), 1), 0.9)], dim=1)
    gt = torch.tensor(gts, dtype=torch.float32).reshape(-1, 4)
    metas = [dict(img_shape=(128, 128, 3), pad_shape=(128, 128, 3), scale_factor=1.0)] * num_imgs
    return head.forward_train(x, metas, [props] * num_imgs, [gt] * num_imgs,
                              [torch.zeros(len(gt), dtype=torch.long)] * num_imgs)


# Proposals of height h on top of GT: IoU h/100 (exact in float32) and
# target mean(|dx|, |dy|) = (50 - h/2) / h / 0.1 / 2.
P50, P75, P625 = [0., 0., 100., 50.], [0., 0., 100., 75.], [0., 0., 100., 62.5]


def _beta_stat(h):
    return (50 - h / 2) / h / 0.1 / 2


def test_registered():
    assert HEADS.get('DynamicRCNNRoIHead') is DynamicRCNNRoIHead


def test_dynamic_update_formula():
    # threshold = max(initial_iou, mean), beta = min(initial_beta, median)
    assert dynamic_update([0.5, 0.75, 0.625], [0.9, 0.2, 0.4, 0.6], 0.4, 1.0, 0.4, 1.0) == (0.625, 0.5)
    # the floor and the ceiling
    assert dynamic_update([0.25, 0.125], [3.0, 2.0, 5.0], 0.45, 0.7, 0.4, 1.0) == (0.4, 1.0)
    # median below EPS keeps beta (mmdet PR #4303); empty histories keep both values
    assert dynamic_update([0.5], [0.0, 0.0, 1.0], 0.4, 0.7, 0.4, 1.0) == (0.5, 0.7)
    assert dynamic_update([], [], 0.55, 0.3, 0.4, 1.0) == (0.55, 0.3)


def test_update_timing_and_values_from_real_forward():
    head = _build(exclude_gt_from_stats=True)
    assert head.bbox_assigner.pos_iou_thr == 0.4  # start_from_initial: the original's warm-up
    assert head.bbox_head.loss_bbox.beta == 2.0
    for n, prop in enumerate([P50, P75]):
        _step(head, [prop])
        assert head.epoch_metrics()['drcnn_num_updates'] == 0.0
    ious, betas = head.history()
    assert ious == [0.5, 0.75]
    assert betas == pytest.approx([_beta_stat(50), _beta_stat(75)], rel=1e-6)
    _step(head, [P625])  # the C-th iteration updates
    metrics = head.epoch_metrics()
    assert metrics['drcnn_num_updates'] == 1.0
    assert metrics['drcnn_iou_thr'] == (0.5 + 0.75 + 0.625) / 3 == 0.625
    assert metrics['drcnn_beta'] == pytest.approx(_beta_stat(62.5), rel=1e-6)  # median 1.5 < 2.0
    assert head.bbox_assigner.pos_iou_thr == head.bbox_assigner.neg_iou_thr == 0.625
    assert head.bbox_assigner.min_pos_iou == 0.625
    assert head.bbox_head.loss_bbox.beta == metrics['drcnn_beta']
    assert head.history() == ([], [])
    for _ in range(3):
        _step(head, [P75])
    assert head.epoch_metrics()['drcnn_num_updates'] == 2.0
    assert head.epoch_metrics()['drcnn_iou_thr'] == 0.75


def test_start_from_initial_false_keeps_configured_assigner_until_first_update():
    head = _build(start_from_initial=False, initial_iou=0.3)
    assert head.bbox_assigner.pos_iou_thr == 0.5 and head.bbox_head.loss_bbox.beta == 1.0
    _step(head, [P75])
    assert head.bbox_assigner.pos_iou_thr == 0.5
    _step(head, [P75])
    _step(head, [P75])
    assert head.bbox_assigner.pos_iou_thr == 1.0  # GT rows (IoU 1) counted: top-1 is 1.0


def test_zero_positive_batch_does_not_crash():
    cfg = _head_cfg(update_iter_interval=2)
    cfg['train_cfg']['sampler']['add_gt_as_proposals'] = False
    mmdet_head = _make(dict(copy.deepcopy(cfg), type='DynamicRoIHead'))
    with pytest.raises((RuntimeError, IndexError)):  # mmdetection #8851: kthvalue on empty
        _step(mmdet_head, [])
    head = _make(cfg)
    losses = _step(head, [])
    losses = _step(head, [])  # the update runs with an empty beta history
    assert torch.isfinite(losses['loss_cls']) and torch.isfinite(losses['loss_bbox'])
    metrics = head.epoch_metrics()
    assert metrics['drcnn_num_updates'] == 1.0
    assert metrics['drcnn_beta'] == 2.0  # skipped statistic: beta kept
    assert metrics['drcnn_iou_thr'] == 0.4  # max IoU 0 -> the floor


def _trained_head(**dynamic):
    head = _build(exclude_gt_from_stats=True, update_iter_interval=2, **dynamic)
    for prop in (P50, P75, P625):  # one update, then one entry in the histories
        _step(head, [prop])
    return head


def _assert_same_state(a, b):
    assert a.epoch_metrics() == b.epoch_metrics()
    assert a.history() == b.history()
    assert b.bbox_assigner.pos_iou_thr == a.bbox_assigner.pos_iou_thr == float(a.dyn_iou_thr)
    assert b.bbox_assigner.neg_iou_thr == b.bbox_assigner.min_pos_iou == float(a.dyn_iou_thr)
    assert b.bbox_head.loss_bbox.beta == a.bbox_head.loss_bbox.beta == float(a.dyn_beta)


def test_state_dict_round_trip_restores_threshold_beta_and_histories():
    a = _trained_head()
    assert a.epoch_metrics()['drcnn_iou_thr'] == 0.625 and len(a.history()[0]) == 1
    b = _build(exclude_gt_from_stats=True, update_iter_interval=2)
    assert b.bbox_assigner.pos_iou_thr == 0.4
    b.load_state_dict(a.state_dict())
    _assert_same_state(a, b)
    # the resumed head goes on exactly like the uninterrupted one
    _step(a, [P50])
    _step(b, [P50])
    _assert_same_state(a, b)
    assert a.epoch_metrics()['drcnn_num_updates'] == 2.0


def test_mmcv_checkpoint_round_trip_with_weights_only_default(tmp_path):
    a = _trained_head()
    model_a = torch.nn.ModuleDict(dict(roi_head=a))
    optimizer = torch.optim.SGD(model_a.parameters(), lr=0.01, momentum=0.9)
    meta = dict(epoch=1, iter=3, mmcv_version=mmcv.__version__, time=time.asctime(),
                CLASSES=('a', 'b'), config='model = dict()', hook_msgs=dict(last_ckpt='x.pth'))
    path = str(tmp_path / 'epoch_1.pth')
    save_checkpoint(model_a, path, optimizer=optimizer, meta=meta)
    model_b = torch.nn.ModuleDict(dict(roi_head=_build(exclude_gt_from_stats=True,
                                                       update_iter_interval=2)))
    ckpt = load_checkpoint(model_b, path, map_location='cpu', strict=True)  # torch.load default
    assert ckpt['meta']['iter'] == 3
    _assert_same_state(a, model_b['roi_head'])


def test_pbt_exploit_into_smaller_interval_updates_from_all_restored_entries():
    source = _build(exclude_gt_from_stats=True, update_iter_interval=4)
    for prop in (P50, P75, P625):
        _step(source, [prop])
    target = _build(exclude_gt_from_stats=True, update_iter_interval=2.4)  # float C rounds to 2
    target.load_state_dict(source.state_dict())
    assert target.history() == source.history()
    _step(target, [P50])  # 4 iterations since the last update >= C=2: update now
    assert target.epoch_metrics()['drcnn_num_updates'] == 1.0
    assert target.epoch_metrics()['drcnn_iou_thr'] == (0.5 + 0.75 + 0.625 + 0.5) / 4


def test_inference_build_loads_training_state():
    a = _trained_head()
    cfg = _head_cfg()
    cfg['train_cfg'] = None
    b = _make(cfg)
    b.load_state_dict(a.state_dict())
    assert b.epoch_metrics() == a.epoch_metrics()
    assert b.bbox_head.loss_bbox.beta == a.bbox_head.loss_bbox.beta


def test_dense_image_options():
    gts = [[x, y, x + 10., y + 10.] for x in range(0, 110, 12) for y in range(0, 110, 12)]  # 100
    near = [[g[0] + 1., g[1], g[2] + 1., g[3]] for g in gts]  # IoU 9*10/(11*10) = 0.818
    # default: the 75-th largest IoU is a GT row (1.0), and the 10-th smallest target is 0
    head = _build(sampler_num=1024, iou_topk=75, beta_topk=10)
    _step(head, near, gts=gts)
    assert head.history() == ([1.0], [0.0])
    # GT rows left out: the statistics come from the proposals
    head = _build(sampler_num=1024, iou_topk=75, beta_topk=10, exclude_gt_from_stats=True)
    _step(head, near, gts=gts)
    ious, betas = head.history()
    assert ious == pytest.approx([90 / 110], rel=1e-6) and betas[0] > 0.0
    # K scaled by objects per image: 75 * 100 / 50 = 150 > 100 GT rows reaches the proposals
    head = _build(sampler_num=1024, iou_topk=75, beta_topk=10, objects_per_image_ref=50)
    _step(head, near, gts=gts)
    ious, betas = head.history()
    assert ious == pytest.approx([90 / 110], rel=1e-6)
    assert betas == [0.0]  # 20-th smallest of 100 GT targets (0) and 100 proposal targets
    # images at or below the reference density are unchanged
    head = _build(iou_topk=1, objects_per_image_ref=50)
    _step(head, [P75])
    assert head.history()[0] == [1.0]


def test_epoch_metrics_and_last_phase_change_epoch():
    head = _build(update_iter_interval=250)
    assert set(head.epoch_metrics()) == {'drcnn_iou_thr', 'drcnn_beta', 'drcnn_num_updates'}
    assert set(head.epoch_metrics()) == set(DynamicRCNNRoIHead.METRICS.names())
    assert head.last_phase_change_epoch(max_epochs=12, iters_per_epoch=100) == 3
    assert head.last_phase_change_epoch(max_epochs=12, iters_per_epoch=250) == 1
    assert head.last_phase_change_epoch(max_epochs=2, iters_per_epoch=10) == 2


@pytest.mark.parametrize('bad, match', [
    (dict(iou_topk=0), 'iou_topk'),
    (dict(update_iter_interval=0.2), 'update_iter_interval'),
    (dict(initial_iou=1.0), 'initial_iou'),
    (dict(initial_beta=0.0), 'initial_beta'),
    (dict(objects_per_image_ref=-1), 'objects_per_image_ref'),
    (dict(iou_top_k=50), 'unknown keys'),
])
def test_bad_settings_raise_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        _build(**bad)


@pytest.mark.parametrize('base', ['faster_rcnn', 'mmdet::faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py'])
def test_space_file_builds_heads_at_the_range_ends(base):
    """The space switches the base's RoI head to the dynamic one (keeping its extractor and box head),
    and every sampled value at both ends of its range builds a head (float C included)."""
    from search.mmdet_config import build_trial_config, load_base, merge_space, resolve_base
    from search.space import highest, load_space, lowest

    space = load_space('dynamic_rcnn')
    assert 'base=faster_rcnn' in space.overrides
    original = load_base(resolve_base(base))
    config = merge_space(original, space)
    roi = config['model']['roi_head']
    assert roi['type'] == 'DynamicRCNNRoIHead' and original['model']['roi_head']['type'] == 'StandardRoIHead'
    assert roi['bbox_roi_extractor'] == original['model']['roi_head']['bbox_roi_extractor']
    assert roi['bbox_head']['loss_bbox']['type'] == 'SmoothL1Loss'  # the zoo's L1Loss has no beta to adapt
    for pick in (lowest, highest):
        cfg = build_trial_config(config, {path: pick(dist) for path, dist in space.params.items()})
        head_cfg = dict(cfg.model.roi_head, train_cfg=cfg.model.train_cfg.rcnn, test_cfg=cfg.model.test_cfg.rcnn)
        head_cfg['bbox_head']['num_classes'] = 2
        head = _make(head_cfg)
        dyn = head_cfg['train_cfg']['dynamic_rcnn']
        assert head.dynamic_cfg['update_iter_interval'] == round(dyn['update_iter_interval'])
        assert head.bbox_assigner.pos_iou_thr == dyn['initial_iou']


@pytest.mark.slow
def test_real_training_on_bccd_moves_the_threshold(shared_dataset, tmp_path):
    from mmdet.apis import train_detector
    from mmdet.datasets import build_dataset
    from mmdet.models import build_detector
    root = shared_dataset('bccd')
    cfg = mmcv.Config(_bccd_config(str(root), str(tmp_path)))
    model = build_detector(cfg.model)
    model.init_weights()
    datasets = [build_dataset(cfg.data.train)]
    model.CLASSES = datasets[0].CLASSES
    head = model.roi_head
    assert head.epoch_metrics()['drcnn_iou_thr'] == 0.3
    train_detector(model, datasets, cfg, distributed=False, validate=False)
    metrics = head.epoch_metrics()
    assert metrics['drcnn_num_updates'] == 4.0  # 20 iterations, C = 5
    assert metrics['drcnn_iou_thr'] > 0.3 and metrics['drcnn_beta'] < 1.0
    assert head.bbox_assigner.pos_iou_thr == metrics['drcnn_iou_thr']
    # the checkpoint the runner wrote restores the same state into a fresh model
    fresh = build_detector(cfg.model)
    load_checkpoint(fresh, str(tmp_path / 'latest.pth'), map_location='cpu')
    assert fresh.roi_head.epoch_metrics() == metrics
    assert fresh.roi_head.bbox_assigner.pos_iou_thr == metrics['drcnn_iou_thr']
    print('bccd metrics', metrics)


def _bccd_config(root, work_dir):
    norm = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
    pipeline = [
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', img_scale=(256, 192), keep_ratio=True),
        dict(type='RandomFlip', flip_ratio=0.5), dict(type='Normalize', **norm),
        dict(type='Pad', size_divisor=32), dict(type='DefaultFormatBundle'),
        dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels'])]
    head = _head_cfg()
    head['bbox_roi_extractor']['out_channels'] = 64
    head['bbox_head'].update(in_channels=64, fc_out_channels=256, num_classes=3)
    rcnn = head.pop('train_cfg')
    rcnn['sampler']['num'] = 256
    rcnn['dynamic_rcnn'] = dict(iou_topk=75, beta_topk=10, update_iter_interval=5,
                                initial_iou=0.3, initial_beta=1.0, exclude_gt_from_stats=True)
    head.pop('test_cfg')
    nms = dict(nms_pre=1000, max_per_img=500, nms=dict(type='nms', iou_threshold=0.85),
               min_bbox_size=0)
    train = dict(type='CocoDataset', classes=('RBC', 'WBC', 'Platelets'),
                 ann_file=root + '/annotations/train.json', img_prefix=root + '/images/',
                 pipeline=pipeline)
    return dict(
        model=dict(
            type='FasterRCNN',
            backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
                          frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
                          norm_eval=False, style='pytorch'),
            neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=64, num_outs=5),
            rpn_head=dict(
                type='RPNHead', in_channels=64, feat_channels=64,
                anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                                      strides=[4, 8, 16, 32, 64]),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                target_stds=[1.0] * 4),
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
            roi_head=head,
            train_cfg=dict(
                rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                                       min_pos_iou=0.3, match_low_quality=True,
                                       ignore_iof_thr=-1),
                         sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5,
                                      neg_pos_ub=-1, add_gt_as_proposals=False),
                         allowed_border=-1, pos_weight=-1, debug=False),
                rpn_proposal=nms, rcnn=rcnn),
            test_cfg=dict(rpn=nms, rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                                             max_per_img=100))),
        # val/test are never built (validate=False) but mmdet's compat_cfg reads them
        data=dict(samples_per_gpu=2, workers_per_gpu=0, train=train, val=train, test=train),
        optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
        optimizer_config=dict(grad_clip=dict(max_norm=35, norm_type=2)),
        lr_config=dict(policy='fixed', warmup='linear', warmup_iters=10, warmup_ratio=0.001),
        runner=dict(type='IterBasedRunner', max_iters=20),
        checkpoint_config=dict(interval=20, by_epoch=False),
        log_config=dict(interval=5, hooks=[dict(type='TextLoggerHook')]),
        work_dir=work_dir, gpu_ids=[0], device='cpu', seed=0, workflow=[('train', 1)],
        load_from=None, resume_from=None, log_level='WARNING', dist_params=dict(backend='gloo'))
