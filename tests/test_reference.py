"""The reference trial's two wrappers, on fake trials and results: first, never stopped, unseen by the search."""
from types import SimpleNamespace
from unittest import mock

from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from search.files import REFERENCE_KEY
from search.reference import ProtectReference, ReferenceFirst


class _Counting(Searcher):
    """A searcher that suggests numbered configs and records what it was told."""

    def __init__(self):
        super().__init__(metric='bbox_mAP', mode='max')
        self.suggested, self.results, self.completed = 0, [], []

    def suggest(self, trial_id):
        self.suggested += 1
        return {'optimizer.lr': 0.001 * self.suggested}

    def on_trial_result(self, trial_id, result):
        self.results.append(trial_id)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append(trial_id)


def _trial(trial_id, reference=False, status='RUNNING'):
    return SimpleNamespace(trial_id=trial_id, config={REFERENCE_KEY: True} if reference else {'optimizer.lr': 0.1},
                           status=status, PENDING='PENDING')


def test_the_reference_comes_first_and_the_searcher_never_hears_of_it():
    inner = _Counting()
    searcher = ReferenceFirst(inner, {'optimizer.lr': 0.004})
    assert searcher.suggest('ref') == {'optimizer.lr': 0.004, REFERENCE_KEY: True}
    assert searcher.suggest('t1') == {'optimizer.lr': 0.001} and inner.suggested == 1
    for trial_id in ('ref', 't1'):
        searcher.on_trial_result(trial_id, {'bbox_mAP': 0.3})
        searcher.on_trial_complete(trial_id, {'bbox_mAP': 0.3})
    assert inner.results == ['t1'] and inner.completed == ['t1']


def test_a_resumed_search_suggests_no_second_reference():
    first = ReferenceFirst(_Counting(), {'optimizer.lr': 0.004})
    first.suggest('ref')
    resumed = ReferenceFirst(_Counting(), {'optimizer.lr': 0.004})
    resumed.set_state(first.get_state())  # what Tune's searcher checkpoint carries across a resume
    assert REFERENCE_KEY not in resumed.suggest('t2')
    resumed.on_trial_complete('ref', {'bbox_mAP': 0.3})
    assert resumed.searcher.completed == []


def test_the_reference_is_never_stopped_and_never_shown_to_the_scheduler():
    base = mock.MagicMock(spec=TrialScheduler)
    base.on_trial_result.return_value = TrialScheduler.STOP
    scheduler = ProtectReference(base)
    reference, searched = _trial('ref', reference=True), _trial('t1')
    for trial in (reference, searched):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, reference, {'epoch': 1}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, searched, {'epoch': 1}) == TrialScheduler.STOP
    scheduler.on_trial_complete(None, reference, {})
    scheduler.on_trial_error(None, reference)
    scheduler.on_trial_remove(None, reference)
    assert [c.args[1] for c in base.on_trial_add.call_args_list] == [searched]
    assert [c.args[1] for c in base.on_trial_result.call_args_list] == [searched]
    base.on_trial_complete.assert_not_called()
    base.on_trial_error.assert_not_called()
    base.on_trial_remove.assert_not_called()


def test_a_pending_reference_starts_first_even_under_a_synchronous_scheduler():
    base = mock.MagicMock(spec=TrialScheduler)
    base.choose_trial_to_run.return_value = 'from base'
    controller = SimpleNamespace(get_trials=lambda: trials)
    trials = [_trial('t1', status='PENDING'), _trial('ref', reference=True, status='PENDING')]
    assert ProtectReference(base).choose_trial_to_run(controller).trial_id == 'ref'
    trials[1].status = 'RUNNING'
    assert ProtectReference(base).choose_trial_to_run(controller) == 'from base'
