"""Endings that tell the truth: exit codes, the last line, partial exports, one-line usage errors.

0 finished with a best trial, 1 no trial scored, 2 bad input (exactly one line on stderr however
late it is found), 130 / 143 interrupted by SIGINT / SIGTERM with the exact resume command.
"""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import loopback_cluster_env
from search.endings import interrupted_line, no_score_line, resume_command
from search.errors import UsageError
from search.resources import check_trial_fits

REPO = Path(__file__).resolve().parents[1]
QUIET = ['dashboard=false', 'ray.verbose=0']


def run_cli(*args, timeout=600):
    """search/run.py as a user runs it; stdout and stderr as one stream, in the order they were written."""
    return subprocess.run([sys.executable, str(REPO / 'search' / 'run.py'), *args], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


# ---- units -------------------------------------------------------------------------------------------------------

def test_a_trial_larger_than_the_machine_or_cluster_is_one_line_naming_the_fix():
    check_trial_fits(2, 0.5, 2, 1)
    check_trial_fits(0.5, 0, 1, 0)
    with pytest.raises(UsageError, match=r'^cpus_per_trial=1000 but this machine has 2 CPUs in total, .*'
                                         r'use cpus_per_trial=2 or less$'):
        check_trial_fits(1000, 0, 2, 0)
    with pytest.raises(UsageError, match=r'^gpus_per_trial=2 but the Ray cluster at auto has 1 GPUs in total, .*'
                                         r'use gpus_per_trial=1 or less$'):
        check_trial_fits(1, 2, 8, 1, where='the Ray cluster at auto')
    with pytest.raises(UsageError, match='has 0 GPUs in total.*use gpus_per_trial=0$'):
        check_trial_fits(1, 0.25, 8, 0)


def test_the_resume_command_quotes_what_the_shell_would_split(tmp_path):
    experiment = tmp_path / 'my dir' / "it's"
    words = shlex.split(resume_command(experiment))
    assert words == ['python', 'search/run.py', f'experiment.dir={experiment.parent}', "experiment.name=it's",
                     'resume=true']
    assert 'nothing to resume' in interrupted_line(signal.SIGINT, experiment, None)  # no Tune state saved yet


def test_the_interrupted_line_counts_searched_trials_only(tmp_path):
    # Interrupted while the reference trial and one searched trial ran and a second waited: summary.json's
    # counts, and so the line, are of the searched trials (the reference has its own entry).
    from search.results import TrialRecord, write_summary

    def record(trial_id, status, reference=False):
        return TrialRecord(trial_id=trial_id, status=status, params={}, epochs=1, final=0.1, best=0.1, best_epoch=1,
                           compute_seconds=1.0, total_seconds=1.0, path='/nonexistent', reference=reference)

    (tmp_path / 'experiment_state-x.json').write_text('{}')
    summary = write_summary([record('ref', 'running', reference=True), record('a', 'running'),
                             record('b', 'not started')], tmp_path / 'summary.json', space='dbf', metric='bbox_mAP',
                            mode='max', wall_seconds=1.0, experiment=tmp_path, partial='interrupted by SIGINT')
    assert (summary['num_trials'], summary['num_running'], summary['num_not_started']) == (2, 1, 1)
    assert 'trials finished: 0, unfinished: 2;' in interrupted_line(signal.SIGINT, tmp_path, summary)


def test_no_score_line_counts_failures_and_names_the_first_log():
    failures = [{'trial_id': 't0', 'error': 'FloatingPointError: non-finite loss nan', 'log': '/x/t0/error.txt'},
                {'trial_id': 't1', 'error': 'FloatingPointError: non-finite loss inf', 'log': '/x/t1/error.txt'}]
    summary = dict(metric='bbox_mAP', num_trials=2, failures=failures, best=None, experiment='/x')
    assert no_score_line(summary) == ('all 2 trials failed; the first, t0: FloatingPointError: non-finite loss nan; '
                                      'its log: /x/t0/error.txt')
    summary['num_trials'] = 3
    assert no_score_line(summary).startswith('no trial scored bbox_mAP: 2 of 3 trials failed; the first, t0')
    assert no_score_line(dict(summary, best={'bbox_mAP': 0.1})) is None


def test_held_stderr_is_dropped_for_a_usage_error_and_written_out_otherwise(capsys):
    import logging

    from search.errors import hold_stderr, release_stderr

    hold_stderr()
    print('import warning', file=sys.stderr)
    handler = logging.StreamHandler()  # created while held, like torch's and Ray's handlers
    release_stderr(keep=False)
    handler.stream.write('logged later\n')  # passes through once released
    print('dyntune: error: one line', file=sys.stderr)
    assert capsys.readouterr().err == 'logged later\ndyntune: error: one line\n'
    hold_stderr()
    print('import warning', file=sys.stderr)
    release_stderr()
    assert capsys.readouterr().err == 'import warning\n'


# ---- the command line --------------------------------------------------------------------------------------------

@pytest.mark.parametrize('args, message', [
    (['experiment.name=../escape'], "experiment.name '../escape' must be a plain folder name"),
    (['scheduler.grace_period=0'], 'scheduler.grace_period must be a whole number >= 1'),
    (['cpus_per_trial=1000'], f'cpus_per_trial=1000 but this machine has {os.cpu_count()} CPUs in total'),
])
def test_a_late_usage_error_is_exactly_one_line_on_stderr(args, message, tmp_path):
    """Found after torch, mmcv and the dry run were imported, whose warnings used to come first."""
    result = subprocess.run([sys.executable, str(REPO / 'search' / 'run.py'), *args, f'experiment.dir={tmp_path}'],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and message in result.stderr, result.stderr
    assert result.stderr.startswith('dyntune: error: ') and result.stdout == ''
    assert list(tmp_path.iterdir()) == []


# Runs in its own process: the test session may hold a Ray runtime of its own.
CLUSTER_SCRIPT = r'''
import json, os, subprocess, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args=dict(num_cpus=1, include_dashboard=False, node_ip_address="127.0.0.1"))
try:
    done = subprocess.run([sys.executable, sys.argv[1], "smoke=true", "reference=false", f"ray.address={cluster.address}",
                           f"experiment.dir={sys.argv[2]}", "experiment.name=c", "cpus_per_trial=2"],
                          capture_output=True, text=True, timeout=600)
    print(json.dumps(dict(rc=done.returncode, err=done.stderr, out=done.stdout, address=cluster.address)))
finally:
    cluster.shutdown()
'''


@pytest.mark.slow
def test_a_trial_larger_than_the_joined_cluster_is_one_line_exit_2_and_no_folder(tmp_path):
    """Found only after connecting to ray.address (a 1-CPU cluster here), after Ray's own start-up log."""
    script = tmp_path / 'cluster.py'
    script.write_text(CLUSTER_SCRIPT)
    env = loopback_cluster_env()
    done = subprocess.run([sys.executable, str(script), str(REPO / 'search' / 'run.py'), str(tmp_path / 'exp')],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['rc'] == 2, report
    assert report['err'].splitlines() == [f"dyntune: error: cpus_per_trial=2 but the Ray cluster at {report['address']} "
                                          'has 1 CPUs in total, so no trial could ever start; use cpus_per_trial=1 or less']
    assert not (tmp_path / 'exp').exists()


def _rows(folder: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in folder.glob('trial_*/result.json'))


def _interrupt(args: list[str], folder: Path, signum: int, timeout: float = 400.0) -> tuple[int, list[str]]:
    """Start ``args``, send ``signum`` once a trial has reported a result in this run; return (exit code, lines)."""
    before = _rows(folder)
    driver = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + timeout
        while _rows(folder) == before:
            assert driver.poll() is None, 'the search ended before it could be interrupted'
            assert time.time() < deadline, 'no result reported in time'
            time.sleep(0.5)
        driver.send_signal(signum)
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver.returncode, out.strip().splitlines()


@pytest.mark.slow
def test_sigterm_ends_143_with_the_resume_command_which_finishes_the_search(tmp_path):
    """SIGTERM after the search's first result; the printed command resumes it to the end. Ctrl-C (SIGINT, 130)
    is the same ending through Tune's own handler: tests/test_storage_s3.py interrupts its search that way."""
    folder = tmp_path / 'i'
    start = [sys.executable, str(REPO / 'search' / 'run.py'), 'space=baseline', 'smoke=true', 'scheduler=fifo', 'reference=false',
             'max_concurrent_trials=1', *QUIET, f'experiment.dir={tmp_path}', 'experiment.name=i']
    command = f'python search/run.py experiment.dir={tmp_path} experiment.name=i resume=true'

    code, lines = _interrupt(start, folder, signal.SIGTERM)
    assert code == 143, lines[-20:]
    # On a loaded machine Tune may take the trial's next result before it stops.
    assert re.match(r'dyntune: interrupted by SIGTERM: trials finished: [01], unfinished: [12]; partial results in ',
                    lines[-1]), lines[-1]
    assert lines[-1].endswith(f'resume with: {command}')
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['partial'] is True and summary['partial_reason'] == 'interrupted by SIGTERM'
    assert 'PARTIAL: the search was interrupted by SIGTERM' in (folder / 'report.html').read_text()
    assert 'PARTIAL results' in (folder / 'best' / 'best_params.yaml').read_text()
    assert not any('best bbox_mAP' in line for line in lines)
    assert not any('Tuner.restore' in line for line in lines)  # Tune's own hint does not resume a DynTune search

    # The printed command resumes it to the end.
    done = run_cli(*shlex.split(lines[-1].split('resume with: ')[1])[2:])
    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith('DynTune: 2 trials, best bbox_mAP = ')
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['partial'] is False and 'partial_reason' not in summary and summary['num_failed'] == 0
    epochs = [[json.loads(r)['epoch'] for r in p.read_text().splitlines()] for p in folder.glob('trial_*/result.json')]
    assert sorted(epochs) == [[1, 2], [1, 2]]  # each epoch reported once: continued, not restarted or repeated
    assert 'PARTIAL' not in (folder / 'report.html').read_text()


@pytest.mark.slow
def test_a_search_whose_trials_all_fail_exits_1_naming_the_first_failure_and_its_log(tmp_path):
    space = tmp_path / 'diverge.yaml'  # the loss turns non-finite in the first iterations; FiniteLossHook fails the trial
    space.write_text('description: a learning rate no detector survives\n'
                     'params:\n  optimizer.lr: {choice: [1000000.0]}\n')
    result = run_cli(f'space={space}', 'smoke=true', 'scheduler=fifo', 'max_failures=0', 'reference=false', *QUIET,
                     f'experiment.dir={tmp_path}', 'experiment.name=f')
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1, lines[-20:]
    last = lines[-1]
    assert last.startswith('dyntune: all 2 trials failed; the first, ') and 'non-finite loss' in last, last
    log = Path(last.split('its log: ')[1])
    assert log.name == 'error.txt' and log.is_file() and 'FloatingPointError' in log.read_text()
    assert not any('best bbox_mAP' in line or '/best' in line for line in lines)  # no claim of a best, no best/ named
    folder = tmp_path / 'f'
    assert not (folder / 'best').exists()
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['best'] is None and summary['num_failed'] == 2 and summary['failures'][0]['log'] == str(log)
