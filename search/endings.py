"""How a search ends, told truthfully: finished (exit 0), no trial scored (1), interrupted (130, 143).

``StopSignals`` is active while the Tuner runs. The first SIGINT (Ctrl-C) or SIGTERM is recorded
and handed to Ray Tune's own graceful stop (the handler Tune installs for SIGUSR1 in
``ray.tune.tune._setup_signal_catching``): Tune stops the trials, saves the experiment state and
returns from ``fit()``. The driver then exports the partial results, marked as partial, and ends
with :class:`SearchEnded`, whose one line names the signal and the exact resume command. A second
signal stops at once (:class:`Interrupted`), as Tune's own second Ctrl-C does.

Tune's own SIGINT handler is switched off (``TUNE_DISABLE_SIGINT_HANDLER``) while ``StopSignals``
is active: it would swallow the first Ctrl-C without telling anyone, and it knows nothing of SIGTERM.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import threading
from pathlib import Path

EXIT_NO_SCORE = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SearchEnded(Exception):
    """The search ended without a best trial to show: ``code`` is the exit status, the message its one line."""

    def __init__(self, code: int, message: str):
        super().__init__(' '.join(str(message).splitlines()))
        self.code = code


class Interrupted(BaseException):
    """A second stop signal: stop now, without waiting for Tune to save (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(signum: int) -> int:
    """The shell's status of a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def resume_command(experiment: Path) -> str:
    """The command line that continues ``experiment`` (the rest comes from its search_config.yaml).

    For the local copy of an experiment in a storage URI, the command names the URI (search/storage.py).
    """
    from search.storage import parent_and_name, source_of

    parent, name = parent_and_name(source_of(Path(experiment).resolve()))
    return ' '.join(['python search/run.py', shlex.quote(f'experiment.dir={parent}'),
                     shlex.quote(f'experiment.name={name}'), 'resume=true'])


def interrupted_line(signum: int, experiment: Path, summary: dict | None) -> str:
    """The last line of an interrupted search: which signal, how far it got, how to resume it."""
    name = signal.Signals(signum).name
    if not any(Path(experiment).glob('experiment_state-*.json')):
        return (f'interrupted by {name} before any trial state was saved; nothing to resume: remove {experiment} '
                'and start the search again')
    done = ''
    if summary is not None:
        unfinished = summary.get('num_running', 0) + summary.get('num_not_started', 0)
        done = (f"trials finished: {summary['num_trials'] - unfinished}, unfinished: {unfinished}; "
                f'partial results in {experiment}; ')
    return f'interrupted by {name}: {done}resume with: {resume_command(experiment)}'


def no_score_line(summary: dict) -> str | None:
    """The one line of a search in which no trial scored its metric (None when one did).

    It gives the count, the first failure's reason and where that trial's log (error.txt) is.
    """
    if summary.get('best') is not None:
        return None
    metric, total, failures = summary['metric'], summary['num_trials'], summary.get('failures', [])
    if not failures:
        return f'no trial reported {metric} ({total} trials, none failed): see trials.csv in {summary["experiment"]}'
    first = failures[0]
    where = f"; its log: {first['log']}" if first.get('log') else ''
    count = f'all {total} trials failed' if len(failures) == total else \
        f'no trial scored {metric}: {len(failures)} of {total} trials failed'
    return f"{count}; the first, {first['trial_id']}: {first['error'] or 'failed'}{where}"


def _drop_tune_restore_hint(record: logging.LogRecord) -> bool:
    """Tune's "Resume experiment with: Tuner.restore(...)" is not how a DynTune search resumes."""
    return 'Tuner.restore' not in record.getMessage()


class StopSignals:
    """While active, SIGINT and SIGTERM stop Ray Tune gracefully and are recorded in ``signum``."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}
        self._env = None
        self._stale_tune_handler = None
        self._done = threading.Event()

    @property
    def reason(self) -> str | None:
        """Why the results are partial (``'interrupted by SIGINT'``), or None."""
        return None if self.signum is None else f'interrupted by {signal.Signals(self.signum).name}'

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers; Tune then keeps its own SIGINT handling
        self._env = os.environ.get('TUNE_DISABLE_SIGINT_HANDLER')
        os.environ['TUNE_DISABLE_SIGINT_HANDLER'] = '1'
        self.tune_run_ended()
        logging.getLogger('ray.tune.tune').addFilter(_drop_tune_restore_hint)
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if not self._previous:
            return
        logging.getLogger('ray.tune.tune').removeFilter(_drop_tune_restore_hint)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._env is None:
            os.environ.pop('TUNE_DISABLE_SIGINT_HANDLER', None)
        else:
            os.environ['TUNE_DISABLE_SIGINT_HANDLER'] = self._env

    def tune_run_ended(self) -> None:
        """Call after each ``Tuner.fit()``: its SIGUSR1 handler, still installed, must not be told of a later signal."""
        self._stale_tune_handler = signal.getsignal(signal.SIGUSR1)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum
        # Tune installs its handler when fit() sets up; a signal that comes earlier is passed on then.
        threading.Thread(target=self._tell_tune, daemon=True, name='dyntune-stop').start()

    def _tell_tune(self) -> None:
        while not self._done.is_set():
            handler = signal.getsignal(signal.SIGUSR1)
            if callable(handler) and handler is not self._stale_tune_handler:
                os.kill(os.getpid(), signal.SIGUSR1)  # runs Tune's handler in the main thread
                return
            self._done.wait(0.05)
