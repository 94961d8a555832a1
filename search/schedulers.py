"""Scheduler factory: ``scheduler=NAME`` -> a Ray Tune scheduler (Ray's own classes, no copies).

Each entry of :data:`SCHEDULERS` takes the scheduler's config section (minus ``name``) and the
spec, and must reject keys it does not know: a misspelt option is an error, never dropped.
"""
from __future__ import annotations

from search.errors import UsageError, reject_unknown_options


def _fifo(options: dict, spec):
    from ray.tune.schedulers import FIFOScheduler

    reject_unknown_options('scheduler fifo', options, set())
    return FIFOScheduler()


def _asha(options: dict, spec):
    from ray.tune.schedulers import ASHAScheduler

    reject_unknown_options('scheduler asha', options, {'grace_period', 'reduction_factor'})
    grace = int(options.get('grace_period', 1))
    factor = float(options.get('reduction_factor', 2))
    if grace < 1:
        raise UsageError(f'scheduler.grace_period must be >= 1 epoch, got {grace}')
    if factor <= 1:
        raise UsageError(f'scheduler.reduction_factor must be > 1, got {factor}')
    return ASHAScheduler(time_attr='training_iteration', max_t=max(spec.max_epochs, grace),
                         grace_period=grace, reduction_factor=factor)


SCHEDULERS = {'fifo': _fifo, 'asha': _asha}


def create_scheduler(spec):
    """Build the scheduler named in ``spec.scheduler`` (metric and mode are set on the TuneConfig)."""
    options = dict(spec.scheduler)
    name = options.pop('name')
    if name not in SCHEDULERS:
        raise UsageError(f"unknown scheduler '{name}': choose one of {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name](options, spec)
