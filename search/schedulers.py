"""Scheduler factory: ``scheduler=NAME`` -> one of Ray Tune's own schedulers (no copies).

:func:`validate_scheduler` checks the ``scheduler:`` section before Ray starts (an unknown name or
option, or a bad value, is a :class:`UsageError`, never dropped) and returns typed
:class:`SchedulerSettings` with every default filled in; :func:`create_scheduler` then builds the
scheduler for the search's :class:`Budget`. ``budget=compute`` counts rungs in measured training
seconds, so a trial that trains cheaper epochs (a frozen backbone, a cheap head, smaller images)
gets further before each rung. ``bohb`` (Ray's HyperBandForBOHB) runs only with ``search_alg=bohb``
and counts epochs (:func:`check_pairing`). Two wrappers go around the result: the schedule-aware rule
(search/schedule_aware.py, for asynchronous schedulers) and the reference trial's protection
(search/reference.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from search.errors import UsageError, is_number
from search.mmdet_config import MAX_EPOCHS_PATH
from search.settings import Settings, validate_section, whole
from search.space import to_tune


@dataclass(frozen=True)
class SchedulerSettings(Settings):
    """A validated ``scheduler:`` section: the scheduler's name and all its options."""

    @property
    def population_based(self) -> bool:
        """PBT or PB2 (alone or under resource_changing): they mutate their population themselves, and
        Tune lets them draw it only with its own random generator."""
        return self.name in POPULATION or (self.name == 'resource_changing' and self.options['base'] in POPULATION)


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


# -- options -------------------------------------------------------------------------------------

def _factor(key, value) -> float:
    if not is_number(value) or value <= 1:
        raise UsageError(f'{key} must be a number > 1, got {value!r}')
    return float(value)


def _probability(high: float) -> Callable[[str, Any], float]:
    def check(key, value):
        if not is_number(value) or not 0 <= value <= high:
            raise UsageError(f'{key} must be a probability in [0, {high}], got {value!r}')
        return float(value)
    return check


def _base(key, value) -> str:
    if value not in ('asha', 'pbt'):
        raise UsageError(f"{key} must be asha or pbt for resource_changing, got '{value}'")
    return value


# name -> option -> (check, default)
OPTIONS: dict[str, dict[str, tuple[Callable, Any]]] = {
    'fifo': {},
    'asha': {'grace_period': (whole(1), 1), 'reduction_factor': (_factor, 2.0)},
    'hyperband': {'reduction_factor': (_factor, 3.0)},
    'pbt': {'perturbation_interval': (whole(1), 1), 'quantile_fraction': (_probability(0.5), 0.25),
            'resample_probability': (_probability(1.0), 0.25)},
    'pb2': {'perturbation_interval': (whole(1), 1), 'quantile_fraction': (_probability(0.5), 0.25)},
    'resource_changing': {'base': (_base, 'asha'), 'grace_period': (whole(1), 1),
                          'reduction_factor': (_factor, 2.0), 'perturbation_interval': (whole(1), 1)},
    'bohb': {'reduction_factor': (_factor, 3.0)},
}
# Schedulers whose STOP can be deferred without breaking their bookkeeping (asynchronous rungs).
# HyperBand and BOHB's HyperBand are not: their synchronous halving stops paused trials itself
# (tune_controller.stop_trial) and drops them from its bracket, so a deferred STOP has nowhere to go.
SCHEDULE_AWARE = {'asha', 'resource_changing'}
# Scheduler and search algorithm that only work together (HyperBandForBOHB calls TuneBOHB's on_pause).
PAIRED = {'bohb': 'bohb'}
POPULATION = {'pbt', 'pb2'}


def validate_scheduler(section: dict) -> SchedulerSettings:
    """Check a ``scheduler:`` section and fill in the defaults of the options it leaves out."""
    name, options = validate_section('scheduler', section, OPTIONS)
    return SchedulerSettings(name=name, options=options)


def check_pairing(scheduler: str, search_alg: str, budget: str) -> None:
    """A scheduler and a search algorithm that only work together come together (``search_alg=bohb`` with
    ``scheduler=bohb``, which config.py picks when no scheduler is named), and BOHB counts epochs."""
    for alg, own in PAIRED.items():
        if search_alg == alg and scheduler != own:
            raise UsageError(f'search_alg={alg} runs with its own scheduler ({own}: Ray\'s HyperBandForBOHB), not '
                             f'scheduler={scheduler}: leave scheduler= out or write scheduler={own}')
        if scheduler == own and search_alg != alg:
            raise UsageError(f'scheduler={own} feeds the model of search_alg={alg} and works with no other search '
                             f'algorithm (got search_alg={search_alg}): write search_alg={alg} alone')
    if scheduler == 'bohb' and budget != 'epochs':
        # HyperBand sizes its brackets by log(max_t): counted in seconds, the first bracket would need ~100 trials.
        raise UsageError(f'search_alg=bohb counts its HyperBand budgets in epochs: use budget=epochs (got budget={budget})')


def check_scheduler_fits(settings: SchedulerSettings, params: dict, space_name: str, search_alg: str) -> None:
    """PBT and PB2 mutate sampled parameters during training: the space must have ones they can mutate,
    and their first population is drawn at random."""
    base = settings.options.get('base') if settings.name == 'resource_changing' else settings.name
    if settings.population_based and search_alg != 'random':
        raise UsageError(f'scheduler={settings.name} draws its population at random and then mutates it itself: '
                         f'use search_alg=random (got {search_alg})')
    if base == 'pbt' and not _mutations(params):
        raise UsageError(f'scheduler=pbt needs a parameter to mutate; space {space_name} samples only the budget')
    if base == 'pb2' and not _bounds(params):
        raise UsageError(f'scheduler=pb2 needs a continuous parameter (uniform, loguniform or int); '
                         f'space {space_name} has none besides the budget')


def _mutations(params: dict) -> dict:
    return {path: to_tune(dist) for path, dist in params.items() if path != MAX_EPOCHS_PATH}


def _bounds(params: dict) -> dict:
    return {path: [dist.low, dist.high] for path, dist in params.items()
            if dist.kind != 'choice' and path != MAX_EPOCHS_PATH}


# -- factories -----------------------------------------------------------------------------------

def _fifo(options, spec, budget):
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(options, spec, budget):
    from ray.tune.schedulers import ASHAScheduler

    grace = options['grace_period']
    # With budget=compute a trial's last epoch may cost a little more than the probe's estimate:
    # keep max_t above the full budget so it does not cut a slow trial's last epoch short.
    slack = 1.0 if budget.time_attr == 'training_iteration' else 1.5
    return ASHAScheduler(time_attr=budget.time_attr, max_t=budget.of_epochs(max(spec.max_epochs, grace) * slack),
                         grace_period=budget.of_epochs(grace), reduction_factor=options['reduction_factor'],
                         **_metric(spec))


def _hyperband(options, spec, budget):
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(time_attr=budget.time_attr, max_t=budget.of_epochs(spec.max_epochs),
                              reduction_factor=options['reduction_factor'], **_metric(spec))


def _bohb(options, spec, budget):
    from search.model_based import RungReportingHyperBandForBOHB

    # Budgets in epochs only (check_pairing): HyperBand's brackets come from log(max_t).
    return RungReportingHyperBandForBOHB(time_attr=budget.time_attr, max_t=budget.of_epochs(spec.max_epochs),
                            reduction_factor=options['reduction_factor'], **_metric(spec))


def _pbt(options, spec, budget):
    from ray.tune.schedulers import PopulationBasedTraining

    return PopulationBasedTraining(
        time_attr='training_iteration', perturbation_interval=options['perturbation_interval'],
        quantile_fraction=options['quantile_fraction'], resample_probability=options['resample_probability'],
        hyperparam_mutations=_mutations(spec.params), synch=False, **_metric(spec))


def _pb2(options, spec, budget):
    from ray.tune.schedulers.pb2 import PB2

    return PB2(time_attr='training_iteration', perturbation_interval=options['perturbation_interval'],
               quantile_fraction=options['quantile_fraction'], hyperparam_bounds=_bounds(spec.params),
               synch=False, **_metric(spec))


def _resource_changing(options, spec, budget):
    from ray.tune.schedulers.resource_changing_scheduler import DistributeResources, ResourceChangingScheduler

    if options['base'] == 'asha':
        base = _asha(options, spec, budget)
    else:
        base = _pbt({**OPTIONS_DEFAULTS['pbt'], 'perturbation_interval': options['perturbation_interval']}, spec, budget)
    # Freed CPUs (and GPUs) are shared out evenly among the running trials, which restart from
    # their last checkpoint with the new resources (search/trainable.py reads them).
    return ResourceChangingScheduler(base_scheduler=base, resources_allocation_function=DistributeResources())


def _metric(spec) -> dict:
    """Metric and mode for a scheduler's constructor: only when Tune's own single metric is unset."""
    return dict(metric=spec.metric, mode=spec.mode) if spec.multi_objective else {}


SCHEDULERS = {'fifo': _fifo, 'asha': _asha, 'hyperband': _hyperband, 'pbt': _pbt, 'pb2': _pb2,
              'resource_changing': _resource_changing, 'bohb': _bohb}
OPTIONS_DEFAULTS = {name: {key: default for key, (_, default) in options.items()} for name, options in OPTIONS.items()}


def create_scheduler(spec, budget: Budget, deferred_stops: Path | None = None):
    """Build the scheduler of ``spec.scheduler`` (validated :class:`SchedulerSettings`) for ``budget``.

    ``deferred_stops``: where the schedule-aware rule records the STOPs it deferred (if it applies).
    """
    settings = spec.scheduler
    scheduler = SCHEDULERS[settings.name](settings.options, spec, budget)
    if spec.schedule_aware and settings.name in SCHEDULE_AWARE:
        from search.schedule_aware import ScheduleAwareScheduler

        scheduler = ScheduleAwareScheduler(scheduler, record=deferred_stops)
    if spec.reference:
        from search.reference import ProtectReference

        scheduler = ProtectReference(scheduler)
    return scheduler
