"""DyRA: losses on hand examples, edge cases, coordinates round trip, LR hook, a short training."""
import math
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
import yaml
from mmcv.runner import EpochBasedRunner
from mmdet.models import build_detector
from mmdet.models.builder import DETECTORS, MODELS

import dyncomponents  # noqa: F401  (registration)
from dyncomponents.dyra import (ConstCosineLrUpdaterHook, DynamicResizer, balance_loss,
                                const_cosine_multiplier, pareto_scale_loss)

REPO = Path(__file__).resolve().parents[1]
DETECTOR_TYPES = {'retinanet': 'DyRARetinaNet', 'fcos': 'DyRAFCOS', 'faster_rcnn': 'DyRAFasterRCNN'}


def _bce(p, y):
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _target(area, gamma):
    lo, hi = 32**2 * gamma, 96**2 * gamma
    return 1 / (1 + math.exp(12 * (area - lo) / (hi - lo) - 6))


def _sides(*sides):
    return torch.tensor([float(s)**2 for s in sides])


def test_registered():
    assert 'DynamicResizer' in MODELS.module_dict
    for name in DETECTOR_TYPES.values():
        assert name in DETECTORS.module_dict
    assert isinstance(mmcv.build_from_cfg(dict(type='ConstCosineLrUpdaterHook'), mmcv.runner.HOOKS),
                      ConstCosineLrUpdaterHook)


def test_pareto_loss_is_sum_of_bin_mean_bce():
    gamma, gain = 6.8, 2.0
    sf = torch.tensor([1.0, 0.5, 1.2])
    # image 0: bins (<32^2, [32^2, 64^2), >=64^2) hold 1, 2 and 1 boxes; image 1: one box in the
    # middle bin after scaling by 0.5 (80^2 * 0.25 = 40^2); image 2 has no box and is skipped
    areas = [_sides(20, 40, 50, 100), _sides(80), _sides()]
    s = [_bce(0.5, _target(a, gamma)) for a in (400, 1600, 2500, 10000)]
    image0 = s[0] + (s[1] + s[2]) / 2 + s[3]
    image1 = _bce(0.25, _target(1600, gamma))
    loss = pareto_scale_loss(sf, areas, torch.tensor(gamma), gain, (0, 2))
    assert loss.item() == pytest.approx((image0 + image1) / 2, rel=1e-5)


def test_pareto_st_equals_end_is_one_bin_over_all_boxes():
    areas = [_sides(20, 40, 50, 100)]
    expected = np.mean([_bce(0.5, _target(a, 6.8)) for a in (400, 1600, 2500, 10000)])
    for st in (0, 2, 5):
        loss = pareto_scale_loss(torch.tensor([1.0]), areas, torch.tensor(6.8), 2.0, (st, st))
        assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_pareto_empty_bins_and_no_boxes_are_finite():
    gamma = torch.tensor(6.8, requires_grad=True)
    sf = torch.tensor([0.7, 1.3], requires_grad=True)
    # all boxes in one of the six bins of (0, 5): the loss is that bin's mean, no NaN
    one_bin = pareto_scale_loss(sf[:1], [_sides(70, 80)], gamma, 2.0, (0, 5))
    expected = np.mean([_bce(0.35, _target(a * 0.49, 6.8)) for a in (4900, 6400)])
    assert one_bin.item() == pytest.approx(expected, rel=1e-5)
    empty = pareto_scale_loss(sf, [_sides(), _sides()], gamma, 2.0, (0, 2))
    empty.backward()
    assert empty.item() == 0 and sf.grad is not None and torch.isfinite(sf.grad).all()


@pytest.mark.parametrize('pareto_range', [(0, 6), (3, 2), (-1, 2), (1,)])
def test_pareto_range_is_checked(pareto_range):
    with pytest.raises(ValueError, match='pareto_range'):
        pareto_scale_loss(torch.tensor([1.0]), [_sides(10)], torch.tensor(6.8), 2.0, pareto_range)


def test_balance_loss_hand_example_and_direction():
    gamma = torch.tensor(6.8, requires_grad=True)
    thr = (32**2 + 96**2) / 2 * 6.8
    # small group mean loss 0.5, large group 0.2
    loss = torch.tensor([0.4, 0.6, 0.2])
    areas = torch.tensor([100.0, thr - 1, thr + 1])
    w = np.array([1 / 0.5, 1 / 0.8])
    w = 2 * w / w.sum()
    w = w - w.min() + 1
    target = (w[1] * 64**2 + w[0] * 256**2) / 2 / ((32**2 + 96**2) / 2)
    out = balance_loss(gamma, loss, areas)
    assert out.item() == pytest.approx(abs(6.8 - target), rel=1e-5)
    out.backward()
    # small objects localise worse, so the target is above gamma and gamma must grow
    assert target > 6.8 and gamma.grad.item() == -1.0


def test_balance_loss_empty_groups():
    gamma = torch.tensor(7.5, requires_grad=True)
    assert balance_loss(gamma, torch.zeros(0), torch.zeros(0)).item() == 0
    # one group empty: it takes the other group's value, equal weights, target 6.8
    only_small = balance_loss(gamma, torch.tensor([0.3, 0.9]), torch.tensor([10.0, 20.0]))
    assert only_small.item() == pytest.approx(0.7, rel=1e-5)


def test_const_cosine_matches_original_formula():
    e = 0.005
    for w in np.linspace(0, 1, 41):
        r = 1 / 3
        original = e + 0.5 * (1 - e) * (min(2 * math.cos(4 * math.pi * r * w - math.pi * r), 0) + 2)
        assert const_cosine_multiplier(w, e, 0.625) == pytest.approx(original, abs=1e-12)
    assert const_cosine_multiplier(0.3, 0.1, 0.3) == 1.0 and const_cosine_multiplier(1.0, 0.1, 0.3) == 0.1
    with pytest.raises(ValueError, match='const_fraction'):
        ConstCosineLrUpdaterHook(const_fraction=1.0)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(1, 1)

    def train_step(self, data, optimizer):
        return dict(loss=self.fc(data).sum(), log_vars={}, num_samples=1)


def test_const_cosine_hook_in_a_real_runner(tmp_path):
    model = _Toy()
    runner = EpochBasedRunner(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              work_dir=str(tmp_path), logger=mmcv.get_logger('test_dyra'), max_epochs=2)
    runner.register_lr_hook(dict(policy='ConstCosine', min_lr_ratio=0.1, const_fraction=0.5))
    lrs = []

    class Record(mmcv.runner.Hook):
        def before_train_iter(self, r):
            lrs.append(r.current_lr()[0])

    runner.register_hook(Record(), priority='LOWEST')
    runner.run([[torch.ones(1, 1)] * 10], [('train', 1)])
    expected = [0.1 * const_cosine_multiplier(i / 20, 0.1, 0.5) for i in range(20)]
    assert lrs == pytest.approx(expected)
    assert lrs[9] == pytest.approx(0.1) and lrs[-1] < 0.02
    hook = next(h for h in runner.hooks if isinstance(h, ConstCosineLrUpdaterHook))
    assert hook.last_phase_change_epoch(max_epochs=8, iters_per_epoch=10) == 5


def _model_cfg(name, resizer, num_classes=2):
    from search.mmdet_config import load_base, resolve_base

    cfg = load_base(resolve_base(name))['model']  # the search's preset of that detector
    cfg['type'] = DETECTOR_TYPES[name]
    cfg['backbone'] = dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3), norm_eval=False)
    cfg['neck']['in_channels'] = [64, 128, 256, 512]
    head = cfg['roi_head']['bbox_head'] if name == 'faster_rcnn' else cfg['bbox_head']
    head['num_classes'] = num_classes
    # keep low-score boxes so an untrained detector returns some to map back
    if name == 'faster_rcnn':
        cfg['test_cfg']['rcnn']['score_thr'] = 0.0
    else:
        cfg['test_cfg']['score_thr'] = 0.0
    cfg['resizer'] = resizer
    return mmcv.ConfigDict(cfg)


SMALL_ENCODER = dict(type='EfficientNetLite', arch='lite0', out_indices=[3], pretrained=False, norm_eval=True)


def _force_scale_factor(resizer, sf):
    # zero the last layer so the head outputs sigmoid(bias) * gain == sf for every image
    with torch.no_grad():
        resizer.out.weight.zero_()
        resizer.out.bias.fill_(math.log(sf / resizer.gain / (1 - sf / resizer.gain)))


def _meta(h, w, pad_h, pad_w, scale):
    return dict(img_shape=(h, w, 3), pad_shape=(pad_h, pad_w, 3), ori_shape=(round(h / scale), round(w / scale), 3),
                scale_factor=np.full(4, scale, dtype=np.float32), flip=False)


def test_resized_content_maps_back_within_one_pixel():
    resizer = DynamicResizer(encoder=SMALL_ENCODER, norm=8)
    _force_scale_factor(resizer, 1.5)
    img = torch.zeros(1, 3, 128, 160)
    img[:, :, 30:70, 40:101] = 1.0  # a rectangle covering pixels [40, 101) x [30, 70)
    meta = _meta(100, 150, 128, 160, 1.0)
    r = resizer.resize_batch(img, [meta], [torch.tensor([[40.0, 30.0, 101.0, 70.0]])])
    m = r['img_metas'][0]
    # longer side 150 * 1.5 = 225 rounded to a multiple of 8: 224
    assert m['img_shape'][:2] == (149, 224) and m['pad_shape'][:2] == (160, 224)
    assert m['batch_input_shape'] == (160, 224) and r['img'].shape[-2:] == (160, 224)
    np.testing.assert_allclose(m['scale_factor'], [224 / 150, 149 / 100, 224 / 150, 149 / 100], rtol=1e-6)
    assert meta['img_shape'] == (100, 150, 3), 'the input metas are left untouched'
    ys, xs = torch.nonzero(r['img'][0, 0] > 0.5, as_tuple=True)
    found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    back = found / torch.from_numpy(m['scale_factor'])
    assert torch.allclose(back, torch.tensor([40.0, 30.0, 101.0, 70.0]), atol=1.0)
    assert torch.allclose(r['gt_bboxes'][0] / torch.from_numpy(m['scale_factor']),
                          torch.tensor([40.0, 30.0, 101.0, 70.0]), atol=1e-4)


@pytest.mark.parametrize('name', list(DETECTOR_TYPES))
def test_test_time_boxes_map_back_to_original_coordinates(name):
    torch.manual_seed(0)
    model = build_detector(_model_cfg(name, dict(encoder=SMALL_ENCODER, norm=8)))
    model.eval()
    _force_scale_factor(model.resizer, 0.6)
    # image 0 was downscaled by 0.5 by the pipeline (ori 200x300), image 1 is at original size
    metas = [_meta(100, 150, 128, 160, 0.5), _meta(128, 96, 128, 160, 1.0)]
    img = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        raw = model.simple_test(img, metas, rescale=False)
        rescaled = model.simple_test(img, metas, rescale=True)
        resized_metas = model.resizer.resize_batch(img, metas)['img_metas']
    for i, meta in enumerate(metas):
        total = resized_metas[i]['scale_factor']
        ratio = total / meta['scale_factor']
        # 150 * 0.6 = 90 -> 88 (multiple of 8); 128 * 0.6 = 76.8 -> 80
        expected = [88 / 150, 59 / 100] if i == 0 else [60 / 96, 80 / 128]
        np.testing.assert_allclose(ratio, expected * 2, rtol=1e-5)
        boxes_resized, boxes_orig = raw[i][0][:, :4], rescaled[i][0][:, :4]
        assert len(boxes_resized) > 0 and len(boxes_resized) == len(boxes_orig)
        # mmdet's rescale divided by the DyRA-updated scale factor: the box on the resized
        # image maps to the original image (one resized pixel is < 1 / 0.3 original pixels)
        np.testing.assert_allclose(boxes_orig, boxes_resized / total, atol=1.0)
        assert boxes_orig[:, 2].max() <= meta['ori_shape'][1] + 1


@pytest.mark.parametrize('name', list(DETECTOR_TYPES))
def test_forward_train_edge_cases_finite(name):
    torch.manual_seed(0)
    model = build_detector(_model_cfg(name, dict(encoder=SMALL_ENCODER, pareto_range=(1, 1))))
    model.train()
    metas = [_meta(96, 128, 96, 128, 1.0), _meta(96, 96, 96, 128, 1.0)]
    img = torch.randn(2, 3, 96, 128)
    for boxes in ([torch.tensor([[10.0, 10.0, 40.0, 50.0]]), torch.zeros(0, 4)],  # one image without GT
                  [torch.zeros(0, 4), torch.zeros(0, 4)]):  # a batch without any GT
        labels = [torch.zeros(len(b), dtype=torch.long) for b in boxes]
        losses = model.forward_train(img, metas, boxes, labels)
        loss, log_vars = model._parse_losses(losses)
        assert math.isfinite(loss.item()) and 'loss_dyra_ps' in log_vars and 'loss_dyra_bal' in log_vars
        model.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.resizer.parameters() if p.grad is not None)


def test_epoch_metrics_split_and_kept_until_training_mode_starts_a_new_window():
    resizer = DynamicResizer(encoder=SMALL_ENCODER)
    _force_scale_factor(resizer, 1.0)
    img = torch.randn(2, 3, 64, 64)
    metas = [_meta(64, 64, 64, 64, 1.0), _meta(64, 48, 64, 64, 1.0)]
    resizer.train()
    resizer.resize_batch(img, metas)
    resizer.eval()
    resizer.resize_batch(img, metas)
    out = resizer.epoch_metrics()
    assert out['dyra_train_sf_mean'] == pytest.approx(1.0) and out['dyra_eval_sf_std'] == pytest.approx(0, abs=1e-6)
    assert out['dyra_eval_pixel_ratio'] == pytest.approx(1.0) and out['dyra_gamma'] == pytest.approx(6.8)
    assert set(out) == set(DynamicResizer.METRICS.names())
    assert resizer.epoch_metrics() == out  # reading clears nothing
    resizer.train()  # what mmcv's runner does at each epoch's start: a new window
    assert set(resizer.epoch_metrics()) == {'dyra_gamma'}


@pytest.mark.parametrize('kwargs, match', [(dict(gain=10), 'gain'), (dict(norm=0), 'norm'),
                                           (dict(gamma_init=0), 'gamma_init'), (dict(num_heads=4), 'num_heads')])
def test_resizer_arguments_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicResizer(encoder=SMALL_ENCODER, **kwargs)


def _synthetic_batch(gen, n, size=64):
    """Half the images hold one small square (5-8 px), half one large square (40-50 px)."""
    img = torch.randn(n, 3, size, size, generator=gen) * 0.1
    boxes, large = [], []
    for i in range(n):
        low, high = (40, 51) if i % 2 else (5, 9)
        s = int(torch.randint(low, high, (1,), generator=gen))
        x, y = (int(torch.randint(0, size - s, (1,), generator=gen)) for _ in range(2))
        img[i, :, y:y + s, x:x + s] += 2.0
        boxes.append(torch.tensor([[x, y, x + s, y + s]], dtype=torch.float32))
        large.append(bool(i % 2))
    metas = [_meta(size, size, size, size, 1.0) for _ in range(n)]
    return img, metas, boxes, torch.tensor(large)


@pytest.mark.slow
def test_short_training_scale_factors_move_and_separate_small_from_large():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    # gamma_init 0.2 moves the "small" boundary (target 1) to ~32 px so that 64 px images hold
    # both kinds; the resizer's encoder is the default ImageNet EfficientNet-Lite0
    cfg = _model_cfg('retinanet', dict(gamma_init=0.2, balance=False, norm=1), num_classes=1)
    cfg['backbone'] = dict(SMALL_ENCODER, out_indices=[1, 2, 3, 4], norm_eval=False)
    cfg['neck']['in_channels'] = [24, 40, 112, 320]
    model = build_detector(cfg)
    model.init_weights()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    eval_img, eval_metas, _, eval_large = _synthetic_batch(torch.Generator().manual_seed(1), 8)

    def eval_sf():
        model.eval()
        with torch.no_grad():
            sf = model.resizer.predict(eval_img, eval_metas)
        model.train()
        return sf

    before = eval_sf()
    for _ in range(10):
        img, metas, boxes, _ = _synthetic_batch(gen, 4)
        losses = model.forward_train(img, metas, boxes, [torch.zeros(1, dtype=torch.long)] * 4)
        loss, _ = model._parse_losses(losses)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        optimizer.step()
    after = eval_sf()
    print('sf before', before, 'after', after)
    assert (after - before).abs().mean() > 0.05, (before, after)
    small_mean, large_mean = after[~eval_large].mean(), after[eval_large].mean()
    assert small_mean > large_mean + 0.2, (small_mean, large_mean)


def test_gamma_is_in_state_dict_for_resume():
    a, b = DynamicResizer(encoder=SMALL_ENCODER), DynamicResizer(encoder=SMALL_ENCODER)
    with torch.no_grad():
        a.gamma.fill_(9.25)
    b.load_state_dict(a.state_dict())
    assert b.gamma.item() == 9.25


def test_space_file_values_are_valid():
    space = yaml.safe_load((REPO / 'spaces' / 'dyra.yaml').read_text())
    switch = space['requires']['model.type']  # the detector types DyRA supports, each to its DyRA class
    assert set(switch) == {'RetinaNet', 'FCOS', 'FasterRCNN'}
    assert all(dyra in DETECTORS.module_dict and dyra == 'DyRA' + plain for plain, dyra in switch.items())
    params = space['params']
    lr = {k: v for k, v in space['mmdet']['lr_config'].items() if k not in ('_delete_', 'policy')}
    for pareto_range in params['model.resizer.pareto_range']['choice']:
        for gain in params['model.resizer.gain']['choice']:
            for norm in params['model.resizer.norm']['choice']:
                DynamicResizer(encoder=SMALL_ENCODER, pareto_range=pareto_range, gain=gain, norm=norm)
    for ratio in params['lr_config.min_lr_ratio']['loguniform']:
        for fraction in params['lr_config.const_fraction']['uniform']:
            ConstCosineLrUpdaterHook(**dict(lr, min_lr_ratio=ratio, const_fraction=fraction))
