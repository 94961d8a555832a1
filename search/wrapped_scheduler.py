"""A Tune scheduler that hands every decision to the scheduler it wraps, for wrappers to change one.

:class:`~search.schedule_aware.ScheduleAwareScheduler` and :class:`~search.reference.ProtectReference`
subclass it and override only the decision they change; everything else, including Tune's
checkpointing of the scheduler, is the wrapped scheduler's.
"""
from __future__ import annotations

from ray.tune.schedulers import TrialScheduler


class WrappedScheduler(TrialScheduler):
    """Forward every callback to ``base``.

    Args:
        base (TrialScheduler): the scheduler whose decisions stand unless a subclass changes them.
    """

    def __init__(self, base: TrialScheduler):
        super().__init__()
        self.base = base

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.base.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial):
        self.base.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.base.on_trial_result(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial):
        self.base.on_trial_error(tune_controller, trial)

    def on_trial_complete(self, tune_controller, trial, result):
        self.base.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self.base.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        return self.base.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return f'{type(self).__name__}({self.base.debug_string()})'

    def save(self, checkpoint_path: str):
        self.base.save(checkpoint_path)

    def restore(self, checkpoint_path: str):
        self.base.restore(checkpoint_path)

    @property
    def metric(self):
        return self.base.metric

    @property
    def _supports_buffered_results(self):
        return self.base._supports_buffered_results
