"""Every metric a trial reports: the search's own, declared here, and the components', declared with their code.

The search's own metrics come from mmdet's COCO evaluation, ``EpochCostHook`` (the epoch's cost),
``TuneReportHook`` (bookkeeping) and Ray Tune (its clock). Each component declares what it reports
in its ``METRICS`` (:mod:`dyncomponents.protocol`), so nothing here names a component.

This module imports nothing heavy itself: :func:`reported_metrics` and :func:`metric_names` import
``dyncomponents`` (torch, mmdet) only when called.
"""
from __future__ import annotations

# name, unit, meaning: plain tuples, so that importing this module does not import dyncomponents
_SEARCH_METRICS = (
    ('bbox_mAP', 'AP', "COCO box AP@[.50:.95] of mmdet's evaluation on the validation split after the epoch "
     '(0.0 when the model predicted nothing)'),
    ('bbox_mAP_50', 'AP', 'COCO box AP at IoU 0.50, same evaluation'),
    ('bbox_mAP_75', 'AP', 'COCO box AP at IoU 0.75, same evaluation'),
    ('bbox_mAP_s', 'AP', 'COCO box AP of small objects (area < 32^2 px), same evaluation'),
    ('bbox_mAP_m', 'AP', 'COCO box AP of medium objects (32^2 to 96^2 px), same evaluation'),
    ('bbox_mAP_l', 'AP', 'COCO box AP of large objects (area > 96^2 px), same evaluation'),
    ('epoch', 'count', 'epochs the trial has completed'),
    ('train_seconds', 's', "wall seconds of the epoch's training, evaluation excluded"),
    ('images_per_second', 'images/s', "training images per second in the epoch's training"),
    ('peak_memory_mb', 'MiB', "peak memory of the epoch's training: the process's resident set on the CPU, "
     'allocated CUDA memory on a GPU'),
    ('compute_seconds', 's', "the trial's training seconds so far: the sum of its epochs' train_seconds, kept "
     'across resumes and PBT exploits'),
    ('eta_seconds', 's', "the trial's remaining training seconds, at its mean epoch so far"),
    ('schedule_settled_epoch', 'epoch', "the epoch by which every component's schedule has gone through all "
     'its phases once'),
    ('time_total_s', 's', "Ray Tune's: seconds the trial has run, training, evaluation and checkpoints included"),
    ('training_iteration', 'count', "Ray Tune's: results the trial has reported"),
)
#: mmdet's COCO bbox evaluation, reported after every epoch.
COCO_METRICS = tuple(name for name, _, _ in _SEARCH_METRICS if name.startswith('bbox_mAP'))
#: What ``EpochCostHook`` measures of each epoch's training.
COST_METRICS = ('train_seconds', 'images_per_second', 'peak_memory_mb', 'compute_seconds')


def search_metrics() -> tuple:
    """The metrics every trial reports whatever its components, as ``dyncomponents.protocol.MetricSpec``."""
    from dyncomponents.protocol import MetricSpec

    return tuple(MetricSpec(*row) for row in _SEARCH_METRICS)


def reported_metrics() -> tuple:
    """Every metric a trial may report: :func:`search_metrics`, then each installed component's declared ones."""
    from dyncomponents.protocol import declared_metrics

    return search_metrics() + declared_metrics()


def metric_names() -> tuple[str, ...]:
    """The name of every metric a search may optimise, stop on or use as an objective (:func:`reported_metrics`)."""
    return tuple(m.name for m in reported_metrics())
