"""Schedulers, search algorithms, budgets and the schedule-aware rule."""
import csv
import json
import pickle
from types import SimpleNamespace
from unittest import mock

import pytest
from ray.tune.schedulers import (ASHAScheduler, FIFOScheduler, HyperBandScheduler, PopulationBasedTraining,
                                 TrialScheduler)
from ray.tune.schedulers.pb2 import PB2
from ray.tune.schedulers.resource_changing_scheduler import DistributeResources, ResourceChangingScheduler
from ray.tune.search.sample import LogUniform

from conftest import run_search_for_test, write_tune_experiment
from search.errors import UsageError
from search.resources import gpu_fraction
from search.results import load_records, pareto_optimal, read_deferred_stops, write_summary, write_trials_csv
from search.schedule_aware import ScheduleAwareScheduler, defers_stop
from search.schedulers import MAX_EPOCHS_PATH, SCHEDULERS, Budget, check_scheduler_fits, create_scheduler, validate_scheduler
from search.space import Distribution


def _spec(name, reference=False, **options):
    params = {'optimizer.lr': Distribution('loguniform', (1e-3, 1e-1)),
              'custom_hooks[type=H].schedule.rho': Distribution('choice', (1, 2, 3))}
    return SimpleNamespace(scheduler=validate_scheduler(dict(name=name, **options)), params=params, max_epochs=8,
                           schedule_aware=True, multi_objective=False, reference=reference,
                           space=SimpleNamespace(name='test'))


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
    rows = {'kept': [(1, 20.0, 0.0), (2, 40.0, 0.3), (3, 60.0, 0.5)], 'plain': [(1, 20.0, 0.1), (2, 40.0, 0.2)]}
    write_tune_experiment(tmp_path, {trial: [dict(epoch=e, time_total_s=t, bbox_mAP=m) for e, t, m in results]
                                     for trial, results in rows.items()})
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


EPOCHS = Budget('training_iteration', 1.0)


def _asha_rungs(asha) -> list[float]:
    """The milestones of ASHA's single bracket, lowest first: grace period, then x reduction factor up to max_t."""
    return sorted(milestone for milestone, _ in asha._brackets[0]._rungs)


# What each factory must build, read back from Ray's own scheduler objects. Ray keeps the options in
# private attributes, so this table and _asha_rungs are the places to adapt on a Ray upgrade.
BUILDS = [
    ('fifo', {}, lambda s: isinstance(s, FIFOScheduler)),
    ('asha', {}, lambda s: isinstance(s, ScheduleAwareScheduler) and isinstance(s.base, ASHAScheduler)
        and (s.base._time_attr, s.base._max_t, s.base._reduction_factor) == ('training_iteration', 8, 2.0)
        and _asha_rungs(s.base) == [1, 2, 4, 8]),
    ('asha', dict(grace_period=2, reduction_factor=3), lambda s: isinstance(s.base, ASHAScheduler)
        and (s.base._max_t, s.base._reduction_factor) == (8, 3.0) and _asha_rungs(s.base) == [2, 6]),
    ('hyperband', {}, lambda s: type(s) is HyperBandScheduler  # synchronous brackets: never schedule-aware
        and (s._time_attr, s._max_t_attr, s._eta) == ('training_iteration', 8, 3.0)),
    ('hyperband', dict(reduction_factor=2), lambda s: s._eta == 2.0),
    ('pbt', {}, lambda s: type(s) is PopulationBasedTraining and s._time_attr == 'training_iteration'
        and (s._perturbation_interval, s._quantile_fraction, s._resample_probability, s._synch) == (1, 0.25, 0.25, False)),
    ('pbt', dict(perturbation_interval=2, quantile_fraction=0.5, resample_probability=0.1), lambda s:
        (s._perturbation_interval, s._quantile_fraction, s._resample_probability) == (2, 0.5, 0.1)),
    ('pb2', {}, lambda s: type(s) is PB2 and (s._perturbation_interval, s._quantile_fraction, s._synch) == (1, 0.25, False)
        and s._hyperparam_bounds == {'optimizer.lr': [1e-3, 1e-1]}),  # continuous only, never the epoch budget
    ('resource_changing', {}, lambda s: isinstance(s, ScheduleAwareScheduler)
        and type(s.base) is ResourceChangingScheduler
        and isinstance(s.base._resources_allocation_function, DistributeResources)
        and isinstance(s.base._base_scheduler, ASHAScheduler) and _asha_rungs(s.base._base_scheduler) == [1, 2, 4, 8]),
    ('resource_changing', dict(base='asha', grace_period=4), lambda s:
        _asha_rungs(s.base._base_scheduler) == [4, 8]),
    ('resource_changing', dict(base='pbt', perturbation_interval=3), lambda s:
        type(s.base._base_scheduler) is PopulationBasedTraining and s.base._base_scheduler._perturbation_interval == 3),
]


@pytest.mark.parametrize('name, options, check', BUILDS,
                         ids=[f'{n}-{"-".join(f"{k}={v}" for k, v in o.items()) or "defaults"}' for n, o, _ in BUILDS])
def test_every_scheduler_builds_ray_tunes_class_with_its_options(name, options, check):
    scheduler = create_scheduler(_spec(name, **options), EPOCHS)
    assert check(scheduler), vars(getattr(scheduler, 'base', scheduler))


@pytest.mark.parametrize('name', sorted(SCHEDULERS))
def test_every_scheduler_rejects_unknown_options(name):
    with pytest.raises(UsageError, match='has no option'):
        validate_scheduler(dict(name=name, grace_periods=3))


def test_schedule_aware_false_leaves_asha_unwrapped():
    spec = _spec('asha')
    spec.schedule_aware = False
    assert type(create_scheduler(spec, EPOCHS)) is ASHAScheduler


def test_the_objective_goes_to_the_scheduler_when_the_tuner_does_not_hold_it():
    spec = _spec('asha')
    spec.multi_objective, spec.metric, spec.mode = True, 'bbox_mAP', 'max'  # nsga2's case: no metric on the TuneConfig
    asha = create_scheduler(spec, EPOCHS).base
    assert (asha._metric, asha._mode) == ('bbox_mAP', 'max')


def test_pbt_mutates_every_sampled_parameter_but_the_epoch_budget():
    spec = _spec('pbt')
    spec.params = {**spec.params, MAX_EPOCHS_PATH: Distribution('choice', (4, 8))}
    mutations = create_scheduler(spec, EPOCHS)._hyperparam_mutations
    assert set(mutations) == {'optimizer.lr', 'custom_hooks[type=H].schedule.rho'}
    lr = mutations['optimizer.lr']
    assert isinstance(lr.get_sampler(), LogUniform) and (lr.lower, lr.upper) == (1e-3, 1e-1)
    assert mutations['custom_hooks[type=H].schedule.rho'].categories == [1, 2, 3]
    with pytest.raises(UsageError, match='needs a parameter to mutate'):
        check_scheduler_fits(spec.scheduler, {MAX_EPOCHS_PATH: Distribution('choice', (4, 8))}, 'test', 'random')
    with pytest.raises(UsageError, match='use search_alg=random'):
        check_scheduler_fits(spec.scheduler, spec.params, 'test', 'optuna')


@pytest.mark.parametrize('name', ['asha', 'hyperband', 'pbt'])
def test_the_reference_trial_is_protected_around_any_scheduler(name):
    from search.reference import ProtectReference

    scheduler = create_scheduler(_spec(name, reference=True), EPOCHS)
    assert isinstance(scheduler, ProtectReference) and not isinstance(scheduler.base, ProtectReference)


@pytest.mark.parametrize('name, options, message', [
    ('asha', dict(grace_period=0), 'grace_period must be a whole number >= 1'),
    ('asha', dict(reduction_factor=1), 'reduction_factor must be a number > 1'),
    ('pbt', dict(quantile_fraction=0.6), r'quantile_fraction must be a probability in \[0, 0.5\]'),
    ('resource_changing', dict(base='hyperband'), 'scheduler.base must be asha or pbt'),
])
def test_bad_option_values_are_usage_errors(name, options, message):
    with pytest.raises(UsageError, match=message):
        create_scheduler(_spec(name, **options), EPOCHS)


@pytest.mark.parametrize('peak, total, share', [(10_000, 80_000, 1 / 6), (70_000, 80_000, 1.0), (1_000, 80_000, 1 / 68)])
def test_gpu_packing(peak, total, share):
    assert gpu_fraction(peak, total) == pytest.approx(share)


def test_pareto_front_by_hand():
    points = [(0.5, 10.0), (0.4, 5.0), (0.3, 6.0), (0.5, 12.0), (0.5, 10.0)]
    assert pareto_optimal(points, ('max', 'min')) == [True, True, False, False, True]


@pytest.mark.slow  # starts Ray
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


# The default ASHA + random runs in tests/test_search_smoke.py, FIFO in tests/test_storage_s3.py and
# tests/test_search_budget.py, Optuna's TPE with ASHA on budget=compute (space=dbf) and BOHB in
# tests/test_model_based.py. The reference trial stands beside one scheduler that perturbs its
# population (PBT, the case ProtectReference exists for); elsewhere it would only cost a training.
SEARCHES = [
    ['scheduler=hyperband', 'reference=false'],
    ['scheduler=pbt'],
    ['scheduler=pb2', 'reference=false'],
    ['scheduler=resource_changing', 'reference=false'],
    ['search_alg=grid', 'space=schedule', 'scheduler=fifo', 'reference=false'],
    ['search_alg=nsga2', 'scheduler=fifo', 'reference=false'],
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
