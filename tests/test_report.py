"""search/report.py: the HTML report of a real smoke search, a hand-built experiment folder, and the pure helpers."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from search.report import (SPEC_FILE, compute_timeline, main, param_importance, pareto_front, write_report)
from search.results import TrialRecord
from search.space import Distribution

from conftest import REPO, run_search_for_test

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _images(html_path: Path) -> list[Path]:
    """The files the report's <img> tags point at, resolved next to the HTML."""
    return [html_path.parent / src for src in re.findall(r'<img src="([^"]+)"', html_path.read_text())]


def _assert_pngs(paths):
    for path in paths:
        assert path.is_file(), path
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000, path


@pytest.fixture(scope='module')
def smoke_experiment(ray_session, tmp_path_factory):
    spec, _ = run_search_for_test(['space=baseline', 'smoke=true', 'experiment.name=rep'],
                                  tmp_path_factory.mktemp('report'))
    return spec.experiment_path


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
    assert len(trial_ids) == 2
    for trial_id in trial_ids:
        assert trial_id in page
    # two trials are too few for an importance estimate: a note instead of a plot
    assert 'needs at least 3 finished trials' in page and 'importance.png' not in names
    # rewriting the report replaces it rather than piling up plots
    write_report(smoke_experiment)
    assert sorted(p.name for p in (smoke_experiment / 'report').iterdir()) == sorted(names)


def _trial(experiment: Path, trial_id: str, params: dict, rows: list[dict], status='TERMINATED', error=None):
    folder = experiment / f'train_trial_{trial_id}'
    folder.mkdir()
    (folder / 'result.json').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    if error:
        (folder / 'error.txt').write_text(f'Traceback (most recent call last):\n{error}\n')
    state = dict(trial_id=trial_id, status=status, relative_logdir=folder.name, config=params)
    return [json.dumps(state), json.dumps({'error_filename': 'error.txt' if error else None})]


@pytest.fixture
def built_experiment(tmp_path):
    """A two-objective experiment with every component's metrics, a failure and enough trials for importance."""
    experiment = tmp_path / 'built'
    experiment.mkdir()
    (experiment / SPEC_FILE).write_text(yaml.safe_dump(dict(
        space='no_such_space', metric='bbox_mAP', mode='max', objectives=['bbox_mAP', 'compute_seconds'])))
    trial_data = []
    for i, lr in enumerate([0.001, 0.003, 0.01, 0.002, 0.03]):
        rows = []
        for epoch in (1, 2, 3):
            rows.append(dict(epoch=epoch, bbox_mAP=lr * epoch, compute_seconds=10.0 * epoch * (i + 1),
                             timestamp=1000 + 10 * epoch + i, dbf_trained=float(epoch % 2),
                             drcnn_iou_thr=0.4 + 0.01 * epoch, drcnn_beta=1.0 / epoch,
                             dyra_train_sf_mean=1.0 + 0.1 * i, dyra_train_sf_std=0.05,
                             dyra_train_sf=[0.9, 1.0, 1.1 + 0.1 * epoch],
                             dhead_gflops_avg=2.0, dhead_gflops_min=1.5, dhead_gflops_max=2.5, dhead_gflops_full=3.0))
        trial_data.append(_trial(experiment, f'aa_{i:05d}', {'optimizer.lr': lr, 'seed_tag': 'x' * (i % 2)}, rows))
    trial_data.append(_trial(experiment, 'aa_00009', {'optimizer.lr': 0.005, 'seed_tag': ''},
                             [dict(epoch=1, bbox_mAP=0.001, compute_seconds=5.0, timestamp=1001)], status='ERROR',
                             error="RuntimeError: <script>alert('x')</script> out of memory"))
    (experiment / 'experiment_state-2026.json').write_text(json.dumps({'trial_data': trial_data}))
    return experiment


def test_report_draws_every_section_of_a_built_experiment(built_experiment):
    html_path = write_report(built_experiment)
    page = html_path.read_text()
    names = {p.name for p in _images(html_path)}
    assert names == {'learning_curves.png', 'best_vs_compute.png', 'pareto.png', 'importance.png', 'dbf_timeline.png',
                     'drcnn_metrics.png', 'dyra_train_scale_factor.png',
                     'dyra_train_sf_histogram.png', 'dhead_gflops.png'}
    _assert_pngs(_images(html_path))
    # the failure is listed with its reason, escaped: no user text becomes markup
    assert 'aa_00009' in page and 'out of memory' in page
    assert '<script>' not in page and '&lt;script&gt;' in page
    # the best lr (0.03) is the last trial; aa_00003 (lower mAP for more compute than aa_00002) is dominated,
    # and the failed trial's partial result is no trade-off
    assert 'best trial</th><td>aa_00004' in page
    front = re.search(r'Pareto-optimal: ([^.]*)\.', page).group(1).split(', ')
    assert front == ['aa_00000', 'aa_00001', 'aa_00002', 'aa_00004']


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
                       train_seconds=1.0, total_seconds=1.0, path='/nonexistent')


def test_importance_is_skipped_with_too_few_trials_or_nothing_varying():
    two = [_record('a', {'lr': 0.01}, 0.1), _record('b', {'lr': 0.02}, 0.2), _record('c', {'lr': 0.03}, None),
           _record('d', {'lr': 0.04}, 0.3, status='failed')]
    importances, note = param_importance(two, {}, 'max')
    assert importances is None and 'at least 3' in note and 'has 2' in note
    constant = [_record(str(i), {'lr': 0.01, 'epochs': 2}, 0.1 * i) for i in range(4)]
    importances, note = param_importance(constant, {}, 'max')
    assert importances is None and 'more than one value' in note
    same_score = [_record(str(i), {'lr': 0.01 * (i + 1)}, 0.0) for i in range(4)]
    importances, note = param_importance(same_score, {}, 'max')
    assert importances is None and note.startswith('skipped: Optuna could not evaluate importance')


def test_importance_ranks_the_parameter_that_decides_the_score():
    records = [_record(str(i), {'lr': lr, 'noise': noise, 'scale': [s, s]}, 10 * lr)
               for i, (lr, noise, s) in enumerate([(0.001, 3, 64), (0.01, 1, 96), (0.02, 2, 64), (0.03, 3, 96),
                                                    (0.005, 2, 96), (0.015, 1, 64)])]
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
