"""Model-based multi-fidelity search: BOHB with its scheduler, TPE learning from ASHA's rungs, warm start."""
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from search.errors import UsageError
from search.files import REFERENCE_KEY
from search.mmdet_config import MAX_EPOCHS_PATH
from search.schedulers import Budget, check_pairing, create_scheduler, validate_scheduler
from search.search_algs import create_search_alg, validate_search_alg
from search.space import Distribution, to_tune

LR = 'optimizer.lr'
PARAMS = {LR: Distribution('loguniform', (1e-3, 1e-1)), 'rho': Distribution('choice', (1, 2, 3)),
          MAX_EPOCHS_PATH: Distribution('int', (2, 4))}


def _spec(search_alg='optuna', scheduler='asha', warm=(), reference=False, **options):
    return SimpleNamespace(search_alg=validate_search_alg(dict(name=search_alg, **options)),
                           scheduler=validate_scheduler(dict(name=scheduler)), params=PARAMS, max_epochs=4,
                           seed=0, metric='bbox_mAP', mode='max', objectives=('bbox_mAP',), objective_modes=('max',),
                           multi_objective=False, max_concurrent_trials=None, schedule_aware=True,
                           reference=reference, warm_start_points=tuple(warm))


def _searcher(spec, reference=None):
    searcher = create_search_alg(spec, reference=reference)
    searcher.set_search_properties('bbox_mAP', 'max', {p: to_tune(d) for p, d in PARAMS.items()})
    return searcher


# -- BOHB and the pairing rules ------------------------------------------------------------------

def test_search_alg_bohb_alone_picks_its_scheduler_and_a_named_one_stays():
    from search.config import compose_config

    assert compose_config(['search_alg=bohb']).scheduler.name == 'bohb'
    assert compose_config(['search_alg=optuna']).scheduler.name == 'asha'  # others keep the default
    assert compose_config(['search_alg=bohb', 'scheduler=pbt']).scheduler.name == 'pbt'  # rejected by the spec


@pytest.mark.parametrize('scheduler, search_alg, budget, message', [
    ('pbt', 'bohb', 'epochs', r'search_alg=bohb runs with its own scheduler .*not scheduler=pbt'),
    ('asha', 'bohb', 'epochs', r'not scheduler=asha'),
    ('bohb', 'random', 'epochs', r'scheduler=bohb .* works with no other search algorithm \(got search_alg=random\)'),
    ('bohb', 'bohb', 'compute', r'use budget=epochs'),
])
def test_pairings_that_cannot_work_are_usage_errors(scheduler, search_alg, budget, message):
    with pytest.raises(UsageError, match=message):
        check_pairing(scheduler, search_alg, budget)


def test_search_alg_bohb_with_scheduler_pbt_is_one_line_exit_2_before_ray(capsys):
    from search.run import main

    assert main(['search_alg=bohb', 'scheduler=pbt', 'dashboard=false']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('dyntune: error: search_alg=bohb runs with its own scheduler'), err


def test_bohb_scheduler_is_rays_hyperband_for_bohb_in_epochs_never_schedule_aware():
    from ray.tune.schedulers import HyperBandForBOHB

    from search.reference import ProtectReference

    scheduler = create_scheduler(_spec('bohb', 'bohb'), Budget('training_iteration', 1.0))
    assert isinstance(scheduler, HyperBandForBOHB)  # a synchronous halving: a deferred STOP would break it
    assert (scheduler._time_attr, scheduler._max_t_attr, scheduler._eta) == ('training_iteration', 4, 3.0)
    assert isinstance(create_scheduler(_spec('bohb', 'bohb', reference=True), Budget('training_iteration', 1.0)),
                      ProtectReference)


def test_bohb_suggests_plain_values_of_the_space_after_the_reference_and_the_warm_start():
    warm = {LR: 0.004, 'rho': 2, MAX_EPOCHS_PATH: 3}
    searcher = _searcher(_spec('bohb', 'bohb', warm=[warm]), reference={LR: None, 'rho': None, MAX_EPOCHS_PATH: None})
    assert searcher.suggest('ref')[REFERENCE_KEY] is True
    assert searcher.suggest('t0') == warm
    for trial_id in ('t1', 't2', 't3'):
        config = searcher.suggest(trial_id)
        assert 1e-3 <= config[LR] <= 1e-1 and config['rho'] in (1, 2, 3) and 2 <= config[MAX_EPOCHS_PATH] <= 4
        assert all(type(v) in (int, float) for v in config.values()), config  # not numpy scalars


def test_bohb_hears_of_pauses_and_of_the_rung_on_which_hyperband_stops_a_trial(monkeypatch):
    """HyperBand pauses trials through Tune's search_alg.searcher (our reference wrapper) and sends BOHB the
    result it stops a trial on, which Tune itself withholds from searchers."""
    from ray.tune.schedulers import HyperBandForBOHB, TrialScheduler

    from search.model_based import RungReportingHyperBandForBOHB

    searcher = _searcher(_spec('bohb', 'bohb'), reference={LR: None, 'rho': None, MAX_EPOCHS_PATH: None})
    searcher.suggest('ref')
    searcher.suggest('t1')
    searcher.on_pause('t1')
    assert searcher.searcher.paused == {'t1'}
    searcher.on_unpause('t1')
    assert searcher.searcher.running == {'t1'}
    seen = []
    monkeypatch.setattr(searcher.searcher.bohber, 'new_result',
                        lambda job: seen.append((job.kwargs['budget'], job.result['loss'])))

    def closes_its_bracket(self, tune_controller, trial, result):  # HyperBandForBOHB's decision, faked
        result['hyperband_info'] = {'budget': 4}
        return TrialScheduler.STOP

    monkeypatch.setattr(HyperBandForBOHB, 'on_trial_result', closes_its_bracket)
    scheduler = RungReportingHyperBandForBOHB(time_attr='training_iteration', max_t=4, metric='bbox_mAP', mode='max')
    controller = SimpleNamespace(search_alg=SimpleNamespace(searcher=searcher))
    decision = scheduler.on_trial_result(controller, SimpleNamespace(trial_id='t1'),
                                         {'bbox_mAP': 0.25, 'training_iteration': 4})
    assert decision == TrialScheduler.STOP and seen == [(4, -0.25)]  # BOHB minimises the loss -bbox_mAP


# -- TPE learns from every rung ----------------------------------------------------------------------

def _report(searcher, trial_id, scores, last_told=True):
    """Tune's calls for a trial that reported ``scores`` once an epoch; the last result ends it (STOP or done).

    Tune sends the result it ends a trial on only with on_trial_complete, never to on_trial_result.
    """
    for epoch, score in enumerate(scores, 1):
        result = {'bbox_mAP': score, 'epoch': epoch, 'training_iteration': epoch}
        if epoch < len(scores) or not last_told:
            searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result=result)


def test_a_trial_asha_stopped_is_pruned_with_its_rung_scores_a_full_one_complete():
    from optuna.trial import TrialState

    searcher = _searcher(_spec())
    configs = {t: searcher.suggest(t) for t in ('full', 'stopped', 'first_rung', 'failed')}
    _report(searcher, 'full', [0.1, 0.2, 0.3, 0.4][:configs['full'][MAX_EPOCHS_PATH]])
    _report(searcher, 'stopped', [0.05, 0.07])
    _report(searcher, 'first_rung', [0.02])
    searcher.on_trial_result('failed', {'bbox_mAP': 0.01, 'epoch': 1, 'training_iteration': 1})
    searcher.on_trial_complete('failed', error=True)
    trials = {t.number: t for t in searcher._ot_study.trials}
    full, stopped, first_rung, failed = (trials[i] for i in range(4))
    budget = configs['full'][MAX_EPOCHS_PATH]
    assert full.state == TrialState.COMPLETE and full.value == pytest.approx(0.1 * budget)
    assert sorted(full.intermediate_values) == list(range(1, budget + 1))  # its last epoch too
    assert stopped.state == TrialState.PRUNED and stopped.intermediate_values == {1: 0.05, 2: 0.07}
    assert stopped.value == pytest.approx(0.07)  # the rung it was stopped on, which Tune sent only at the end
    assert first_rung.state == TrialState.PRUNED and first_rung.intermediate_values == {1: 0.02}
    assert failed.state == TrialState.FAIL


def test_tpe_learns_from_trials_all_stopped_at_their_first_rung():
    """ASHA stops every trial at its first rung (none completes): Tune sends that rung's result only with
    on_trial_complete, yet TPE must learn from it where the learning rate collapses."""
    import math
    import statistics

    def first_rung(lr):  # best at 1e-3, worse upwards, collapsed above 0.01 (as space=dbf does)
        return 0.0 if lr > 0.01 else 0.2 * (1 - math.log(lr / 1e-3) / math.log(10))

    searcher = _searcher(_spec(n_startup_trials=8))
    for i in range(24):
        _report(searcher, f't{i}', [first_rung(searcher.suggest(f't{i}')[LR])])
    next_lrs = [searcher.suggest(f'n{i}')[LR] for i in range(10)]
    # random draws of loguniform(1e-3, 0.1) have the median 0.01; TPE that learned nothing would too
    assert statistics.median(next_lrs) < 0.005, next_lrs


# -- warm start ------------------------------------------------------------------------------------

def _old_experiment(folder: Path, rows: list[dict], metric='bbox_mAP', mode='max') -> Path:
    """An experiment folder as export.py writes it (results.write_trials_csv, summary.json)."""
    from search.results import TrialRecord, write_trials_csv

    folder.mkdir(parents=True, exist_ok=True)
    records = [TrialRecord(trial_id=f'{i:08d}', status='completed', params=row['params'], epochs=2,
                           final=row['best'], best=row['best'], best_epoch=2, compute_seconds=1.0, total_seconds=2.0,
                           path=str(folder), reference=row.get('reference', False)) for i, row in enumerate(rows)]
    write_trials_csv(records, folder / 'trials.csv', metric)
    (folder / 'summary.json').write_text(json.dumps({'metric': metric, 'mode': mode}))
    return folder


def _point(lr, rho=2, epochs=3):
    return {LR: lr, 'rho': rho, MAX_EPOCHS_PATH: epochs}


def test_warm_start_takes_the_best_searched_configurations_best_first(tmp_path):
    from search.warm_start import best_points

    old = _old_experiment(tmp_path / 'old', [
        dict(params=_point(0.003), best=0.2), dict(params=_point(0.02, 1), best=0.0),
        dict(params=_point(0.005, 3, 4), best=0.3), dict(params=_point(0.05), best=0.9, reference=True),
        dict(params=_point(0.004), best=None)])
    assert best_points(old, PARAMS, 2) == [_point(0.005, 3, 4), _point(0.003)]
    points = best_points(old, PARAMS, 5)
    assert points[-1] == _point(0.02, 1) and len(points) == 3  # the reference and unscored trials are no candidates
    assert all(type(p['rho']) is int and type(p[MAX_EPOCHS_PATH]) is int for p in points)
    _old_experiment(tmp_path / 'min', [dict(params=_point(0.003), best=0.2), dict(params=_point(0.005), best=0.1)],
                    metric='loss', mode='min')
    assert best_points(tmp_path / 'min', PARAMS, 1) == [_point(0.005)]


@pytest.mark.parametrize('make, message', [
    (lambda d: d, 'is not a DynTune experiment folder'),
    (lambda d: _old_experiment(d, [dict(params=_point(0.003), best=0.2)]).joinpath('summary.json').write_text('{x')
     and d, 'does not parse'),
    (lambda d: _old_experiment(d, [dict(params={LR: 0.003, 'rho': 2}, best=0.2)]), f"no value for '{MAX_EPOCHS_PATH}'"),
    (lambda d: _old_experiment(d, [dict(params=_point(0.5), best=0.2)]), r'outside this search\'s range'),
    (lambda d: _old_experiment(d, [dict(params=_point(0.003, rho=7), best=0.2)]), r"not one of this search's choices"),
    (lambda d: _old_experiment(d, [dict(params=_point(0.003), best=None)]), 'no searched trial'),
])
def test_warm_start_from_what_is_no_good_experiment_is_a_usage_error(tmp_path, make, message):
    from search.warm_start import best_points

    folder = tmp_path / 'old'
    folder.mkdir()
    make(folder)
    with pytest.raises(UsageError, match=message):
        best_points(folder, PARAMS, 3)


def test_warm_start_points_come_first_after_the_reference(tmp_path):
    warm = [_point(0.005, 3, 4), _point(0.003)]
    searcher = _searcher(_spec(warm=warm), reference={LR: None, 'rho': None, MAX_EPOCHS_PATH: None})
    assert searcher.suggest('ref')[REFERENCE_KEY] is True
    assert [searcher.suggest('a'), searcher.suggest('b')] == warm
    assert searcher.suggest('c') not in warm


def test_a_missing_warm_start_is_one_line_exit_2(capsys, tmp_path):
    from search.run import main

    assert main([f'warm_start={tmp_path / "nowhere"}', 'smoke=true', 'dashboard=false']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'is not a DynTune experiment folder' in err[0], err


# -- real smoke searches -----------------------------------------------------------------------------

def _created(folder: Path) -> list[dict]:
    """The configs of an experiment's trials in the order Tune created them."""
    from search.results import trial_states

    return [state['config'] for state, _ in trial_states(folder)]


def _searched_rows(folder: Path) -> list[dict]:
    """The trials.csv rows of an experiment's searched trials (not its reference)."""
    import csv

    with open(folder / 'trials.csv', newline='') as handle:
        return [row for row in csv.DictReader(handle) if row['reference'] == 'False']


def _searcher_state(folder: Path) -> dict:
    """What the search algorithm saved with the experiment (Tune's searcher-state-*.pkl)."""
    import cloudpickle

    return cloudpickle.loads(next(folder.glob('searcher-state-*.pkl')).read_bytes())


@pytest.fixture(scope='module')
def model_based_searches(ray_session, tmp_path_factory):
    """TPE + cost-aware, schedule-aware ASHA beside the reference; then BOHB warm-started from it (3 trials: 2 warm
    points, 1 its own; no reference: ReferenceFirst around BOHB is a unit test above)."""
    from conftest import run_search_for_test

    tmp = tmp_path_factory.mktemp('model_based')
    tpe = run_search_for_test(['space=dbf', 'smoke=true', 'search_alg=optuna', 'scheduler=asha', 'budget=compute',
                               'experiment.name=tpe'], tmp)
    bohb = run_search_for_test(['space=dbf', 'smoke=true', 'search_alg=bohb', 'num_samples=3', 'reference=false',
                                f'warm_start={tmp / "tpe"}', 'experiment.name=bohb'], tmp)
    return tmp, tpe, bohb


@pytest.mark.slow  # two real smoke searches
def test_tpe_asha_search_tells_optuna_every_rung(model_based_searches):
    from optuna.trial import TrialState

    tmp, (spec, summary), _ = model_based_searches
    assert (spec.search_alg.name, spec.scheduler.name, spec.budget, spec.schedule_aware) == ('optuna', 'asha', 'compute', True)
    assert summary['num_trials'] == 2 and summary['num_failed'] == 0 and summary['best'] is not None
    study = _searcher_state(tmp / 'tpe')['_ot_study']
    rows = _searched_rows(tmp / 'tpe')
    assert len(study.trials) == len(rows) == 2  # the reference never reaches Optuna
    by_lr = {float(r['optimizer.lr']): r for r in rows}
    for trial in study.trials:
        row = by_lr[trial.params['optimizer.lr']]
        assert sorted(trial.intermediate_values) == list(range(1, int(row['epochs']) + 1))  # every epoch's result
        assert trial.value == pytest.approx(float(row['bbox_mAP_final']), abs=1e-6)
        assert trial.state == (TrialState.PRUNED if row['status'] == 'stopped' else TrialState.COMPLETE)


@pytest.mark.slow  # two real smoke searches
def test_bohb_search_starts_from_the_warm_start_and_its_model_sees_every_rung(model_based_searches):
    tmp, (_, tpe), (spec, summary) = model_based_searches
    assert (spec.search_alg.name, spec.scheduler.name) == ('bohb', 'bohb')  # search_alg=bohb picked its scheduler
    assert summary['num_trials'] == 3 and summary['num_failed'] == 0 and summary['best'] is not None
    created = [c for c in _created(tmp / 'bohb') if not c.get(REFERENCE_KEY)]
    warm = [dict(point) for point in spec.warm_start_points]
    assert len(warm) == 2 and [{k: c[k] for k in warm[0]} for c in created[:2]] == warm  # warm points run first
    assert warm[0] == tpe['best']['params']  # ... the earlier search's best first
    bohber = _searcher_state(tmp / 'bohb')['bohber']
    # every trial ran to HyperBand's last rung (2 epochs): BOHB's model holds all three, the bracket-closing one too
    assert {budget: len(losses) for budget, losses in bohber.losses.items()} == {2: 3}
