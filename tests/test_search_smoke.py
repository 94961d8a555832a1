"""A real search through Ray Tune, end to end: files, metrics, export, applied parameters."""
import json

import pytest
import yaml

from conftest import run_search_for_test

REPORTED = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'train_seconds', 'images_per_second', 'peak_memory_mb',
            'epoch', 'compute_seconds')


def _rows(trial_dir):
    return [json.loads(line) for line in (trial_dir / 'result.json').read_text().splitlines()]


@pytest.fixture(scope='module')
def smoke_experiment(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('smoke')
    spec, summary = run_search_for_test(['space=baseline', 'smoke=true', 'experiment.name=smoke'], tmp)
    return spec, summary, tmp / 'smoke'


def test_summary_and_trials_csv(smoke_experiment):
    spec, summary, folder = smoke_experiment
    assert {'space', 'metric', 'mode', 'num_trials', 'best', 'wall_seconds', 'trial_seconds_sum'} <= set(summary)
    assert summary['space'] == 'baseline' and summary['num_trials'] == 2 and summary['num_failed'] == 0
    assert set(summary['best']) == {'trial_id', 'params', 'bbox_mAP', 'epoch'}
    assert json.loads((folder / 'summary.json').read_text()) == json.loads(json.dumps(summary, default=str))
    assert (folder / 'report.html').is_file()  # every search ends with its report
    lines = (folder / 'trials.csv').read_text().splitlines()
    assert lines[0].startswith('trial_id,status,epochs,bbox_mAP_final,bbox_mAP_best')
    statuses = [line.split(',')[1] for line in lines[1:]]
    assert len(statuses) == 2 and 'completed' in statuses and set(statuses) <= {'completed', 'stopped'}
    # ASHA may stop the worse trial at its first rung; the better one reaches the full budget.
    assert any(',completed,2,' in line for line in lines[1:])


def test_every_epoch_reports_the_metrics_with_a_checkpoint(smoke_experiment):
    _, _, folder = smoke_experiment
    trial_dirs = [p for p in folder.iterdir() if (p / 'result.json').is_file()]
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        rows = _rows(trial_dir)
        assert [r['epoch'] for r in rows] == list(range(1, len(rows) + 1))
        for row in rows:
            assert set(REPORTED) <= set(row)
            assert row['train_seconds'] > 0 and row['images_per_second'] > 0 and row['peak_memory_mb'] > 100
            assert row['checkpoint_dir_name']
        assert rows[-1]['compute_seconds'] == pytest.approx(sum(r['train_seconds'] for r in rows))


def test_each_sampled_parameter_is_in_the_config_the_trial_trained_with(smoke_experiment):
    from mmcv import Config

    from search.mmdet_config import get_path

    _, _, folder = smoke_experiment
    checked = 0
    for trial_dir in folder.iterdir():
        if not (trial_dir / 'params.json').is_file():
            continue
        params = json.loads((trial_dir / 'params.json').read_text())
        trained = Config.fromfile(str(trial_dir / 'trial_config.py'))._cfg_dict.to_dict()
        for path, value in params.items():
            assert get_path(trained, path) == value
            checked += 1
    assert checked == 2


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
    """One epoch on the real BCCD blood-cell dataset learns something (bbox_mAP_50 > 0)."""
    root = shared_dataset('bccd')
    _, summary = run_search_for_test(
        ['space=baseline', f'data=coco', f'data.root={root}', 'num_samples=1', 'max_epochs=1', 'scheduler=fifo',
         'train.warmup_iters=20', 'experiment.name=bccd'], tmp_path)
    rows = _rows(next(p for p in (tmp_path / 'bccd').iterdir() if (p / 'result.json').is_file()))
    assert rows[-1]['bbox_mAP_50'] > 0, rows[-1]
    assert summary['num_failed'] == 0
