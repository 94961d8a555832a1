"""search/run.py as a user runs it: bad input is one line on stderr, exit code 2, nothing written."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / 'search' / 'run.py'), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize('args, message', [
    (['space=nope'], "unknown space 'nope': choose one of"),
    (['scheduler=nope'], "unknown scheduler 'nope': choose one of"),
    (['search_alg=nope'], "unknown search_alg 'nope'"),
    (['model=nope'], "unknown model 'nope': choose one of faster_rcnn, fcos, retinanet"),
    (['num_samples=0'], 'num_samples must be a whole number >= 1'),
    (['max_epochs=-2'], 'max_epochs must be a whole number >= 1'),
    (['train.lr=-1'], 'lr must be a number > 0'),
    (['data=coco'], 'missing value'),
    (['data=coco', 'data.root=/no/such/folder'], 'dataset folder /no/such/folder does not exist'),
    (['gpus_per_trial=1'], 'has no usable GPU'),
    (['not_a_key=1'], "Could not override 'not_a_key'"),
    (['smoke'], "'smoke' is not an override"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path):
    result = run_cli(*args, f'experiment.dir={tmp_path}')
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith('dyntune: error:')]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_experiment_needs_resume(tmp_path):
    (tmp_path / 'taken').mkdir()
    result = run_cli('experiment.name=taken', f'experiment.dir={tmp_path}', 'smoke=true')
    assert result.returncode == 2 and 'already exists: add resume=true' in result.stderr


def test_print_config_shows_the_space_overrides():
    result = run_cli('--cfg', 'space=baseline', 'model=fcos')
    assert result.returncode == 0 and 'type: FCOS' in result.stdout
