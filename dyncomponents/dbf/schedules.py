"""Freezing schedules of Dynamic Backbone Freezing: pure decisions "does the backbone train now?".

Every schedule answers from (epoch, iteration in epoch, epoch budget, iterations per epoch) alone
and keeps no state, so a run resumed from a checkpoint, or a Ray PBT trial that loads another
trial's checkpoint, takes exactly the decisions an uninterrupted run would take.

Symbols of the paper (arXiv 2407.15143) and the seed code (unique-chan/DBF):

* ``rho`` — the "Step Freezing Scheduler" period: the seed's ``step_epoch`` trains the backbone
  when ``epoch % rho == 0``.
* ``steps`` — the seed's explicit list: the backbone trains only on those epochs.

Example::

    >>> from dyncomponents.dbf import build_freeze_schedule
    >>> s = build_freeze_schedule(dict(type='StepFreezeSchedule', rho=3))
    >>> [s.trains(e, 0, 9, 10) for e in range(6)]
    [True, False, False, True, False, False]
"""
import math
from abc import ABCMeta, abstractmethod

from mmcv.utils import Registry, build_from_cfg

FREEZE_SCHEDULES = Registry('dbf freeze schedule')


def build_freeze_schedule(cfg):
    """Build a schedule from ``dict(type=..., **kwargs)``; an instance is returned unchanged."""
    if isinstance(cfg, BaseFreezeSchedule):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'schedule must be a dict with a "type" key or a BaseFreezeSchedule, got {cfg!r}; '
                         f'registered types: {sorted(FREEZE_SCHEDULES.module_dict)}')
    return build_from_cfg(cfg, FREEZE_SCHEDULES)


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        rule = f'an int >= {low}' if high is None else f'an int in [{low}, {high}]'
        raise ValueError(f'{name} must be {rule}, got {value!r}')


def _check_fraction(name, value, low, high, high_open=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value
    ok = ok and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f'{name} must be a number in [{low}, {high}{")" if high_open else "]"}, got {value!r}')


def step_trains(t, rho, phase, duty, warmup):
    """Whether step ``t`` (an epoch or a global iteration) trains the backbone.

    The first ``warmup`` steps train; after them the pattern repeats every ``rho`` steps, and in
    each period the steps at offsets ``phase, ..., phase + duty - 1`` (mod ``rho``) train.
    """
    if t < warmup:
        return True
    return (t - warmup - phase) % rho < duty


class BaseFreezeSchedule(metaclass=ABCMeta):
    """Interface of a freezing schedule: one pure decision method, like Optuna's ``BasePruner``.

    The hook calls :meth:`trains` before every training iteration; with ``by_epoch=True`` schedules
    the answer is the same for all iterations of an epoch.
    """

    #: False when decisions can change inside an epoch (iteration granularity).
    by_epoch = True

    @abstractmethod
    def trains(self, epoch, iter_in_epoch, max_epochs, iters_per_epoch):
        """Return whether the backbone is trained in this iteration.

        Args:
            epoch (int): 0-based epoch, ``runner.epoch``.
            iter_in_epoch (int): 0-based iteration inside the epoch, ``runner.inner_iter``.
            max_epochs (int): the trial's epoch budget, ``runner.max_epochs``.
            iters_per_epoch (int): ``len(runner.data_loader)``.

        Returns:
            bool: True to train the backbone, False to freeze it.
        """

    @abstractmethod
    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        """Completed epochs after which the schedule has gone through all its phases once.

        The search's schedule-aware early stopping does not stop a trial before this; it never
        exceeds ``max_epochs``.
        """

    def trained_epochs(self, max_epochs, iters_per_epoch):
        """Return, for each epoch of the budget, the fraction of its iterations that train the backbone."""
        if self.by_epoch:
            return [float(self.trains(e, 0, max_epochs, iters_per_epoch)) for e in range(max_epochs)]
        return [sum(self.trains(e, i, max_epochs, iters_per_epoch) for i in range(iters_per_epoch)) / iters_per_epoch
                for e in range(max_epochs)]

    def __repr__(self):
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items())
        return f'{type(self).__name__}({args})'


@FREEZE_SCHEDULES.register_module()
class StepFreezeSchedule(BaseFreezeSchedule):
    """Step freezing scheduler of DBF (https://arxiv.org/abs/2407.15143), with phase, duty cycle and warm-up.

    With the defaults it is the seed's ``step_epoch``: the backbone trains when ``epoch % rho == 0``.
    In general, the first ``warmup`` epochs train, then in every ``rho`` epochs the ``duty``
    epochs starting at offset ``phase`` train and the others are frozen.

    Args:
        rho (int): period in epochs (in iterations when ``by_epoch=False``); ``rho=1`` is plain
            fine-tuning. Default: 2.
        phase (int): offset inside each period of the first trained epoch, in ``[0, rho)``. Default: 0.
        duty (int): trained epochs in every period, in ``[1, rho]``. Default: 1.
        warmup (int): epochs trained before the periodic pattern starts; the period is counted from
            the end of the warm-up. Default: 0.
        by_epoch (bool): False applies the same rule to the global iteration
            ``epoch * iters_per_epoch + iter_in_epoch``, so ``rho=2*m, duty=m`` toggles every ``m``
            iterations. Default: True.
    """

    def __init__(self, rho=2, phase=0, duty=1, warmup=0, by_epoch=True):
        _check_int('rho', rho, 1)
        _check_int('phase', phase, 0, rho - 1)
        _check_int('duty', duty, 1, rho)
        _check_int('warmup', warmup, 0)
        self.rho, self.phase, self.duty, self.warmup = rho, phase, duty, warmup
        self.by_epoch = bool(by_epoch)

    def trains(self, epoch, iter_in_epoch, max_epochs, iters_per_epoch):
        t = epoch if self.by_epoch else epoch * iters_per_epoch + iter_in_epoch
        return step_trains(t, self.rho, self.phase, self.duty, self.warmup)

    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        if self.duty == self.rho:  # never frozen: a single phase
            return 0
        steps = self.warmup + self.rho  # warm-up done and one full period seen
        epochs = steps if self.by_epoch else math.ceil(steps / iters_per_epoch)
        return min(max_epochs, epochs)


@FREEZE_SCHEDULES.register_module()
class BudgetStepFreezeSchedule(BaseFreezeSchedule):
    """Step freezing of DBF (https://arxiv.org/abs/2407.15143) with every length a fraction of the budget.

    Trials with different ``max_epochs`` (or stopped early by a scheduler) then follow the same
    shape: ``period=0.25`` trains the backbone in one of every ``max_epochs / 4`` epochs whatever the
    budget. Lengths are converted to whole steps (epochs, or iterations when ``by_epoch=False``) with
    ``N = max_epochs`` (or ``max_epochs * iters_per_epoch``) as

    * ``rho = max(min_rho, round(period * N))``,
    * ``duty = min(rho, max(1, round(duty * rho)))``,
    * ``phase = round(phase * rho) % rho``,
    * ``warmup = round(warmup * N)``,

    and then decided exactly as :class:`StepFreezeSchedule`.

    Args:
        period (float): period as a fraction of the budget, in ``(0, 1]``. Default: 0.25.
        phase (float): offset of the trained epochs as a fraction of the period, in ``[0, 1)``. Default: 0.0.
        duty (float): trained share of each period, in ``[0, 1]``; at least one step of each period
            trains, so the default 0.0 means one trained epoch per period, the seed's behaviour. Default: 0.0.
        warmup (float): trained warm-up as a fraction of the budget, in ``[0, 1]``. Default: 0.0.
        by_epoch (bool): False counts in global iterations instead of epochs. Default: True.
        min_rho (int): the shortest period in steps. With the default 1 a short budget can round the
            period to one step, which never freezes; 2 keeps at least one frozen step in every period
            whose duty leaves one (a search space then does not spend draws on plain fine-tuning). Default: 1.
    """

    def __init__(self, period=0.25, phase=0.0, duty=0.0, warmup=0.0, by_epoch=True, min_rho=1):
        if not (isinstance(period, (int, float)) and not isinstance(period, bool) and 0 < period <= 1):
            raise ValueError(f'period must be a number in (0, 1], got {period!r}')
        _check_fraction('phase', phase, 0, 1, high_open=True)
        _check_fraction('duty', duty, 0, 1)
        _check_fraction('warmup', warmup, 0, 1)
        _check_int('min_rho', min_rho, 1)
        self.period, self.phase, self.duty, self.warmup = period, phase, duty, warmup
        self.by_epoch = bool(by_epoch)
        self.min_rho = min_rho

    def resolve(self, max_epochs, iters_per_epoch):
        """Return the whole-step ``(rho, phase, duty, warmup)`` for this budget."""
        n = max_epochs if self.by_epoch else max_epochs * iters_per_epoch
        rho = max(self.min_rho, round(self.period * n))
        duty = min(rho, max(1, round(self.duty * rho)))
        return rho, round(self.phase * rho) % rho, duty, round(self.warmup * n)

    def trains(self, epoch, iter_in_epoch, max_epochs, iters_per_epoch):
        t = epoch if self.by_epoch else epoch * iters_per_epoch + iter_in_epoch
        return step_trains(t, *self.resolve(max_epochs, iters_per_epoch))

    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        rho, phase, duty, warmup = self.resolve(max_epochs, iters_per_epoch)
        return StepFreezeSchedule(rho, phase, duty, warmup, self.by_epoch).last_phase_change_epoch(
            max_epochs, iters_per_epoch)


@FREEZE_SCHEDULES.register_module()
class EpochListFreezeSchedule(BaseFreezeSchedule):
    """The seed's explicit-steps scheduler of DBF (https://arxiv.org/abs/2407.15143).

    The backbone trains only on the listed epochs (0-based); all other epochs are frozen. The
    seed's README example ``steps=[1, 21, 41, 61, 81]`` over 100 epochs trains 5 epochs and
    freezes epoch 0. ``steps=[]`` is always frozen.

    Args:
        steps (list[int]): epochs on which the backbone trains. Default: ().
    """

    def __init__(self, steps=()):
        steps = list(steps)
        for s in steps:
            _check_int('every element of steps', s, 0)
        self.steps = sorted(set(steps))

    def trains(self, epoch, iter_in_epoch, max_epochs, iters_per_epoch):
        return epoch in self.steps

    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        # The first epoch by which both a trained and a frozen epoch have happened.
        seen = set()
        for e in range(max_epochs):
            seen.add(self.trains(e, 0, max_epochs, iters_per_epoch))
            if len(seen) == 2:
                return e + 1
        return 0


@FREEZE_SCHEDULES.register_module()
class AlwaysFrozenSchedule(BaseFreezeSchedule):
    """Baseline of DBF (https://arxiv.org/abs/2407.15143): the backbone never trains (a fixed feature extractor)."""

    def trains(self, epoch, iter_in_epoch, max_epochs, iters_per_epoch):
        return False

    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        return 0


@FREEZE_SCHEDULES.register_module()
class NeverFrozenSchedule(BaseFreezeSchedule):
    """Baseline of DBF (https://arxiv.org/abs/2407.15143): the backbone always trains (plain fine-tuning)."""

    def trains(self, epoch, iter_in_epoch, max_epochs, iters_per_epoch):
        return True

    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        return 0
