"""search/run.py as a user runs it: bad input is one line on stderr, exit code 2, nothing written.

Most cases call ``search.run.main`` in this process (a new interpreter importing torch, mmdet and Ray
costs about 12 s on a loaded 2-core machine); test_print_config and tests/test_endings.py run the
script itself, where import warnings could precede the error line.
"""
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
    (['base=nope'], "unknown base 'nope': choose one of faster_rcnn, fcos, retinanet"),
    (['num_samples=0'], 'num_samples must be a whole number >= 1'),
    (['max_epochs=-2'], 'max_epochs must be a whole number >= 1'),
    (['train.lr=-1'], 'lr must be a number > 0'),
    (['data=coco'], 'missing value'),
    (['data=coco', 'data.root=/no/such/folder'], 'dataset folder /no/such/folder does not exist'),
    (['gpus_per_trial=1'], 'has no usable GPU'),
    (['not_a_key=1'], "Could not override 'not_a_key'"),
    (['smoke'], "'smoke' is not an override"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, capsys):
    from search.run import main

    assert main([*args, f'experiment.dir={tmp_path}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('dyntune: error:') and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_existing_experiment_needs_resume(tmp_path, capsys):
    from search.run import main

    (tmp_path / 'taken').mkdir()
    assert main(['experiment.name=taken', f'experiment.dir={tmp_path}', 'smoke=true']) == 2
    assert 'already exists: add resume=true' in capsys.readouterr().err


def test_print_config_shows_the_space_overrides():
    result = run_cli('--cfg', 'space=dynamic_rcnn')
    assert result.returncode == 0 and 'base: faster_rcnn' in result.stdout
    result = run_cli('--cfg', 'space=dynamic_rcnn', 'base=fcos', 'cfg.model.neck.out_channels=32')
    assert 'base: fcos' in result.stdout and 'model.neck.out_channels: 32' in result.stdout
