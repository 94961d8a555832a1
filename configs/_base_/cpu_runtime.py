# DynTune's CPU-sized training recipe, shared by the built-in presets (configs/retinanet.py, ...).
# An ordinary mmdet 2.x config: copy it, or train a preset with mmdet's tools/train.py once the data
# section points at your data. In a search, `data=` replaces the datasets and `train.*` / `max_epochs`
# on the command line change the recipe; everything not given on the command line stands as written.
custom_imports = dict(imports=['dyncomponents'], allow_failed_imports=False)

dataset_type = 'CocoDataset'
data_root = 'data/embedded/'  # replaced by the search's data= (data=embedded is generated on first use)
classes = ('plane', 'vehicle', 'storage-tank')
# EfficientNet-Lite0's ImageNet weights were trained on (x - 127) / 128 RGB inputs (docs/backbones.md).
img_norm_cfg = dict(mean=[127.0, 127.0, 127.0], std=[128.0, 128.0, 128.0], to_rgb=True)
img_scale = (320, 320)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', img_scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=img_scale, flip=False, transforms=[
        dict(type='Resize', keep_ratio=True),
        dict(type='RandomFlip'),
        dict(type='Normalize', **img_norm_cfg),
        dict(type='Pad', size_divisor=32),
        dict(type='ImageToTensor', keys=['img']),
        dict(type='Collect', keys=['img']),
    ]),
]
data = dict(
    samples_per_gpu=2,
    workers_per_gpu=0,  # load in the trial's own process: on 2 cores a worker process costs more than it saves
    train=dict(type=dataset_type, classes=classes, ann_file=data_root + 'annotations/train.json',
               img_prefix=data_root + 'images/', pipeline=train_pipeline),
    val=dict(type=dataset_type, classes=classes, ann_file=data_root + 'annotations/val.json',
             img_prefix=data_root + 'images/', pipeline=test_pipeline),
    test=dict(type=dataset_type, classes=classes, ann_file=data_root + 'annotations/val.json',
              img_prefix=data_root + 'images/', pipeline=test_pipeline))
evaluation = dict(interval=1, metric='bbox')

optimizer = dict(type='SGD', lr=0.004, momentum=0.9, weight_decay=0.0001)
optimizer_config = dict(grad_clip=dict(max_norm=35.0, norm_type=2))
# Decay points are fractions of runner.max_epochs (dyncomponents/schedules), so they stay right when
# a search samples the epoch budget.
lr_config = dict(policy='BudgetStep', step_fractions=[0.75], gamma=0.1,
                 warmup='linear', warmup_iters=50, warmup_ratio=0.001)
runner = dict(type='EpochBasedRunner', max_epochs=4)
# The learning rates above are for this batch (2 images on one device): auto_scale_lr scales from it.
auto_scale_lr = dict(enable=False, base_batch_size=2)

checkpoint_config = dict(interval=1)
log_config = dict(interval=10, hooks=[dict(type='TextLoggerHook')])
custom_hooks = []
dist_params = dict(backend='nccl')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
opencv_num_threads = 0
mp_start_method = 'fork'
