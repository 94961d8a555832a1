"""A killed search resumes without losing or re-running anything; failing trials do not stop a search."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import StoredTrial, run_search_for_test, write_tune_experiment

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
SMALL = ['space=baseline', 'scheduler=fifo', 'num_samples=2', f'max_epochs={EPOCHS}', 'max_concurrent_trials=1',
         'data.num_train=24', 'data.num_val=6', 'data.min_size=128', 'data.max_size=160', 'train.img_scale=[160,160]',
         'train.warmup_iters=5', 'ray.dashboard=false', 'ray.verbose=0', 'reference=false']


def _trials(folder: Path) -> dict[str, list[dict]]:
    out = {}
    for trial_dir in folder.glob('trial_*'):
        result = trial_dir / 'result.json'
        rows = [json.loads(line) for line in result.read_text().splitlines()] if result.is_file() else []
        out[trial_dir.name] = rows
    return out


def _wait_for_kill_point(folder: Path, driver: subprocess.Popen, timeout: float = 400.0) -> None:
    """Until one trial has finished and the next has a checkpoint recorded in an experiment snapshot."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert driver.poll() is None, 'the search ended before it could be killed'
        trials = _trials(folder)
        finished = [n for n, rows in trials.items() if rows and rows[-1]['epoch'] == EPOCHS]
        running = [n for n, rows in trials.items() if rows and rows[-1]['epoch'] < EPOCHS]
        states = list(folder.glob('experiment_state-*.json'))
        if finished and running and states:
            checkpoint = folder / running[0] / trials[running[0]][-1]['checkpoint_dir_name']
            if checkpoint.is_dir() and max(s.stat().st_mtime for s in states) > checkpoint.stat().st_mtime + 1:
                return
        time.sleep(0.5)
    raise AssertionError('no kill point reached')


def test_records_come_from_the_resumed_sessions_state_file_whatever_the_mtimes(tmp_path):
    """A resumed search copies the first session's state file back last; its records must not win."""
    from search.results import load_records

    rows = [{'epoch': 1, 'bbox_mAP': 0.1}]
    first, resumed = 'experiment_state-2026-12-01_08-14-42.json', 'experiment_state-2026-12-01_08-15-25.json'
    write_tune_experiment(tmp_path, {'t0': rows, 't1': rows}, state_file=resumed)
    write_tune_experiment(tmp_path, {'t0': StoredTrial(rows, status='RUNNING')}, state_file=first)
    os.utime(tmp_path / resumed, (1_000_000, 1_000_000))  # older on disk than the first session's file
    records = load_records(tmp_path, 'bbox_mAP', 'max')
    assert [r.trial_id for r in records] == ['t0', 't1']
    assert all(r.status != 'running' for r in records)


@pytest.mark.slow
def test_sigkill_then_resume_keeps_finished_trials_and_continues_running_ones(tmp_path):
    args = [sys.executable, str(REPO / 'search' / 'run.py'), *SMALL, f'experiment.dir={tmp_path}', 'experiment.name=k']
    # Snapshot the experiment every 2 s (not the driver's 10 s) so the kill window is not missed.
    env = dict(os.environ, TUNE_GLOBAL_CHECKPOINT_S='2')
    driver = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=env)
    folder = tmp_path / 'k'
    try:
        _wait_for_kill_point(folder, driver)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        except ProcessLookupError:
            pass
        driver.wait()
    before = _trials(folder)
    finished = {n: rows for n, rows in before.items() if rows and rows[-1]['epoch'] == EPOCHS}
    interrupted = {n: rows for n, rows in before.items() if rows and rows[-1]['epoch'] < EPOCHS}
    assert finished and interrupted and not (folder / 'summary.json').exists()

    resumed = subprocess.run([sys.executable, str(REPO / 'search' / 'run.py'), f'experiment.dir={tmp_path}',
                              'experiment.name=k', 'resume=true', 'ray.dashboard=false', 'ray.verbose=0'],
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _trials(folder)
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['num_trials'] == 2 and summary['num_failed'] == 0
    for name, rows in finished.items():
        assert after[name] == rows  # kept with its results, not re-run
    for name in interrupted:
        # continued from its last checkpoint: no epoch reported twice, none missing, not restarted at 1
        assert [r['epoch'] for r in after[name]] == list(range(1, EPOCHS + 1))
    all_rows = [r for rows in after.values() for r in rows]
    assert summary['best']['bbox_mAP'] == max(r['bbox_mAP'] for r in all_rows)


@pytest.mark.slow
def test_a_raising_and_a_diverging_trial_fail_and_the_search_finishes(ray_session, tmp_path, monkeypatch):
    spaces = tmp_path / 'spaces'
    spaces.mkdir()
    (spaces / 'faulty.yaml').write_text(
        'description: one healthy trial, one whose loss diverges, two whose optimizer does not exist\n'
        'params:\n'
        '  optimizer.type: {choice: [SGD, NoSuchOptimizer]}\n'
        '  optimizer.lr: {choice: [0.01, 1000000.0]}\n')
    monkeypatch.setattr('search.space.SPACES_DIR', spaces)
    spec, summary = run_search_for_test(['space=faulty', 'smoke=true', 'search_alg=grid', 'scheduler=fifo', 'reference=false',
                                         'max_failures=1', 'experiment.name=f'], tmp_path / 'exp')
    assert summary['num_trials'] == 4
    failures = {f['trial_id']: f['error'] for f in summary['failures']}
    assert len(failures) == 3
    assert sum('NoSuchOptimizer' in e for e in failures.values()) == 2
    assert sum('non-finite loss' in e for e in failures.values()) == 1
    assert summary['best']['params'] == {'optimizer.type': 'SGD', 'optimizer.lr': 0.01}
    rows = (tmp_path / 'exp' / 'f' / 'trials.csv').read_text().splitlines()
    assert sum(',failed,' in r for r in rows) == 3
