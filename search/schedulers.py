"""Scheduler factory: ``scheduler=NAME`` -> one of Ray Tune's own schedulers (no copies).

Every entry of :data:`SCHEDULERS` takes the scheduler's options (its config section minus
``name``), the spec and the :class:`Budget`, and rejects options it does not know: a misspelt key is
an error, never dropped. ``budget=compute`` counts rungs in measured training seconds, so a trial
that trains cheaper epochs (a frozen backbone, a cheap head, smaller images) gets further before
each rung; ``schedule_aware=true`` wraps asha in :class:`~search.schedule_aware.ScheduleAwareScheduler`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from search.errors import UsageError, reject_unknown_options
from search.space import to_tune

MAX_EPOCHS_PATH = 'runner.max_epochs'


@dataclass(frozen=True)
class Budget:
    """What early-stopping rungs count.

    Args:
        time_attr (str): the reported result key the scheduler counts: ``training_iteration``
            (epochs) or ``compute_seconds`` (cumulative measured training seconds).
        epoch_units (float): how much of ``time_attr`` one full-cost epoch is: 1 for epochs, the
            probe's seconds of one unfrozen epoch for compute.
    """

    time_attr: str
    epoch_units: float

    def of_epochs(self, epochs: float) -> float:
        return epochs * self.epoch_units


def budget_for(spec, epoch_seconds: float | None = None) -> Budget:
    if spec.budget == 'epochs':
        return Budget('training_iteration', 1.0)
    if not epoch_seconds or epoch_seconds <= 0:
        raise ValueError('budget=compute needs the probe\'s seconds per full-cost epoch')
    return Budget('compute_seconds', float(epoch_seconds))


def _fifo(options, spec, budget):
    from ray.tune.schedulers import FIFOScheduler

    reject_unknown_options('scheduler fifo', options, set())
    return FIFOScheduler()


def _asha(options, spec, budget):
    from ray.tune.schedulers import ASHAScheduler

    reject_unknown_options('scheduler asha', options, {'grace_period', 'reduction_factor'})
    grace = _positive(options, 'grace_period', 1)
    factor = _factor(options, 2)
    # With budget=compute a trial's last epoch may cost a little more than the probe's estimate:
    # keep max_t above the full budget so it does not cut a slow trial's last epoch short.
    slack = 1.0 if budget.time_attr == 'training_iteration' else 1.5
    return ASHAScheduler(time_attr=budget.time_attr, max_t=budget.of_epochs(max(spec.max_epochs, grace) * slack),
                         grace_period=budget.of_epochs(grace), reduction_factor=factor, **spec.scheduler_metric)


def _hyperband(options, spec, budget):
    from ray.tune.schedulers import HyperBandScheduler

    reject_unknown_options('scheduler hyperband', options, {'reduction_factor'})
    return HyperBandScheduler(time_attr=budget.time_attr, max_t=budget.of_epochs(spec.max_epochs),
                              reduction_factor=_factor(options, 3), **spec.scheduler_metric)


def _pbt(options, spec, budget):
    from ray.tune.schedulers import PopulationBasedTraining

    reject_unknown_options('scheduler pbt', options,
                           {'perturbation_interval', 'quantile_fraction', 'resample_probability'})
    mutations = {path: to_tune(dist) for path, dist in spec.params.items() if path != MAX_EPOCHS_PATH}
    if not mutations:
        raise UsageError(f'scheduler=pbt needs a parameter to mutate; space {spec.space.name} samples only the budget')
    return PopulationBasedTraining(
        time_attr='training_iteration', perturbation_interval=_positive(options, 'perturbation_interval', 1),
        quantile_fraction=_fraction(options, 'quantile_fraction', 0.25, high=0.5),
        resample_probability=_fraction(options, 'resample_probability', 0.25),
        hyperparam_mutations=mutations, synch=False, **spec.scheduler_metric)


def _pb2(options, spec, budget):
    from ray.tune.schedulers.pb2 import PB2

    reject_unknown_options('scheduler pb2', options, {'perturbation_interval', 'quantile_fraction'})
    bounds = {path: [dist.low, dist.high] for path, dist in spec.params.items()
              if dist.kind != 'choice' and path != MAX_EPOCHS_PATH}
    if not bounds:
        raise UsageError(f'scheduler=pb2 needs a continuous parameter (uniform, loguniform or int); '
                         f'space {spec.space.name} has none besides the budget')
    return PB2(time_attr='training_iteration', perturbation_interval=_positive(options, 'perturbation_interval', 1),
               quantile_fraction=_fraction(options, 'quantile_fraction', 0.25, high=0.5), hyperparam_bounds=bounds,
               synch=False, **spec.scheduler_metric)


def _resource_changing(options, spec, budget):
    from ray.tune.schedulers.resource_changing_scheduler import DistributeResources, ResourceChangingScheduler

    reject_unknown_options('scheduler resource_changing', options,
                           {'base', 'grace_period', 'reduction_factor', 'perturbation_interval'})
    base_name = options.get('base', 'asha')
    if base_name == 'asha':
        base = _asha({k: options[k] for k in ('grace_period', 'reduction_factor') if k in options}, spec, budget)
    elif base_name == 'pbt':
        base = _pbt({k: options[k] for k in ('perturbation_interval',) if k in options}, spec, budget)
    else:
        raise UsageError(f"scheduler.base must be asha or pbt for resource_changing, got '{base_name}'")
    # Freed CPUs (and GPUs) are shared out evenly among the running trials, which restart from
    # their last checkpoint with the new resources (search/trainable.py reads them).
    return ResourceChangingScheduler(base_scheduler=base, resources_allocation_function=DistributeResources())


SCHEDULERS = {'fifo': _fifo, 'asha': _asha, 'hyperband': _hyperband, 'pbt': _pbt, 'pb2': _pb2,
              'resource_changing': _resource_changing}
# Schedulers whose STOP can be deferred without breaking their bookkeeping (asynchronous rungs).
SCHEDULE_AWARE = {'asha', 'resource_changing'}


def create_scheduler(spec, budget: Budget, deferred_stops: Path | None = None):
    """Build the scheduler named in ``spec.scheduler`` for ``budget``.

    ``deferred_stops``: where the schedule-aware rule records the STOPs it deferred (if it applies).
    """
    options = dict(spec.scheduler)
    name = options.pop('name')
    if name not in SCHEDULERS:
        raise UsageError(f"unknown scheduler '{name}': choose one of {', '.join(SCHEDULERS)}")
    scheduler = SCHEDULERS[name](options, spec, budget)
    if spec.schedule_aware and name in SCHEDULE_AWARE:
        from search.schedule_aware import ScheduleAwareScheduler

        scheduler = ScheduleAwareScheduler(scheduler, record=deferred_stops)
    return scheduler


def _positive(options: dict, key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f'scheduler.{key} must be a whole number >= 1, got {value!r}')
    return value


def _factor(options: dict, default: float) -> float:
    value = options.get('reduction_factor', default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 1:
        raise UsageError(f'scheduler.reduction_factor must be a number > 1, got {value!r}')
    return float(value)


def _fraction(options: dict, key: str, default: float, high: float = 1.0) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise UsageError(f'scheduler.{key} must be a probability in [0, {high}], got {value!r}')
    return float(value)
