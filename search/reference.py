"""The reference trial: the user's own config, trained beside the search so its gain can be measured.

A searched trial shows what a configuration scores; the user asks whether it beats what they had.
So the first trial of a search (``reference=true``) is the base config as the user runs it, with the
space's component off, trained for the full budget. Its Tune config carries ``REFERENCE_KEY`` and
the trainable builds it from the spec's ``reference_config`` (search/spec.py).

Two wrappers keep it apart from the search it stands beside:

- :class:`ReferenceFirst` (a Tune ``Searcher``) suggests it first and never tells the wrapped
  searcher its results: the reference is not a point of the space, so a model of the space must
  not learn from it.
- :class:`ProtectReference` (a Tune scheduler) never stops, pauses or perturbs it, and never shows
  it to the wrapped scheduler, whose rungs and populations hold only searched trials.
"""
from __future__ import annotations

from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from search.files import REFERENCE_KEY
from search.wrapped_scheduler import WrappedScheduler


def is_reference(trial) -> bool:
    """Whether a Tune trial is the reference trial."""
    return bool((trial.config or {}).get(REFERENCE_KEY))


class ReferenceFirst(Searcher):
    """Suggest ``reference`` as the first trial, then whatever ``searcher`` suggests.

    Args:
        searcher (Searcher): the search algorithm; it never hears of the reference trial.
        reference (dict): the reference trial's Tune config (``REFERENCE_KEY``, and a valid value
            at every sampled path, which the trainable ignores).

    The state (whether the reference was suggested, and its id) is saved with Tune's searcher
    state, so a resumed search does not suggest a second reference.
    """

    def __init__(self, searcher: Searcher, reference: dict):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.reference = {**reference, REFERENCE_KEY: True}
        self.reference_id: str | None = None

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        if self.reference_id is None:
            self.reference_id = trial_id
            return dict(self.reference)
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id != self.reference_id:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id != self.reference_id:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def on_pause(self, trial_id: str) -> None:
        # HyperBandForBOHB tells TuneBOHB (through Tune's search_alg.searcher) which trials it paused
        if trial_id != self.reference_id and hasattr(self.searcher, 'on_pause'):
            self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        if trial_id != self.reference_id and hasattr(self.searcher, 'on_unpause'):
            self.searcher.on_unpause(trial_id)

    def add_evaluated_point(self, *args, **kwargs):
        return self.searcher.add_evaluated_point(*args, **kwargs)

    def get_state(self) -> dict:
        return {'reference_id': self.reference_id}

    def set_state(self, state: dict) -> None:
        self.reference_id = state['reference_id']

    def save(self, checkpoint_path: str):
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str):
        self.searcher.restore(checkpoint_path)


class ProtectReference(WrappedScheduler):
    """Run the reference trial to the end, unseen by the wrapped scheduler; the rest is ``base``'s."""

    def on_trial_add(self, tune_controller, trial):
        if not is_reference(trial):
            self.base.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if is_reference(trial):
            return TrialScheduler.CONTINUE
        return self.base.on_trial_result(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial):
        if not is_reference(trial):
            self.base.on_trial_error(tune_controller, trial)

    def on_trial_complete(self, tune_controller, trial, result):
        if not is_reference(trial):
            self.base.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if not is_reference(trial):
            self.base.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        # Synchronous schedulers (HyperBand, PBT) run only trials they were shown: start the reference here.
        for trial in tune_controller.get_trials():
            if is_reference(trial) and trial.status == trial.PENDING:
                return trial
        return self.base.choose_trial_to_run(tune_controller)
