"""search/report.py: the HTML report of a real smoke search, a hand-built experiment folder, and the pure helpers."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from search.files import SPEC_FILE
from search.report import MIN_IMPORTANCE_TRIALS, main, param_importance, pareto_front, write_report
from search.results import TrialRecord, compute_timeline, load_records, write_trials_csv
from search.space import Distribution

from conftest import REPO, StoredTrial, write_tune_experiment

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _images(html_path: Path) -> list[Path]:
    """The files the report's <img> tags point at, resolved next to the HTML."""
    return [html_path.parent / src for src in re.findall(r'<img src="([^"]+)"', html_path.read_text())]


def _assert_pngs(paths):
    for path in paths:
        assert path.is_file(), path
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000, path


@pytest.fixture
def smoke_experiment(baseline_smoke_search):
    return baseline_smoke_search[2]


@pytest.mark.slow
def test_report_of_a_real_smoke_search(smoke_experiment):
    assert main([str(smoke_experiment)]) == 0
    html_path = smoke_experiment / 'report.html'
    page = html_path.read_text()
    images = _images(html_path)
    names = {p.name for p in images}
    assert {'learning_curves.png', 'best_vs_compute.png'} <= names
    _assert_pngs(images)
    trial_ids = [json.loads(line)['trial_id'] for line in
                 (p / 'result.json' for p in smoke_experiment.iterdir() if (p / 'result.json').is_file())
                 for line in line.read_text().splitlines()[:1]]
    assert len(trial_ids) == 3  # two searched trials and the reference
    for trial_id in trial_ids:
        assert trial_id in page
    # two searched trials are too few for an importance estimate: a note instead of a plot
    assert f'not estimated yet: importance needs at least {MIN_IMPORTANCE_TRIALS} finished trials' in page
    assert 'importance.png' not in names
    # rewriting the report replaces it rather than piling up plots
    write_report(smoke_experiment)
    assert sorted(p.name for p in (smoke_experiment / 'report').iterdir()) == sorted(names)


@pytest.fixture
def built_experiment(tmp_path):
    """A two-objective experiment with every component's metrics, a failure and enough trials for importance."""
    from dyncomponents.protocol import declared_components

    experiment = tmp_path / 'built'
    experiment.mkdir()
    (experiment / SPEC_FILE).write_text(yaml.safe_dump(dict(
        space='no_such_space', metric='bbox_mAP', mode='max', objectives=['bbox_mAP', 'compute_seconds'])))
    trials = {}
    for i, lr in enumerate([0.001, 0.003, 0.01, 0.002, 0.03]):
        rows = []
        for epoch in (1, 2, 3):
            rows.append(dict(epoch=epoch, bbox_mAP=lr * epoch, compute_seconds=10.0 * epoch * (i + 1),
                             timestamp=1000 + 10 * epoch + i, time_this_iter_s=12.0, dbf_trained=float(epoch % 2),
                             drcnn_iou_thr=0.4 + 0.01 * epoch, drcnn_beta=1.0 / epoch, drcnn_num_updates=epoch,
                             dyra_train_sf_mean=1.0 + 0.1 * i, dyra_train_sf_std=0.05,
                             dhead_gflops_avg=2.0, dhead_gflops_min=1.5, dhead_gflops_max=2.5, dhead_gflops_full=3.0))
        trials[f'aa_{i:05d}'] = StoredTrial(rows, config={'optimizer.lr': lr, 'seed_tag': 'x' * (i % 2)},
                                            components=declared_components())
    for i in range(5, MIN_IMPORTANCE_TRIALS):  # enough finished trials for importance, each dominated by aa_00000
        rows = [dict(epoch=1, bbox_mAP=0.0005 * i / MIN_IMPORTANCE_TRIALS, compute_seconds=100.0 * i, timestamp=1100 + i)]
        trials[f'aa_{i:05d}'] = StoredTrial(rows, config={'optimizer.lr': 0.0005 * i / MIN_IMPORTANCE_TRIALS,
                                                          'seed_tag': 'x' * (i % 2)})
    trials['aa_99999'] = StoredTrial([dict(epoch=1, bbox_mAP=0.001, compute_seconds=5.0, timestamp=1001)],
                                     status='ERROR', config={'optimizer.lr': 0.005, 'seed_tag': ''},
                                     error="RuntimeError: <script>alert('x')</script> out of memory")
    return write_tune_experiment(experiment, trials)


def test_report_draws_every_section_of_a_built_experiment(built_experiment):
    html_path = write_report(built_experiment)
    page = html_path.read_text()
    names = {p.name for p in _images(html_path)}
    # each component's declared plots, then its other reported metrics in one grid (Dynamic R-CNN's updates)
    assert names == {'learning_curves.png', 'best_vs_compute.png', 'pareto.png', 'importance.png',
                     'dbf_trained_timeline.png', 'drcnn_iou_thr_steps.png', 'dynamic_r_cnn_metrics.png',
                     'dyra_train_sf_mean_band.png', 'dhead_gflops_avg_band.png'}
    assert 'not the standard FCOS head' in page  # the dotted line is the gates-open routing tower
    _assert_pngs(_images(html_path))
    # the failure is listed with its reason, escaped: no user text becomes markup
    assert 'aa_99999' in page and 'out of memory' in page
    assert '<script>' not in page and '&lt;script&gt;' in page
    # the best lr (0.03) is the last trial; aa_00003 (lower mAP for more compute than aa_00002) is dominated,
    # and the failed trial's partial result is no trade-off
    assert 'best trial</th><td>aa_00004' in page
    front = re.search(r'Pareto-optimal: ([^.]*)\.', page).group(1).split(', ')
    assert front == ['aa_00000', 'aa_00001', 'aa_00002', 'aa_00004']


def test_trials_csv_has_a_column_per_declared_component_metric_and_cumulative_compute(built_experiment):
    import csv

    records = load_records(built_experiment, 'bbox_mAP', 'max')
    write_trials_csv(records, built_experiment / 'trials.csv', 'bbox_mAP')
    with open(built_experiment / 'trials.csv') as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0])
    # what the components declared, in their declaration order; Tune's bookkeeping is no component metric
    assert header[header.index('seed_tag') + 1:-1] == [
        'dbf_trained', 'dhead_gflops_avg', 'dhead_gflops_min', 'dhead_gflops_max', 'dhead_gflops_full',
        'drcnn_iou_thr', 'drcnn_beta', 'drcnn_num_updates', 'dyra_train_sf_mean', 'dyra_train_sf_std']
    assert 'timestamp' not in header and 'time_this_iter_s' not in header and 'train_seconds' not in header
    last = {r['trial_id']: r for r in rows}['aa_00001']
    assert float(last['compute_seconds']) == 60.0  # the trial's compute over its 3 epochs, not one epoch's
    # the failed trial declared nothing (it stored no component_metrics.json): empty cells, no error
    assert {r['trial_id']: r for r in rows}['aa_00009']['dbf_trained'] == ''


def test_pareto_front_on_hand_made_points():
    points = [(0.5, 10.0), (0.4, 5.0), (0.3, 8.0), (0.5, 10.0), (0.2, 1.0), (0.5, 12.0)]
    assert pareto_front(points, ['max', 'min']) == [True, True, False, True, True, False]
    assert pareto_front([(1, 1), (2, 2), (0, 3)], ['min', 'min']) == [True, False, True]
    assert pareto_front([(1, 1, 1), (1, 1, 0), (0, 2, 2)], ['max', 'max', 'max']) == [True, False, True]
    assert pareto_front([], ['max', 'min']) == []
    with pytest.raises(ValueError, match="'maximize'"):
        pareto_front([(1, 2)], ['maximize', 'min'])
    with pytest.raises(ValueError, match='needs 2 values'):
        pareto_front([(1, 2, 3)], ['max', 'min'])


def _record(trial_id, params, best, status='completed'):
    return TrialRecord(trial_id=trial_id, status=status, params=params, epochs=2, final=best, best=best, best_epoch=2,
                       compute_seconds=1.0, total_seconds=1.0, path='/nonexistent')


def _decided_by_lr(count):
    """``count`` finished trials whose score is their learning rate, with a second parameter that decides nothing."""
    return [_record(f'{i:05d}', {'lr': 0.001 * (i + 1), 'noise': (7 * i) % 3}, 0.001 * (i + 1)) for i in range(count)]


def test_importance_is_not_estimated_below_the_documented_number_of_finished_trials():
    unfinished = [_record('r', {'lr': 0.5, 'noise': 1}, 0.3, status='running'), _record('f', {'lr': 0.6, 'noise': 2},
                  0.4, status='failed'), _record('n', {'lr': 0.7, 'noise': 0}, None)]  # none of these counts
    importances, note = param_importance(_decided_by_lr(MIN_IMPORTANCE_TRIALS - 1) + unfinished, {}, 'max')
    assert importances is None
    assert note.startswith(f'not estimated yet: importance needs at least {MIN_IMPORTANCE_TRIALS} finished trials')
    assert f'has {MIN_IMPORTANCE_TRIALS - 1};' in note
    importances, note = param_importance(_decided_by_lr(MIN_IMPORTANCE_TRIALS) + unfinished, {}, 'max')
    assert note == '' and max(importances, key=importances.get) == 'lr'


def test_the_threshold_is_the_one_docs_report_md_documents():
    assert f'fewer than {MIN_IMPORTANCE_TRIALS} such trials' in (REPO / 'docs' / 'report.md').read_text()


def test_importance_is_skipped_when_nothing_varies_or_every_score_is_equal():
    constant = [_record(str(i), {'lr': 0.01, 'epochs': 2}, 0.1 * i) for i in range(MIN_IMPORTANCE_TRIALS)]
    importances, note = param_importance(constant, {}, 'max')
    assert importances is None and 'more than one value' in note
    same_score = [_record(str(i), {'lr': 0.01 * (i + 1)}, 0.0) for i in range(MIN_IMPORTANCE_TRIALS)]
    importances, note = param_importance(same_score, {}, 'max')
    assert importances is None and note.startswith('skipped: Optuna could not evaluate importance')


def test_importance_ranks_the_parameter_that_decides_the_score():
    draws = [(0.001, 3, 64), (0.01, 1, 96), (0.02, 2, 64), (0.03, 3, 96), (0.005, 2, 96), (0.015, 1, 64),
             (0.002, 1, 96), (0.04, 2, 64), (0.008, 3, 64), (0.025, 1, 96), (0.012, 2, 96), (0.05, 3, 64)]
    assert len(draws) >= MIN_IMPORTANCE_TRIALS
    records = [_record(str(i), {'lr': lr, 'noise': noise, 'scale': [s, s]}, 10 * lr)
               for i, (lr, noise, s) in enumerate(draws)]
    space = {'lr': Distribution('loguniform', (0.001, 0.1)), 'noise': Distribution('int', (1, 3)),
             'scale': Distribution('choice', ((64, 64), (96, 96), (128, 128)))}
    importances, note = param_importance(records, space, 'max')
    assert note == '' and set(importances) == {'lr', 'noise', 'scale'}
    assert max(importances, key=importances.get) == 'lr'
    assert sum(importances.values()) == pytest.approx(1.0)


def test_compute_timeline_merges_trials_in_report_order():
    rows = {'a': [dict(timestamp=1, compute_seconds=10.0, m=0.1), dict(timestamp=5, compute_seconds=25.0, m=0.3)],
            'b': [dict(timestamp=3, compute_seconds=4.0, m=0.2), dict(timestamp=7, compute_seconds=2.0, m=0.05)]}
    # b's compute going down (restored from an earlier checkpoint) adds nothing
    assert compute_timeline(rows, 'm', 'max') == [(10.0, 0.1), (14.0, 0.2), (29.0, 0.3), (29.0, 0.3)]
    assert compute_timeline(rows, 'm', 'min') == [(10.0, 0.1), (14.0, 0.1), (29.0, 0.1), (29.0, 0.05)]


def test_the_folder_commands_load_without_mmcv_torch_or_ray():
    # search/report.py and search/export.py first check the folder: a wrong path must not wait for those imports.
    code = ('import sys, search.report, search.results, search.export; '
            'print(sorted({m.split(".")[0] for m in sys.modules} & {"mmcv", "mmdet", "torch", "ray"}))')
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == '[]'


def test_cli_rejects_a_folder_that_is_not_an_experiment(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / 'search' / 'report.py'), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f'report: error: {tmp_path} is not a DynTune experiment folder '
                                                f'(no {SPEC_FILE})']
    assert not (tmp_path / 'report.html').exists()
    assert main([str(tmp_path / 'missing')]) == 2
