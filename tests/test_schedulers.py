"""Schedulers, search algorithms, budgets and the schedule-aware rule."""
import csv
import json
import pickle
from types import SimpleNamespace
from unittest import mock

import pytest
from ray.tune.schedulers import TrialScheduler

from conftest import run_search_for_test
from search.errors import UsageError
from search.resources import gpu_fraction
from search.results import load_records, pareto_optimal, read_deferred_stops, write_summary, write_trials_csv
from search.schedule_aware import ScheduleAwareScheduler, defers_stop
from search.schedulers import SCHEDULERS, Budget, create_scheduler
from search.space import Distribution


def _spec(name, **options):
    params = {'optimizer.lr': Distribution('loguniform', (1e-3, 1e-1)),
              'custom_hooks[type=H].schedule.rho': Distribution('choice', (1, 2, 3))}
    return SimpleNamespace(scheduler=dict(name=name, **options), params=params, max_epochs=8, schedule_aware=True,
                           scheduler_metric={}, space=SimpleNamespace(name='test'))


class _AlwaysStop(TrialScheduler):
    def on_trial_result(self, tune_controller, trial, result):
        return TrialScheduler.STOP


@pytest.mark.parametrize('epoch, settled, expected', [
    (1, 3, TrialScheduler.CONTINUE),   # the schedule has not shown all its phases: keep it
    (2, 3, TrialScheduler.CONTINUE),
    (3, 3, TrialScheduler.STOP),       # settled: the base scheduler's STOP stands
    (5, 0, TrialScheduler.STOP),       # no component schedule at all
])
def test_schedule_aware_defers_stop_until_the_last_phase_change(epoch, settled, expected):
    scheduler = ScheduleAwareScheduler(_AlwaysStop())
    result = {'epoch': epoch, 'schedule_settled_epoch': settled}
    assert scheduler.on_trial_result(mock.MagicMock(), mock.MagicMock(), result) == expected
    assert defers_stop(result) == (expected == TrialScheduler.CONTINUE)


def test_schedule_aware_records_each_trials_first_deferred_stop_across_a_resume(tmp_path):
    record = tmp_path / 'deferred_stops.json'
    at_start = pickle.dumps(ScheduleAwareScheduler(_AlwaysStop(), record=record))  # what tuner.pkl holds
    scheduler = pickle.loads(at_start)
    for trial_id, epoch in (('t1', 1), ('t1', 2), ('t2', 4)):  # t2 has settled: its STOP stands, no entry
        scheduler.on_trial_result(None, SimpleNamespace(trial_id=trial_id), {'epoch': epoch, 'schedule_settled_epoch': 3})
    assert read_deferred_stops(record) == {'t1': 1}
    resumed = pickle.loads(at_start)  # a resumed search starts from the pickled, empty scheduler
    for trial_id, epoch in (('t1', 2), ('t3', 1)):
        resumed.on_trial_result(None, SimpleNamespace(trial_id=trial_id), {'epoch': epoch, 'schedule_settled_epoch': 3})
    assert read_deferred_stops(record) == {'t1': 1, 't3': 1}


def test_results_show_what_the_deferred_stops_cost(tmp_path):
    def state(trials):
        return json.dumps({'trial_data': [[json.dumps(dict(trial_id=t, status='TERMINATED', relative_logdir=t, config={})),
                                           json.dumps({})] for t in trials]})

    rows = {'kept': [(1, 20.0, 0.0), (2, 40.0, 0.3), (3, 60.0, 0.5)], 'plain': [(1, 20.0, 0.1), (2, 40.0, 0.2)]}
    for trial, results in rows.items():
        (tmp_path / trial).mkdir()
        (tmp_path / trial / 'result.json').write_text(''.join(
            json.dumps(dict(epoch=e, time_total_s=t, bbox_mAP=m)) + '\n' for e, t, m in results))
    (tmp_path / 'experiment_state-2026-12-01_12-00-00.json').write_text(state(rows))
    (tmp_path / 'deferred_stops.json').write_text(json.dumps({'kept': 1}))
    records = {r.trial_id: r for r in load_records(tmp_path, 'bbox_mAP', 'max')}
    assert (records['kept'].stop_deferred_at, records['kept'].seconds_after_deferred_stop) == (1, 40.0)
    assert (records['plain'].stop_deferred_at, records['plain'].seconds_after_deferred_stop) == (None, 0.0)
    summary = write_summary(list(records.values()), tmp_path / 'summary.json', space='s', metric='bbox_mAP',
                            mode='max', wall_seconds=1.0, experiment=tmp_path)
    assert summary['schedule_aware'] == {'trials_kept': 1, 'seconds_after_deferred_stops': 40.0, 'best_was_kept': True}
    write_trials_csv(list(records.values()), tmp_path / 'trials.csv', 'bbox_mAP')
    column = {row['trial_id']: row['stop_deferred_at'] for row in csv.DictReader(open(tmp_path / 'trials.csv'))}
    assert column == {'kept': '1', 'plain': ''}


def test_schedule_aware_keeps_the_base_decisions_otherwise():
    base = mock.MagicMock(spec=TrialScheduler)
    base.on_trial_result.return_value = TrialScheduler.PAUSE
    scheduler = ScheduleAwareScheduler(base)
    assert scheduler.on_trial_result(None, None, {'epoch': 0, 'schedule_settled_epoch': 5}) == TrialScheduler.PAUSE
    scheduler.on_trial_complete(None, 't', {})
    base.on_trial_complete.assert_called_once_with(None, 't', {})


def test_asha_under_a_compute_budget_counts_seconds():
    scheduler = create_scheduler(_spec('asha', grace_period=2), Budget('compute_seconds', 30.0))
    base = scheduler.base
    assert base._time_attr == 'compute_seconds'
    assert base._brackets[0]._rungs[-1][0] == 60.0  # the first rung: 2 full-cost epochs of 30 s


@pytest.mark.parametrize('name', sorted(SCHEDULERS))
def test_every_scheduler_builds_and_rejects_unknown_options(name):
    assert create_scheduler(_spec(name), Budget('training_iteration', 1.0)) is not None
    with pytest.raises(UsageError, match='has no option'):
        create_scheduler(_spec(name, grace_periods=3), Budget('training_iteration', 1.0))


def test_pb2_mutates_only_continuous_parameters():
    scheduler = create_scheduler(_spec('pb2'), Budget('training_iteration', 1.0))
    assert set(scheduler._hyperparam_bounds) == {'optimizer.lr'}


@pytest.mark.parametrize('peak, total, share', [(10_000, 80_000, 1 / 6), (70_000, 80_000, 1.0), (1_000, 80_000, 1 / 68)])
def test_gpu_packing(peak, total, share):
    assert gpu_fraction(peak, total) == pytest.approx(share)


def test_pareto_front_by_hand():
    points = [(0.5, 10.0), (0.4, 5.0), (0.3, 6.0), (0.5, 12.0), (0.5, 10.0)]
    assert pareto_optimal(points, ('max', 'min')) == [True, True, False, False, True]


def test_fake_gpu_trials_run_four_at_a_time(ray_session):
    """Ray schedules fractional GPU shares: with one (faked) GPU and share 0.25, four tasks run at once."""
    import time

    import ray

    if ray.cluster_resources().get('GPU', 0) < 1:
        pytest.skip('the session Ray has no (faked) GPU')

    share = gpu_fraction(10_000, 50_000)  # 85 % of 50 GB holds four 10 GB trials
    assert share == 0.25

    @ray.remote(num_gpus=share, num_cpus=0)
    def hold():
        start = time.time()
        time.sleep(4.0)
        return start, time.time()

    spans = ray.get([hold.remote() for _ in range(4)])
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # all four held their share at the same time


SEARCHES = [
    ['scheduler=fifo'],
    ['scheduler=hyperband'],
    ['scheduler=pbt'],
    ['scheduler=pb2'],
    ['scheduler=resource_changing'],
    ['scheduler=asha', 'budget=compute', 'space=dbf'],
    ['search_alg=grid', 'space=schedule', 'scheduler=fifo'],
    ['search_alg=optuna'],
    ['search_alg=nsga2', 'scheduler=fifo'],
]


@pytest.mark.slow
@pytest.mark.parametrize('overrides', SEARCHES, ids=['-'.join(o) for o in SEARCHES])
def test_every_scheduler_and_search_alg_runs_a_real_search(ray_session, tmp_path, overrides):
    space = [o for o in overrides if o.startswith('space=')] or ['space=baseline']
    rest = [o for o in overrides if not o.startswith('space=')]
    spec, summary = run_search_for_test([*space, 'smoke=true', *rest, 'experiment.name=s'], tmp_path)
    assert summary['num_trials'] >= 2 and summary['num_failed'] == 0 and summary['best'] is not None
    folder = tmp_path / 's'
    assert (folder / 'best' / 'best_config.py').is_file()
    if spec.multi_objective:
        assert summary['objectives'] == ['bbox_mAP', 'compute_seconds'] and summary['pareto']
        assert (folder / 'pareto.csv').is_file() and ',pareto,' in (folder / 'trials.csv').read_text().splitlines()[0]
