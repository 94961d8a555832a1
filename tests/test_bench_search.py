"""The figures of bench/bench_search.py computed from a search's trial records (no training)."""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'bench'))

from bench_search import compute_curve, compute_on_hopeless, compute_to_reach, early_stopping_floor  # noqa: E402


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
