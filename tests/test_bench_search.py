"""The figures of bench/bench_search.py computed from a search's trial records (no training)."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'bench'))

from conftest import write_tune_experiment  # noqa: E402
from bench_search import (best_at, compute_curve, compute_on_hopeless, compute_to_reach, early_stopping_floor,  # noqa: E402
                          over_seeds)
from replay_search import replay  # noqa: E402


def _experiment(folder: Path, trials: dict[str, list[tuple[float, float]]]) -> Path:
    """A Tune experiment folder whose trials reported (time_total_s, bbox_mAP) once an epoch."""
    return write_tune_experiment(folder, {
        trial_id: [dict(epoch=epoch, time_total_s=seconds, bbox_mAP=score, timestamp=number * 1000 + epoch)
                   for epoch, (seconds, score) in enumerate(rows, 1)]
        for number, (trial_id, rows) in enumerate(trials.items())})


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


def test_floor_follows_the_order_tune_created_the_trials_not_their_random_ids(tmp_path):
    # Created first: 'f...' (collapsed, 20 s first epoch), then '0...' (reaches 0.1 at its first epoch).
    experiment = _experiment(tmp_path, {'ffff0000': [(20, 0.0), (40, 0.0)], '00001111': [(30, 0.1)]})
    assert early_stopping_floor(experiment, 0.1) == 20 + 30  # sorted ids would put the winner first: 30


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

    spec = build_spec(compose_config(['space=dbf', 'scheduler=asha', 'budget=compute', 'reference=false']),
                      dry_run=False)
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


def test_draws_are_indexed_by_tunes_creation_order_not_by_the_state_files_order_or_the_ids(tmp_path):
    from conftest import StoredTrial, write_tune_experiment
    from replay_search import draw_curves

    from search.results import trial_rows

    def drawn(number, rows):
        return StoredTrial(rows=rows, experiment_tag=f'{number}_optimizer.lr=0.01')

    row = dict(epoch=1, time_total_s=20.0, bbox_mAP=0.1)
    # Tune's state file lists trials in a set's order, and its ids are random hex: only the tag says the order
    write_tune_experiment(tmp_path, {'f3a9c2d1': drawn(3, [row]), '0b7e4a55': drawn(1, [row]), '8c21d0e7': drawn(2, []),
                                     '1d2e3f40': drawn(10, [row])})
    assert list(trial_rows(tmp_path)) == ['0b7e4a55', '8c21d0e7', 'f3a9c2d1', '1d2e3f40']
    curves = draw_curves({'random': trial_rows(tmp_path)})
    assert {index: [trial_id for trial_id, _ in runs] for index, runs in curves.items()} == {
        0: ['0b7e4a55'], 2: ['f3a9c2d1'], 3: ['1d2e3f40']}


def test_agreeing_epochs_compare_every_epoch_two_searches_share_of_a_draw():
    from replay_search import agreeing_epochs, draw_curves

    curves = draw_curves({'random': dict(_trials(r_00000=[0.1, 0.2, 0.3], r_00001=[0.0])),
                          'asha': dict(_trials(a_00000=[0.1, 0.25], a_00001=[0.0], a_00002=[0.4]))})
    assert agreeing_epochs(curves) == (2, 3)  # draw 0 differs at its second epoch; draw 2 ran once


# Several seeds (bench_search.py --seeds): model-based arms cannot be replayed, so they are repeated.


def test_best_at_equal_compute_is_the_best_so_far_within_that_compute():
    curve = [(10.0, None), (20.0, 0.1), (35.0, 0.1), (50.0, 0.3)]
    assert (best_at(curve, 5.0), best_at(curve, 20.0), best_at(curve, 49.0), best_at(curve, 60.0)) == (None, 0.1, 0.1, 0.3)


def test_over_seeds_gives_median_spread_and_whether_an_arm_matched_random_in_every_seed():
    def arm(fraction, best, floor=None):
        return dict(fraction_of_random_compute=fraction, best_at_equal_compute=best, early_stopping_floor_fraction=floor)

    arms = over_seeds({
        0: {'random': arm(1.0, 0.10, 0.3), 'tpe_asha': arm(0.2, 0.12), 'bohb': arm(None, 0.09)},
        1: {'random': arm(1.0, 0.11, 0.25), 'tpe_asha': arm(0.5, 0.11), 'bohb': arm(0.4, 0.2)},
        2: {'random': arm(1.0, 0.09, 0.4), 'tpe_asha': arm(0.3, 0.10), 'bohb': arm(0.1, 0.3)},
    })
    tpe, bohb = arms['tpe_asha'], arms['bohb']
    assert (tpe['fraction_median'], tpe['fraction_min'], tpe['fraction_max'], tpe['never']) == (0.3, 0.2, 0.5, 0)
    assert tpe['at_least_random_in_every_seed'] and tpe['best_at_equal_compute_median'] == 0.11
    # "never" ranks above every ratio: the median of (0.1, 0.4, never) is 0.4, the spread ends at never
    assert (bohb['fraction_median'], bohb['fraction_max'], bohb['never']) == (0.4, None, 1)
    assert not bohb['at_least_random_in_every_seed']  # seed 0: 0.09 < random's 0.10
    assert arms['random']['early_stopping_floor_fractions'] == [0.3, 0.25, 0.4]
