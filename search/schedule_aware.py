"""Schedule-aware early stopping: never stop a trial before its own schedule has shown all its phases.

Early stopping judges a trial by its metric at a rung. Schedules that start slowly (a frozen
backbone before its first trained epoch, Dynamic R-CNN before its first threshold update, a late
learning-rate decay) look worse there than they end up, and plain ASHA kills them. Every trial
reports ``schedule_settled_epoch``: the epoch by which each of its components' schedules has gone
through all its distinct phases once (the components' ``last_phase_change_epoch``). Before that
epoch, a STOP of the wrapped scheduler becomes CONTINUE; afterwards its decisions stand.

The rule is a trade (docs/benchmarks.md, section 3): it saves slow starters and also keeps hopeless
trials running. So that a user can see which in their own search, each trial's first deferred STOP
is recorded in ``deferred_stops.json`` in the experiment folder, which results.py turns into the
``stop_deferred_at`` column of trials.csv and the ``schedule_aware`` entry of summary.json.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ray.tune.schedulers import TrialScheduler

from search.results import read_deferred_stops

SETTLED_KEY = 'schedule_settled_epoch'


def defers_stop(result: dict) -> bool:
    """Whether a STOP for this result must wait: the trial has not reached its settled epoch yet."""
    return result.get('epoch', 0) < result.get(SETTLED_KEY, 0)


class ScheduleAwareScheduler(TrialScheduler):
    """Wrap an asynchronous scheduler (ASHA) so that no trial is stopped before its schedule settles.

    Args:
        base (TrialScheduler): the scheduler whose decisions are kept, except early STOPs.
        record (Path, optional): a JSON file of trial id -> the epoch of its first deferred STOP,
            rewritten at each new entry; entries already in it (an earlier session) are kept.

    Attributes:
        deferred (dict[str, int]): trial id -> the epoch of its first deferred STOP in this session.
    """

    def __init__(self, base: TrialScheduler, record: Path | None = None):
        super().__init__()
        self.base = base
        self.record = record
        self.deferred: dict[str, int] = {}  # this session's; _write merges the file's

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = self.base.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and defers_stop(result):
            if trial.trial_id not in self.deferred:
                self.deferred[trial.trial_id] = int(result.get('epoch', 0))
                self._write()
            return TrialScheduler.CONTINUE
        return decision

    def _write(self) -> None:
        if self.record is None:
            return
        # A resumed search unpickles this scheduler as it was when the search began, so the file, not
        # memory, holds the earlier sessions' entries; theirs are the first deferrals.
        merged = {**self.deferred, **read_deferred_stops(self.record)}
        partial = self.record.with_suffix('.partial')
        partial.write_text(json.dumps(merged, indent=1, sort_keys=True) + '\n')
        os.replace(partial, self.record)  # a killed driver leaves the old file or the new one, never half

    # Everything else is the base scheduler's.
    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.base.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial):
        self.base.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self.base.on_trial_error(tune_controller, trial)

    def on_trial_complete(self, tune_controller, trial, result):
        self.base.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self.base.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        return self.base.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return f'ScheduleAware({self.base.debug_string()})'

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
