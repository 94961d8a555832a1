"""The exported best_config.py trains with MMDetection's own tools/train.py, outside DynTune's code."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # every test here reads a real smoke search


def search_only_hooks() -> list[str]:
    """The names of the mmcv hooks that the search's own modules register (search.hooks and any other).

    Read from mmcv's HOOKS registry by the module that defines each class, so a hook the search adds
    later is forbidden in the export without an edit here; the components' hooks (dyncomponents) are not.
    """
    from mmcv.runner import HOOKS

    import search.hooks  # noqa: F401  (registers them)

    return sorted(name for name, cls in HOOKS.module_dict.items() if cls.__module__.split('.')[0] == 'search')


@pytest.fixture
def best_export(baseline_smoke_search):
    _, summary, folder = baseline_smoke_search
    assert summary['num_failed'] == 0
    return folder / 'best'


def test_best_config_carries_no_search_only_hooks(best_export):
    text = (best_export / 'best_config.py').read_text()
    assert "custom_imports = dict(imports=['dyncomponents'], allow_failed_imports=False)" in text
    forbidden = search_only_hooks()
    assert {'TuneReportHook', 'EpochCostHook', 'TrialTensorboardHook'} <= set(forbidden)  # the registry was read
    for hook in forbidden:
        assert hook not in text, hook
    assert 'DynamicBackboneFreezingHook' not in forbidden  # a component's hook belongs in the export


def test_trial_writes_tensorboard_logs(best_export):
    """Each trial's mmdet run logs losses and evaluation for TensorBoard in <trial>/mmdet/tf_logs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = list(best_export.parent.glob('*/mmdet/tf_logs'))  # one per trial folder
    assert len(logs) == 3  # two searched trials and the reference
    for log_dir in logs:  # an early-stopped trial too: its logs are flushed before Tune ends it
        events = EventAccumulator(str(log_dir)).Reload()
        tags = set(events.Tags()['scalars'])
        assert {'train/loss', 'learning_rate'} <= tags, log_dir
        rows = [json.loads(line) for line in (log_dir.parents[1] / 'result.json').read_text().splitlines()]
        assert len(events.Scalars('train/loss')) >= len(rows)  # each epoch's last iterations are logged
        # mmdet logs no evaluation when a model predicts nothing yet; Tune then gets bbox_mAP 0.0.
        logged = [round(e.value, 4) for e in events.Scalars('val/bbox_mAP')] if 'val/bbox_mAP' in tags else []
        assert logged == [round(r['bbox_mAP'], 4) for r in rows if r['bbox_mAP'] > 0]  # the last epoch's too


def test_mmdet_tools_train_trains_the_exported_config(best_export, tmp_path):
    import mmdet

    train_py = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
    if not train_py.is_file():
        pytest.skip(f'this mmdet install ships no {train_py}')
    work_dir = tmp_path / 'work'
    # The repository on PYTHONPATH is what "installed" means for custom_imports=['dyncomponents'].
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, str(train_py), str(best_export / 'best_config.py'), '--work-dir', str(work_dir),
         '--cfg-options', 'runner.max_epochs=1', 'data.workers_per_gpu=0', 'log_config.interval=1',
         'evaluation.interval=1'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file() and checkpoint.stat().st_size > 100_000
    log = next(work_dir.glob('*.log')).read_text()
    # It evaluated with mmdet's CocoDataset metric too (after one tiny epoch the model may predict
    # nothing yet, and then mmdet logs the evaluation without a bbox_mAP).
    assert 'Epoch(val) [1]' in log
