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
from search.wrapped_scheduler import WrappedScheduler

SETTLED_KEY = 'schedule_settled_epoch'


def defers_stop(result: dict) -> bool:
    """Whether a STOP for this result must wait: the trial has not reached its settled epoch yet."""
    return result.get('epoch', 0) < result.get(SETTLED_KEY, 0)


class ScheduleAwareScheduler(WrappedScheduler):
    """Wrap an asynchronous scheduler (ASHA) so that no trial is stopped before its schedule settles.

    Args:
        base (TrialScheduler): the scheduler whose decisions are kept, except early STOPs.
        record (Path or search.storage.StoredFile, optional): a JSON file of trial id -> the epoch of
            its first deferred STOP (in the experiment's storage), rewritten at each new entry; entries already in it (an earlier session) are kept.

    Attributes:
        deferred (dict[str, int]): trial id -> the epoch of its first deferred STOP in this session.
    """

    def __init__(self, base: TrialScheduler, record: Path | None = None):
        super().__init__(base)
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
        text = json.dumps(merged, indent=1, sort_keys=True) + '\n'
        if not isinstance(self.record, Path):  # a file in the experiment's storage, written whole (search/storage.py)
            self.record.write_text(text)
            return
        partial = self.record.with_suffix('.partial')
        partial.write_text(text)
        os.replace(partial, self.record)  # a killed driver leaves the old file or the new one, never half
