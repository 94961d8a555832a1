"""Fine-grained dynamic head: gates, cost accounting, detector forward/backward, short training."""
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given
from hypothesis import strategies as st
from mmcv import Config
from mmdet.models import HEADS, build_detector

from dyncomponents.dynamic_head import (DynamicFCOSHead, HeadCostMeter, RoutingTower, SpatialGate,
                                        gate_activate, gate_bias, gated_cost)
from dyncomponents.dynamic_head.routing import FULL, SOFT, USED

GN = dict(type='GN', num_groups=4, requires_grad=True)
STRIDES = (8, 16, 32, 64, 128)


def feature_locations(height, width, strides=STRIDES):
    """FPN locations of an image (each level rounds up, as ResNet's strided convs do)."""
    return sum(math.ceil(height / s) * math.ceil(width / s) for s in strides)


def _detector(depth=2, channels=16, **head):
    head_cfg = dict(type='DynamicFCOSHead', num_classes=2, in_channels=channels,
                    feat_channels=channels, strides=STRIDES, norm_cfg=GN, depth=depth)
    head_cfg.update(head)
    cfg = Config(dict(model=dict(
        type='FCOS',
        backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
                      norm_cfg=dict(type='BN'), style='pytorch'),
        neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=channels,
                  start_level=1, add_extra_convs='on_output', num_outs=5,
                  relu_before_extra_convs=True),
        bbox_head=head_cfg,
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=20))))
    model = build_detector(cfg.model)
    model.init_weights()
    return model


def _demo_inputs(generator, num_images=2, size=96):
    """Seeded images with one bright box each, plus the metas/boxes/labels mmdet expects."""
    imgs = torch.rand(num_images, 3, size, size, generator=generator) * 0.2
    boxes, labels = [], []
    for i in range(num_images):
        x0, y0 = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        w, h = torch.randint(16, size // 2, (2,), generator=generator).tolist()
        imgs[i, :, y0:y0 + h, x0:x0 + w] += 0.8
        boxes.append(torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32))
        labels.append(torch.tensor([i % 2]))
    metas = [dict(img_shape=(size, size, 3), ori_shape=(size, size, 3),
                  pad_shape=(size, size, 3), scale_factor=1.0, flip=False)] * num_images
    return imgs, metas, boxes, labels


# ---------------------------------------------------------------- gates

@pytest.mark.parametrize('activation', ['GeReTanH', 'ReTanH'])
@given(x=st.floats(max_value=0.0, allow_nan=False, allow_infinity=False, width=32),
       tau=st.floats(min_value=0.1, max_value=3.0))
def test_gate_is_exactly_zero_for_non_positive_inputs(activation, x, tau):
    z = torch.tensor([x, -0.0, 0.0, -1e-30, -1e-7])
    assert torch.equal(gate_activate(z, activation, tau), torch.zeros(5))


@pytest.mark.parametrize('activation', ['GeReTanH', 'ReTanH', 'Sigmoid'])
def test_gate_activation_is_positive_and_below_one_for_positive_inputs(activation):
    g = gate_activate(torch.tensor([0.5, 2.0, 5.0]), activation, 1.5)
    assert torch.all(g > 0) and torch.all(g <= 1)
    assert torch.all(g[1:] >= g[:-1])  # monotone


@pytest.mark.parametrize('activation,tau', [('GeReTanH', 1.5), ('GeReTanH', 1.0), ('ReTanH', 1.5),
                                            ('Sigmoid', 1.5)])
def test_gate_bias_inverts_the_activation(activation, tau):
    z = torch.tensor([gate_bias(activation, 0.99, tau)], dtype=torch.float64)
    assert float(gate_activate(z, activation, tau)) == pytest.approx(0.99, abs=1e-9)


def test_geretanh_bias_matches_original_value():
    # 0.5*ln((1 + 0.99 e^3) / 0.01), the value the original sets for tau = 1.5
    assert gate_bias('GeReTanH', 0.99, 1.5) == pytest.approx(3.822, abs=1e-3)


@pytest.mark.parametrize('activation', ['GeReTanH', 'ReTanH', 'Sigmoid'])
def test_spatial_gate_starts_near_099(activation):
    torch.manual_seed(0)
    gate = SpatialGate(16, activation=activation)
    g = gate(torch.randn(2, 16, 12, 12))
    assert g.shape == (2, 1, 12, 12)
    assert 0.97 < float(g.min()) and float(g.max()) < 1.0
    assert float(g.mean()) == pytest.approx(0.99, abs=0.005)


@pytest.mark.parametrize('kwargs', [dict(activation='Softmax'), dict(tau=0.0), dict(init_gate=1.0)])
def test_spatial_gate_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SpatialGate(8, **kwargs)


# ---------------------------------------------------------------- costs

def test_readme_d2_figure_is_eight_convs_over_fpn_locations():
    # FCOS D2 (4 + 4 convs, 256 channels), 800x1333 image, P3-P7: the README's 98.0 GFLOPs
    locations = feature_locations(800, 1333)
    assert locations == 22300
    assert round(8 * 256 * 256 * 9 * locations / 2**30, 1) == 98.0


@pytest.mark.parametrize('depth', [1, 3])
def test_fixed_tower_full_cost_equals_hand_count(depth):
    channels, sizes = 8, [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]
    tower = RoutingTower(channels, depth, GN, gate_cfg=None)
    feats = [torch.randn(3, channels, h, w) for h, w in sizes]
    outs, cost = tower(feats)
    assert [o.shape for o in outs] == [f.shape for f in feats]
    # per location and layer: two depthwise scale convs (counted twice, as the original)
    # plus norm, and the block's two 3x3 convs plus norm
    per_location = 2 * (channels * 2 * 9 + channels) + 2 * (channels * channels * 9 + channels)
    hand = depth * per_location * sum(h * w for h, w in sizes)
    assert cost.shape == (3, 3)
    assert torch.equal(cost, torch.full((3, 3), float(hand), dtype=torch.float64))


def test_dynamic_tower_full_cost_equals_fixed_and_used_follows_gates():
    channels, sizes = 8, [(10, 10), (5, 5), (3, 3)]
    feats = [torch.randn(2, channels, h, w) for h, w in sizes]
    fixed = RoutingTower(channels, 2, GN)(feats)[1]
    gate_cfg = dict(activation='GeReTanH', tau=1.5, init_gate=0.99)
    tower = RoutingTower(channels, 2, GN, gate_cfg)
    cost = tower(feats)[1]
    assert torch.equal(cost[FULL], fixed[FULL])
    assert torch.equal(cost[USED], cost[FULL])  # all gates open at init
    assert torch.all(cost[SOFT] < cost[FULL]) and torch.all(cost[SOFT] > 0.98 * cost[FULL])
    for gate in tower.modules():
        if isinstance(gate, SpatialGate):
            torch.nn.init.constant_(gate.gate_conv.bias, -100.0)
    closed = tower(feats)[1]
    assert torch.equal(closed[USED], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(closed[SOFT], torch.zeros(2, dtype=torch.float64))


def test_gated_cost_dilates_nothing_and_counts_positions():
    gate = torch.zeros(2, 1, 5, 5)
    gate[0, 0, 2, 2] = 0.5
    gate[1, 0, 0, 0] = 1.0
    cost = gated_cost(gate, 10)
    assert cost.tolist() == [[5.0, 10.0], [10.0, 10.0], [250.0, 250.0]]
    # conv1 of the block runs on the 3x3 dilation of the gate: 9 positions inside, 4 in a corner
    dilated = gated_cost(F.max_pool2d(gate, 3, stride=1, padding=1), 10)
    assert dilated[USED].tolist() == [90.0, 40.0]


def test_scale_path_soft_cost_has_no_gradient_but_block_cost_has():
    gate = torch.full((1, 1, 3, 3), 0.5, requires_grad=True)
    assert not gated_cost(gate, 4, detach_soft=True)[SOFT].requires_grad
    gated_cost(gate, 4)[SOFT].sum().backward()
    assert torch.all(gate.grad == 4)


def test_cost_meter_epoch_metrics_are_real_gflops_of_eval_images_kept_until_the_next_window():
    meter = HeadCostMeter()
    giga_macs = 1e9  # 1e9 multiply-accumulates are 2 GFLOPs
    meter.record(torch.tensor([[1.0], [1.0], [4.0]], dtype=torch.float64) * giga_macs, training=True)
    meter.record(torch.tensor([[1.0, 2.0], [1.0, 3.0], [4.0, 4.0]], dtype=torch.float64) * giga_macs,
                 training=False)
    meter.record(torch.tensor([[2.0], [2.0], [4.0]], dtype=torch.float64) * giga_macs, training=False)
    metrics = meter.epoch_metrics('dhead_')
    assert metrics == pytest.approx(dict(dhead_gflops_avg=4.0, dhead_gflops_min=2.0,
                                         dhead_gflops_max=6.0, dhead_gflops_full=8.0,
                                         dhead_used_ratio=0.5))
    assert meter.epoch_metrics('dhead_') == metrics  # reading clears nothing
    meter.start_window()
    assert meter.epoch_metrics('dhead_') == {}


# ---------------------------------------------------------------- head in a detector

def test_head_is_registered_and_validates_arguments():
    assert HEADS.get('DynamicFCOSHead') is DynamicFCOSHead
    with pytest.raises(ValueError, match='variant'):
        DynamicFCOSHead(2, 16, feat_channels=16, variant='static')
    with pytest.raises(ValueError, match='feat_channels'):
        DynamicFCOSHead(2, 16, feat_channels=32)
    with pytest.raises(ValueError, match='budget_lambda'):
        DynamicFCOSHead(2, 16, feat_channels=16, budget_lambda=-1.0)
    with pytest.raises(ValueError, match='fixed'):
        DynamicFCOSHead(2, 16, feat_channels=16, variant='fixed', budget_lambda=0.1)
    with pytest.raises(ValueError, match='depth'):
        DynamicFCOSHead(2, 16, feat_channels=16, depth=0)


def test_detector_init_weights_keeps_the_gate_bias():
    # mmdet's FCOS init_cfg (Normal on every Conv2d) would zero the gate bias
    model = _detector()
    biases = [float(m.gate_conv.bias) for m in model.bbox_head.modules() if isinstance(m, SpatialGate)]
    assert len(biases) == 2 * 2 * 3
    assert biases == pytest.approx([gate_bias('GeReTanH', 0.99, 1.5)] * len(biases))


def test_forward_train_backward_and_budget_loss():
    torch.manual_seed(0)
    model = _detector(budget_lambda=0.5)
    imgs, metas, boxes, labels = _demo_inputs(torch.Generator().manual_seed(0))
    losses = model.forward_train(imgs, metas, boxes, labels)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_centerness', 'loss_budget',
                           'head_used_ratio'}
    # every gate open at init: soft/full is just under 1
    assert 0.49 < float(losses['loss_budget']) < 0.5
    assert float(losses['head_used_ratio']) == 1.0
    loss, log_vars = model._parse_losses(losses)
    assert 'head_used_ratio' in log_vars
    loss.backward()
    head = model.bbox_head
    block_gate = head.cls_tower.layers[0].block_gate.gate_conv
    assert block_gate.bias.grad is not None and float(block_gate.bias.grad) > 0
    assert head.cost_meter.last is None  # consumed by the loss
    assert all(p.grad is not None for n, p in head.named_parameters() if 'conv_cls' in n)


def test_lambda_zero_has_no_budget_loss_and_cost_is_replaced_every_forward():
    model = _detector(budget_lambda=0.0)
    imgs, metas, boxes, labels = _demo_inputs(torch.Generator().manual_seed(0))
    losses = model.forward_train(imgs, metas, boxes, labels)
    assert 'loss_budget' not in losses and 'head_used_ratio' in losses
    feats = model.extract_feat(imgs)
    model.bbox_head(feats)
    first = model.bbox_head.cost_meter.last
    model.bbox_head(feats)
    assert torch.equal(model.bbox_head.cost_meter.last, first)  # replaced, not accumulated


@pytest.mark.parametrize('variant', ['dynamic', 'fixed'])
def test_simple_test_output_and_epoch_metrics(variant):
    model = _detector(variant=variant, budget_lambda=0.0)
    model.eval()
    imgs, metas, _, _ = _demo_inputs(torch.Generator().manual_seed(1), num_images=2, size=64)
    with torch.no_grad():
        results = model.simple_test(imgs, metas)
        model.simple_test(imgs[:1], metas[:1])
    assert len(results) == 2 and all(len(r) == 2 for r in results)
    assert all(r.ndim == 2 and r.shape[1] == 5 for res in results for r in res)
    metrics = model.bbox_head.epoch_metrics()
    channels, depth = 16, 2
    per_location = 2 * (channels * 2 * 9 + channels) + 2 * (channels * channels * 9 + channels)
    full = 2 * depth * per_location * feature_locations(64, 64) * 2 / 1e9  # two towers; a MAC is 2 FLOPs
    assert set(metrics) == set(DynamicFCOSHead.METRICS.names())
    assert metrics['dhead_gflops_full'] == pytest.approx(full)
    assert metrics['dhead_gflops_min'] <= metrics['dhead_gflops_avg'] <= metrics['dhead_gflops_max']
    assert metrics['dhead_gflops_max'] <= full * (1 + 1e-9)
    if variant == 'fixed':
        assert metrics['dhead_gflops_avg'] == pytest.approx(full)
    assert model.bbox_head.epoch_metrics() == metrics  # reading clears nothing
    model.train()  # what mmcv's runner does at each epoch's start: a new window
    assert model.bbox_head.epoch_metrics() == {}


@pytest.mark.parametrize('base', ['fcos', 'mmdet::fcos/fcos_r50_caffe_fpn_gn-head_1x_coco.py'])
def test_space_file_switches_the_head_and_samples_known_arguments(base):
    from search.mmdet_config import load_base, merge_space, resolve_base
    from search.space import load_space

    space = load_space('dynamic_head')
    assert space.overrides == ('base=fcos',)
    original = load_base(resolve_base(base))['model']['bbox_head']
    head = merge_space(load_base(resolve_base(base)), space)['model']['bbox_head']
    assert head['type'] == 'DynamicFCOSHead' and original['type'] == 'FCOSHead'
    # the base's channels, strides, norm and losses stay
    assert all(head[k] == original[k] for k in ('in_channels', 'feat_channels', 'strides', 'loss_cls'))
    for path in space.params:
        assert path.startswith('model.bbox_head.')
        assert path.split('.')[-1] in head
    assert space.params['model.bbox_head.depth'].args == (2, 4, 8)
    assert 0.0 not in space.params['model.bbox_head.budget_lambda'].args  # lambda 0 is the reference's


# ---------------------------------------------------------------- short real training

def _train_and_measure(budget_lambda, iterations=30):
    """Train 30 SGD steps (momentum carries the budget gradient) and return eval head metrics."""
    torch.manual_seed(0)
    model = _detector(depth=2, budget_lambda=budget_lambda)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(iterations):
        imgs, metas, boxes, labels = _demo_inputs(generator)
        loss, _ = model._parse_losses(model.forward_train(imgs, metas, boxes, labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(2):
            imgs, metas, _, _ = _demo_inputs(generator)
            model.simple_test(imgs, metas)
    return model.bbox_head.epoch_metrics()


@pytest.mark.slow
def test_large_budget_lambda_cuts_used_head_flops_in_a_short_training():
    no_budget = _train_and_measure(0.0)
    budget = _train_and_measure(4.0)
    assert budget['dhead_gflops_full'] == no_budget['dhead_gflops_full']
    print('lambda=0:', no_budget, 'lambda=4:', budget)
    assert budget['dhead_gflops_avg'] < 0.8 * no_budget['dhead_gflops_avg']
    assert budget['dhead_gflops_max'] < no_budget['dhead_gflops_min']
