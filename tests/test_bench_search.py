"""The figures of bench/bench_search.py computed from a search's trial records (no training)."""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'bench'))

from bench_search import compute_curve, compute_on_hopeless, compute_to_reach, early_stopping_floor  # noqa: E402
from replay_search import replay  # noqa: E402


def _experiment(folder: Path, trials: dict[str, list[tuple[float, float]]]) -> Path:
    """A Tune experiment folder whose trials reported (time_total_s, bbox_mAP) once an epoch."""
    states = []
    for number, (trial_id, rows) in enumerate(trials.items()):
        (folder / trial_id).mkdir(parents=True)
        (folder / trial_id / 'result.json').write_text(''.join(
            json.dumps(dict(epoch=epoch, time_total_s=seconds, bbox_mAP=score, timestamp=number * 1000 + epoch)) + '\n'
            for epoch, (seconds, score) in enumerate(rows, 1)))
        states.append([json.dumps(dict(trial_id=trial_id, status='TERMINATED', relative_logdir=trial_id, config={})),
                       json.dumps({})])
    (folder / 'experiment_state-2026-12-01_12-00-00.json').write_text(json.dumps({'trial_data': states}))
    return folder


def test_floor_pays_one_epoch_of_every_earlier_draw_and_the_winner_until_it_reaches_the_target(tmp_path):
    experiment = _experiment(tmp_path, {
        'a_00000': [(20, 0.0), (40, 0.0), (60, 0.0)],
        'a_00001': [(25, 0.01), (50, 0.05), (75, 0.08)],  # reaches 0.08 at its third epoch
        'a_00002': [(30, 0.02), (60, 0.03)],
    })
    assert early_stopping_floor(experiment, 0.08) == 20 + 75
    assert early_stopping_floor(experiment, 0.5) is None
    random_needs = compute_to_reach(compute_curve(experiment), 0.08)
    assert random_needs == 60 + 75  # random search trained the first draw to its end


def test_floor_is_the_cheapest_winner_not_the_first(tmp_path):
    # The first draw to reach 0.1 needs 6 epochs; a later one reaches it at its first.
    experiment = _experiment(tmp_path, {
        'b_00000': [(20 * e, 0.02 * e) for e in range(1, 7)],
        'b_00001': [(20, 0.0), (40, 0.0)],
        'b_00002': [(20, 0.1)],
    })
    assert early_stopping_floor(experiment, 0.1) == 20 + 20 + 20


def test_compute_on_hopeless_counts_only_what_never_learned_after_its_first_report(tmp_path):
    experiment = _experiment(tmp_path, {
        'c_00000': [(20, 0.0), (45, 0.001), (70, 0.0)],  # collapsed: 50 s after its first report
        'c_00001': [(20, 0.0), (40, 0.02)],              # learned: not counted
        'c_00002': [(25, 0.0)],                          # stopped at its first report: nothing to save
    })
    assert compute_on_hopeless(experiment) == 50


# bench/replay_search.py: recorded results through Ray's real schedulers.


def _trials(**curves: list[float]) -> list[tuple[str, list[dict]]]:
    """Trials in draw order whose epochs each cost 20 s, with these bbox_mAP after each epoch."""
    return [(trial_id, [dict(epoch=e, training_iteration=e, time_total_s=20.0 * e, bbox_mAP=score)
                        for e, score in enumerate(scores, 1)])
            for trial_id, scores in curves.items()]


def _asha():
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr='training_iteration', metric='bbox_mAP', mode='max', max_t=3, grace_period=1,
                         reduction_factor=2)


def test_replay_of_fifo_pays_every_earlier_trial_in_full():
    from ray.tune.schedulers import FIFOScheduler

    trials = _trials(t0=[0.05, 0.06, 0.07], t1=[0.0, 0.0, 0.0], t2=[0.02, 0.1, 0.1])
    assert replay(FIFOScheduler(), trials, target=0.1, concurrency=1) == 60 + 60 + 40
    assert replay(FIFOScheduler(), trials, target=0.5, concurrency=1) is None


def test_replay_honours_asha_stops():
    # t1 scores below t0's first epoch at the first rung: ASHA stops it there, so it costs one epoch.
    trials = _trials(t0=[0.05, 0.06, 0.07], t1=[0.0, 0.0, 0.0], t2=[0.06, 0.1, 0.1])
    assert replay(_asha(), trials, target=0.1, concurrency=1) == 60 + 20 + 40


def test_replay_feeds_concurrent_trials_in_clock_order():
    # Side by side, the fast trial reaches the target at 20 s, before the slow one has reported.
    slow = ('slow', [dict(epoch=1, training_iteration=1, time_total_s=50.0, bbox_mAP=0.0)])
    fast = ('fast', [dict(epoch=e, training_iteration=e, time_total_s=10.0 * e, bbox_mAP=0.05 * e) for e in (1, 2)])
    assert replay(_asha(), [slow, fast], target=0.1, concurrency=2) == 20
    assert replay(_asha(), [slow, fast], target=0.1, concurrency=1) == 50 + 20


def test_replayed_schedulers_are_the_ones_run_py_builds():
    from ray.tune.schedulers import ASHAScheduler

    from replay_search import scheduler_factory
    from search.config import compose_config
    from search.schedule_aware import ScheduleAwareScheduler
    from search.spec import build_spec

    spec = build_spec(compose_config(['space=dbf', 'scheduler=asha', 'budget=compute']), dry_run=False)
    scheduler = scheduler_factory(spec, epoch_seconds=12.0)()
    assert isinstance(scheduler, ScheduleAwareScheduler) and isinstance(scheduler.base, ASHAScheduler)
    first_rung = min(milestone for milestone, _ in scheduler.base._brackets[0]._rungs)
    assert scheduler.base._time_attr == 'compute_seconds' and first_rung == 12.0  # one probed epoch
    assert scheduler.metric == 'bbox_mAP'


def test_first_report_ranks_place_each_winner_among_all_first_reports():
    from replay_search import first_report_ranks

    trials = _trials(t0=[0.05, 0.06], t1=[0.0, 0.2], t2=[0.03, 0.1], t3=[0.03])
    assert first_report_ranks(trials, target=0.1) == [2, 4]  # t2 ties t3 for 2nd; t1 is last


def test_quartiles_rank_never_reached_above_every_ratio():
    from replay_search import quartiles

    assert quartiles([0.5, None, 0.2, 0.9, None]) == (0.5, 0.9, float('inf'))


def test_complete_draws_take_each_draw_from_a_search_that_finished_it_and_stop_at_the_first_gap(tmp_path):
    from replay_search import complete_draws, draw_curves

    def rows(epochs, budget):
        return [dict(epoch=e, time_total_s=20.0 * e, bbox_mAP=0.01 * e, config={'runner.max_epochs': budget})
                for e in range(1, epochs + 1)]

    # Random search's budget cut draw 1 short; ASHA finished it, stopped draw 2 early and finished draw 3.
    curves = draw_curves({'random': {'r_00000': rows(3, 3), 'r_00001': rows(1, 4)},
                          'asha': {'a_00000': rows(1, 3), 'a_00001': rows(4, 4), 'a_00002': rows(1, 2),
                                   'a_00003': rows(2, 2)}})
    pool = complete_draws(curves, default_epochs=6)
    assert [(trial_id, len(results)) for trial_id, results in pool] == [('r_00000', 3), ('a_00001', 4)]


def test_agreeing_epochs_compare_every_epoch_two_searches_share_of_a_draw():
    from replay_search import agreeing_epochs, draw_curves

    curves = draw_curves({'random': dict(_trials(r_00000=[0.1, 0.2, 0.3], r_00001=[0.0])),
                          'asha': dict(_trials(a_00000=[0.1, 0.25], a_00001=[0.0], a_00002=[0.4]))})
    assert agreeing_epochs(curves) == (2, 3)  # draw 0 differs at its second epoch; draw 2 ran once
