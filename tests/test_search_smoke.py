"""A real search through Ray Tune, end to end: files, metrics, export, applied parameters."""
import csv
import json

import pytest
import yaml

from conftest import run_search_for_test

REPORTED = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'train_seconds', 'images_per_second', 'peak_memory_mb',
            'epoch', 'compute_seconds')


def _rows(trial_dir):
    return [json.loads(line) for line in (trial_dir / 'result.json').read_text().splitlines()]


@pytest.fixture
def smoke_experiment(baseline_smoke_search):
    return baseline_smoke_search


@pytest.mark.slow  # reads a real smoke search
def test_summary_and_trials_csv(smoke_experiment):
    spec, summary, folder = smoke_experiment
    assert {'space', 'metric', 'mode', 'num_trials', 'best', 'wall_seconds', 'compute_seconds_sum'} <= set(summary)
    assert summary['space'] == 'baseline' and summary['num_trials'] == 2 and summary['num_failed'] == 0
    assert set(summary['best']) == {'trial_id', 'params', 'bbox_mAP', 'epoch'}
    assert json.loads((folder / 'summary.json').read_text()) == json.loads(json.dumps(summary, default=str))
    assert (folder / 'report.html').is_file()  # every search ends with its report
    lines = (folder / 'trials.csv').read_text().splitlines()
    assert lines[0].startswith('trial_id,status,epochs,bbox_mAP_final,bbox_mAP_best,best_epoch,compute_seconds,')
    with open(folder / 'trials.csv') as handle:
        rows = list(csv.DictReader(handle))
    searched = [row for row in rows if row['reference'] == 'False']
    statuses = [row['status'] for row in searched]
    assert len(statuses) == 2 and 'completed' in statuses and set(statuses) <= {'completed', 'stopped'}
    # ASHA may stop the worse trial at its first rung; the better one reaches the full budget.
    assert any(row['status'] == 'completed' and row['epochs'] == '2' for row in searched)
    # the reference trial: the preset as it is, at the full budget, never stopped early, not a candidate
    reference, = [row for row in rows if row['reference'] == 'True']
    assert (reference['status'], reference['epochs']) == ('completed', '2')
    assert summary['reference']['trial_id'] == reference['trial_id'] != summary['best']['trial_id']
    assert summary['gain']['validation'] == pytest.approx(summary['best']['bbox_mAP'] - summary['reference']['bbox_mAP'])


@pytest.mark.slow  # reads a real smoke search
def test_every_epoch_reports_the_metrics_with_a_checkpoint(smoke_experiment):
    _, _, folder = smoke_experiment
    trial_dirs = [p for p in folder.iterdir() if (p / 'result.json').is_file()]
    assert len(trial_dirs) == 3  # two searched trials and the reference
    with open(folder / 'trials.csv') as handle:
        csv_rows = {row['trial_id']: row for row in csv.DictReader(handle)}
    for trial_dir in trial_dirs:
        rows = _rows(trial_dir)
        assert trial_dir.name == f'trial_{rows[0]["trial_id"]}'  # short names, not Ray's 200-character default
        assert [r['epoch'] for r in rows] == list(range(1, len(rows) + 1))
        for row in rows:
            assert set(REPORTED) <= set(row)
            assert row['train_seconds'] > 0 and row['images_per_second'] > 0 and row['peak_memory_mb'] > 100
            assert row['checkpoint_dir_name']
        assert rows[-1]['compute_seconds'] == pytest.approx(sum(r['train_seconds'] for r in rows))
        # trials.csv's compute_seconds is the trial's cumulative compute, the reported metric of that name
        assert float(csv_rows[rows[-1]['trial_id']]['compute_seconds']) == pytest.approx(rows[-1]['compute_seconds'],
                                                                                       abs=0.01)


@pytest.mark.slow  # reads a real smoke search
def test_each_sampled_parameter_is_in_the_config_the_trial_trained_with(smoke_experiment):
    from mmcv import Config

    from search.mmdet_config import get_path

    _, _, folder = smoke_experiment
    checked = 0
    for trial_dir in folder.iterdir():
        if not (trial_dir / 'params.json').is_file():
            continue
        params = json.loads((trial_dir / 'params.json').read_text())
        if params.get('dyntune_reference'):
            continue  # the reference trains the base config, not sampled values
        trained = Config.fromfile(str(trial_dir / 'trial_config.py'))._cfg_dict.to_dict()
        for path, value in params.items():
            assert get_path(trained, path) == value
            checked += 1
    assert checked == 2


@pytest.mark.slow  # reads a real smoke search
def test_best_export_builds_a_detector(smoke_experiment):
    import torch
    from mmcv import Config
    from mmdet.models import build_detector

    spec, summary, folder = smoke_experiment
    best = folder / 'best'
    cfg = Config.fromfile(str(best / 'best_config.py'))
    assert cfg.custom_imports == dict(imports=['dyncomponents'], allow_failed_imports=False)
    model = build_detector(cfg.model)
    state = torch.load(best / 'best.pth', map_location='cpu', weights_only=True)
    assert state['meta']['epoch'] == summary['best']['epoch']
    model.load_state_dict(state['state_dict'])
    params = yaml.safe_load((best / 'best_params.yaml').read_text())
    assert params == summary['best']['params']
    assert (best / 'best_params.yaml').read_text().startswith(f"# trial {summary['best']['trial_id']}")


@pytest.mark.slow
def test_real_dataset_one_short_epoch(ray_session, shared_dataset, tmp_path):
    """One epoch on 50 images of the real BCCD blood-cell dataset learns something (bbox_mAP_50 > 0).

    (0.15 when this was written; the whole 205-image split took three times as long for the same point.)
    """
    from search.data.subset import write_subset

    root = write_subset(shared_dataset('bccd'), tmp_path / 'bccd50', {'train': 50, 'val': 20})
    _, summary = run_search_for_test(
        ['space=baseline', 'data=coco', f'data.root={root}', 'num_samples=1', 'max_epochs=1', 'scheduler=fifo',
         'reference=false', 'train.warmup_iters=20', 'experiment.name=bccd'], tmp_path)
    rows = _rows(next(p for p in (tmp_path / 'bccd').iterdir() if (p / 'result.json').is_file()))
    assert rows[-1]['bbox_mAP_50'] > 0, rows[-1]
    assert summary['num_failed'] == 0
