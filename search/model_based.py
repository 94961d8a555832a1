"""Model-based searchers that learn from every rung of an early-stopping scheduler.

What Ray Tune 2.60 tells a searcher (``TuneController._process_trial_result``): every result goes
to ``searcher.on_trial_result`` *except* one on which the scheduler (or a stopper) decides STOP;
that one comes only with ``on_trial_complete(result=...)``. So the very rung at which ASHA stops a
trial is not an intermediate result for the searcher. Ray's own classes, each changed where that
or the rest of multi-fidelity search did not fit:

- :class:`RungAwareOptunaSearch` (Ray's ``OptunaSearch``, which reports each result to Optuna as an
  intermediate value, ``trial.report(metric, training_iteration)``): Ray tells a trial that ASHA
  stopped as COMPLETE with its rung score, as if that were a final score. Optuna's TPE (5.0) ranks
  COMPLETE trials by value and PRUNED trials after them, by how far they got (their last step) and
  then by their last intermediate value (``_split_trials``, ``_get_pruned_trial_score`` in
  ``optuna/samplers/_tpe/sampler.py``). So a trial that ended before its epoch budget is reported
  the rung it was stopped on and told PRUNED: TPE learns from that rung, ranked below full budgets.
- :class:`PlainTuneBOHB` (Ray's ``TuneBOHB``): hpbandster hands categorical values back as numpy
  scalars; the trial configs get plain Python values (mmcv writes them into trial_config.py).
- :class:`RungReportingHyperBandForBOHB` (Ray's ``HyperBandForBOHB``): the rung result on which
  HyperBand stops a trial (a bad trial closing its bracket, or the last rung) still reaches BOHB.
"""

from __future__ import annotations

import warnings

from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import HyperBandForBOHB, TrialScheduler
from ray.tune.search.bohb import TuneBOHB
from ray.tune.search.optuna import OptunaSearch


class RungAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial which ended before its epoch budget was PRUNED.

    Args:
        budget_path (str | None): the sampled parameter holding a trial's epoch budget, if the
            space samples it.
        max_epochs (int): the epoch budget of a trial whose config does not hold one.
        *args, **kwargs: Ray's ``OptunaSearch``.

    A trial's end is judged by its last result's ``epoch`` against its budget: stopped by the
    scheduler at a rung, or by ``search_budget_s``, it is PRUNED (its intermediate values stay);
    trained to its budget, COMPLETE; failed, whatever Ray's OptunaSearch makes of it.
    """

    def __init__(self, *args, budget_path: str | None, max_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._budget_path = budget_path
        self._max_epochs = max_epochs
        self._budgets: dict[str, int] = {}

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self._budgets[trial_id] = int(config.get(self._budget_path, self._max_epochs)
                                          if self._budget_path else self._max_epochs)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        budget = self._budgets.pop(trial_id, None)
        single = not isinstance(self.metric, list)  # Ray reports no intermediate values of several objectives
        if not error and result and single and trial_id not in self._completed_trials and trial_id in self._ot_trials:
            value, step = result.get(self.metric), result.get(TRAINING_ITERATION)
            if value is not None and step is not None:
                with warnings.catch_warnings():  # a step reported already (a duplicate end result) is ignored
                    warnings.simplefilter('ignore')
                    # the result the trial ended on (a rung's STOP, or its last epoch): Tune never sent it
                    self._ot_trials[trial_id].report(value, step)
            if budget is not None and int(result.get('epoch', budget)) < budget:
                from optuna.trial import TrialState

                # values=None: Optuna takes the last intermediate value (the rung's score) as the trial's
                self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result=result, error=error)


class PlainTuneBOHB(TuneBOHB):
    """TuneBOHB whose suggested configs hold Python values, not numpy scalars."""

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            config = {key: value.item() if hasattr(value, 'item') else value for key, value in config.items()}
        return config


class RungReportingHyperBandForBOHB(HyperBandForBOHB):
    """HyperBandForBOHB that hands BOHB the rung result on which it stops a trial.

    HyperBandForBOHB writes the rung's budget into the result (``hyperband_info``) and pauses the
    trial, and Tune passes that result on to TuneBOHB. When the result instead closes the bracket and
    the trial is among its bad ones, or finishes its last rung, the decision is STOP, and Tune sends
    the searcher nothing: BOHB's model would miss those results (often its only full-budget ones).
    """

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and 'budget' in result.get('hyperband_info', {}):
            tune_controller.search_alg.searcher.on_trial_result(trial.trial_id, result)
        return decision
