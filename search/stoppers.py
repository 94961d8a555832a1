"""``search_budget_s``: end the whole search once its trials together have run that many seconds.

The budget counts Tune's ``time_total_s`` of every trial (its own wall time: building, training,
evaluation, checkpoints), summed over trials, so two searches with the same budget spend the same
compute whatever their scheduler does with it: ASHA spreads it over many short trials, random search
over a few full ones. Tune asks after every reported result; once the budget is reached it stops
the trials still running and starts no new one. Everything reported is kept (a stopped trial's
last checkpoint too), so the budget may be overrun by at most the running trials' unfinished epochs.
"""
from __future__ import annotations

from ray.tune.stopper import Stopper


class SearchBudgetStopper(Stopper):
    """Tune stopper: ``stop_all()`` once the trials' summed ``time_total_s`` reaches ``budget_s``.

    Args:
        budget_s (float): seconds of trial time the whole search may use (> 0).
        spent (dict[str, float]): trial id -> seconds already used, for a resumed search whose
            finished trials will not report again.
    """

    def __init__(self, budget_s: float, spent: dict[str, float] | None = None):
        self.budget_s = float(budget_s)
        self._seconds = dict(spent or {})

    @property
    def used_s(self) -> float:
        return sum(self._seconds.values())

    def __call__(self, trial_id: str, result: dict) -> bool:
        # time_total_s is cumulative per trial (carried across restores), so the latest value is its use.
        self._seconds[trial_id] = float(result.get('time_total_s', 0.0))
        return False

    def stop_all(self) -> bool:
        return self.used_s >= self.budget_s
