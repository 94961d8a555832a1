"""Read a finished (or interrupted) experiment folder into per-trial records, and write the result files.

Files written into ``<experiment>/``: ``trials.csv`` (one row per trial; failures keep their status
and reason, never a fake score) and ``summary.json``. Everything is read back from what the search
and Ray Tune stored, so the same code serves a live search, a resumed one, ``search/export.py`` and
``search/report.py`` on a folder. Which reported metrics belong to components, and what they mean,
each trial's ``component_metrics.json`` says (written by ``TuneReportHook`` from the components'
declarations, ``dyncomponents.protocol``); nothing here names a component.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from search.errors import UsageError, is_number
from search.storage import is_stored_file, source_of
from search.files import (CHECKPOINT_FILE, COMPONENT_METRICS_FILE, DEFERRED_STOPS_FILE, REFERENCE_KEY, SPEC_FILE,
                          TEST_FILE, TRIAL_CONFIG)


@dataclass
class TrialRecord:
    """One trial as the user sees it in trials.csv."""

    trial_id: str
    status: str  # completed | stopped (by the scheduler) | failed | running
    params: dict
    epochs: int
    final: float | None
    best: float | None
    best_epoch: int | None
    compute_seconds: float  # the trial's training seconds, all epochs (its last reported compute_seconds)
    total_seconds: float  # Ray Tune's time_total_s: training, evaluation and checkpoints
    path: str
    error: str = ''
    error_log: str | None = None  # the trial's error.txt (Tune's traceback of its failure), when it failed
    best_checkpoint: str | None = None
    last_metrics: dict = field(default_factory=dict)
    component_metrics: tuple[str, ...] = ()  # the metrics its components declare, in declaration order
    stop_deferred_at: int | None = None  # the epoch whose STOP the schedule-aware rule deferred
    seconds_after_deferred_stop: float = 0.0  # time_total_s the trial ran after that epoch
    reference: bool = False  # the reference trial (the user's config, component off), not a searched one


def load_records(experiment: Path, metric: str, mode: str) -> list[TrialRecord]:
    """Records of every trial of the experiment folder, in the order Tune created them.

    Reads what Ray Tune 2.60 stores: the newest ``experiment_state-*.json`` (trial ids, status,
    folders, error files) and each trial folder's ``params.json`` and ``result.json``.
    """
    records = []
    deferred = read_deferred_stops(experiment / DEFERRED_STOPS_FILE)
    for state, metadata in trial_states(experiment):
        path = experiment / state['relative_logdir']
        rows = result_rows(path / 'result.json')
        scores = [(r[metric], int(r.get('epoch', i + 1))) for i, r in enumerate(rows) if is_number(r.get(metric))]
        best, best_epoch = (None, None)
        if scores:
            best, best_epoch = (max if mode == 'max' else min)(scores, key=lambda s: s[0])
        last = rows[-1] if rows else {}
        error_file = _error_file(path, metadata)
        error = _error_text(error_file)
        if state['status'] == 'ERROR':
            status = 'failed'
        elif not rows and not error and not (path / TRIAL_CONFIG).is_file():
            status = 'not started'  # a search_budget_s or a stopped search ended before this trial's turn
        elif state['status'] in ('RUNNING', 'PENDING', 'PAUSED'):
            status = 'running'
        else:
            budget = _trial_budget(path)
            status = 'completed' if budget is not None and last.get('epoch', 0) >= budget else 'stopped'
        config = dict(state.get('config') or {})
        reference = bool(config.pop(REFERENCE_KEY, False))
        if reference:  # its Tune config holds placeholders: show what it trained with at the sampled paths
            config = _trained_values(path, config)
        records.append(TrialRecord(
            trial_id=state['trial_id'], status=status, params=config, reference=reference,
            epochs=int(last.get('epoch', 0)), final=_finite_or_none(last.get(metric)), best=best,
            best_epoch=best_epoch, compute_seconds=float(last.get('compute_seconds', 0.0)),
            total_seconds=float(last.get('time_total_s', 0.0)), path=str(path), error=error,
            error_log=str(error_file) if error and error_file.is_file() else None,
            best_checkpoint=_best_checkpoint(path, rows, metric, mode),
            last_metrics={k: v for k, v in last.items() if is_number(v)},
            component_metrics=tuple(m['name'] for d in read_component_metrics(path) for m in d['metrics']),
            stop_deferred_at=deferred.get(state['trial_id']),
            seconds_after_deferred_stop=_seconds_after(rows, deferred.get(state['trial_id']))))
    return sorted(records, key=lambda r: r.trial_id)


def read_search_config(experiment: Path) -> dict:
    """The search configuration an experiment folder was started with (its ``search_config.yaml``).

    Raises:
        UsageError: ``experiment`` is not a folder, or not a DynTune experiment folder.
    """
    path = experiment / SPEC_FILE
    if not experiment.is_dir():
        raise UsageError(f'{experiment} is not a folder')
    if not path.is_file():
        raise UsageError(f'{experiment} is not a DynTune experiment folder (no {SPEC_FILE})')
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not {'metric', 'mode', 'space'} <= set(config):
        raise UsageError(f'{path} is not a DynTune search config (needs metric, mode and space)')
    return config


def read_component_metrics(trial_path: Path) -> list[dict]:
    """The declarations of a trial's components as stored (``ComponentMetrics.to_dict()``); [] without the file.

    Each is ``{'component': str, 'metrics': [{'name', 'unit', 'meaning'}], 'plots': [{'metrics',
    'style', 'title', 'ylabel', 'band', 'spread', 'reference', 'caption'}]}`` (dyncomponents.protocol).
    """
    path = Path(trial_path) / COMPONENT_METRICS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # none yet (a trial that never ran), or cut off by a killed trial
        return []
    return data if isinstance(data, list) else []


def compute_timeline(trials_rows: dict[str, list[dict]], metric: str, mode: str,
                     clock: str = 'compute_seconds') -> list[tuple[float, float | None]]:
    """(cumulative seconds of all trials, best ``metric`` so far or None) after each result, in report order.

    Results of all trials are merged by Tune's ``timestamp`` (whole seconds; ties go by the trials' own
    ``clock``). Each result adds the increase of its trial's ``clock`` since its previous result:
    ``compute_seconds`` counts training only, ``time_total_s`` also evaluation and checkpoints (what
    ``search_budget_s`` counts). A trial restored with less on its clock adds nothing; a result without
    ``clock`` adds its ``time_this_iter_s``. A NaN or missing ``metric`` scores nothing.

    Example:
        >>> rows = {'a': [dict(timestamp=1, compute_seconds=10.0, m=0.1)], 'b': [dict(timestamp=2, compute_seconds=4.0)]}
        >>> compute_timeline(rows, 'm', 'max')
        [(10.0, 0.1), (14.0, 0.1)]
    """
    events = []
    for trial_id, rows in trials_rows.items():
        previous = 0.0
        for index, row in enumerate(rows):
            if is_number(row.get(clock)):
                spent, previous = max(float(row[clock]) - previous, 0.0), float(row[clock])
            else:
                spent = float(row['time_this_iter_s']) if is_number(row.get('time_this_iter_s')) else 0.0
            events.append((float(row.get('timestamp', 0)), previous, trial_id, index, spent, row.get(metric)))
    events.sort(key=lambda e: e[:4])
    total, best, timeline = 0.0, None, []
    for *_, spent, value in events:
        total += spent
        if is_number(value) and (best is None or (value > best if mode == 'max' else value < best)):
            best = float(value)
        timeline.append((total, best))
    return timeline


def read_deferred_stops(path: Path) -> dict[str, int]:
    """Trial id -> the epoch of its first STOP deferred by the schedule-aware rule ({} without the file)."""
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}


def _seconds_after(rows: list[dict], epoch: int | None) -> float:
    """The trial's ``time_total_s`` after its result of ``epoch`` (0 without one)."""
    at = next((float(r.get('time_total_s', 0.0)) for r in rows if r.get('epoch') == epoch), None)
    return float(rows[-1].get('time_total_s', 0.0)) - at if epoch is not None and at is not None else 0.0


def trial_rows(experiment: Path) -> dict[str, list[dict]]:
    """Trial id -> every result it reported (``result.json`` rows, oldest first), for each trial of the experiment."""
    return {state['trial_id']: result_rows(experiment / state['relative_logdir'] / 'result.json')
            for state, _ in trial_states(experiment)}


def trial_seconds(experiment: Path) -> dict[str, float]:
    """Trial id -> its last reported ``time_total_s`` (0 for a trial that reported nothing)."""
    return {trial_id: float(rows[-1].get('time_total_s', 0.0)) if rows else 0.0
            for trial_id, rows in trial_rows(experiment).items()}


def trial_states(experiment: Path) -> list[tuple[dict, dict]]:
    """(Tune's state, runtime metadata) of every trial in the newest experiment state, in the order Tune created them.

    The state file lists trials in the order Tune last marked them for saving (a set's order), not
    the order they were drawn; the search generator's counter, the number that starts each trial's
    ``experiment_tag``, is the draw order. A state without that number keeps its place at the end.
    """
    # Ray's own rule (experiment_state._find_newest_experiment_checkpoint): the newest is the greatest
    # name, whose suffix is the session's start time. Not mtime: a resumed search ends by copying every
    # state file of its staging folder back, so the first session's file can look as new as its own.
    newest = max(experiment.glob('experiment_state-*.json'), key=lambda p: p.name, default=None)
    if newest is None:
        return []
    data = json.loads(newest.read_text())
    states = [(json.loads(trial), json.loads(meta) if isinstance(meta, str) else meta)
              for trial, meta in data.get('trial_data', [])]
    return sorted(states, key=lambda state: _draw_number(state[0]))


def _draw_number(state: dict) -> float:
    number = str(state.get('experiment_tag') or '').partition('_')[0]
    return int(number) if number.isdigit() else math.inf


def result_rows(path: Path) -> list[dict]:
    """The rows of one trial's ``result.json``; a line cut off by a killed driver is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut off by a killed driver
            continue
    return rows


def pareto_optimal(points: list[tuple[float, ...]], modes) -> list[bool]:
    """For each point, whether no other point is at least as good in every objective and better in one.

    Args:
        points (list[tuple[float, ...]]): one tuple of objective values per candidate.
        modes (Sequence[str]): ``'max'`` or ``'min'`` per objective.

    Returns:
        list[bool]: ``True`` at the index of each Pareto-optimal point; equal points are all optimal.

    Example:
        >>> pareto_optimal([(0.5, 10.0), (0.4, 5.0), (0.3, 8.0)], ['max', 'min'])
        [True, True, False]
    """
    for mode in modes:
        if mode not in ('max', 'min'):
            raise ValueError(f"modes must be 'max' or 'min', got {mode!r}")
    signs = [1.0 if m == 'max' else -1.0 for m in modes]
    oriented = []
    for point in points:
        if len(point) != len(modes):
            raise ValueError(f'each point needs {len(modes)} values (one per objective), got {tuple(point)}')
        oriented.append([s * float(v) for s, v in zip(signs, point)])  # larger is better in every objective

    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [not any(dominates(other, p) for other in oriented if other is not p) for p in oriented]


def mark_pareto(records: list[TrialRecord], objectives: tuple[str, ...], modes: tuple[str, ...]) -> list[TrialRecord]:
    """The records on the Pareto front of their final ``objectives`` (trials missing one are left out)."""
    scored = [r for r in records if not r.reference and all(is_number(r.last_metrics.get(o)) for o in objectives)]
    flags = pareto_optimal([tuple(r.last_metrics[o] for o in objectives) for r in scored], modes)
    return [r for r, keep in zip(scored, flags) if keep]


def reference_record(records: list[TrialRecord]) -> TrialRecord | None:
    """The search's reference trial, if it has one."""
    return next((r for r in records if r.reference), None)


def best_record(records: list[TrialRecord], mode: str) -> TrialRecord | None:
    """The searched trial with the best score over its epochs (the reference is not a candidate)."""
    scored = [r for r in records if r.best is not None and not r.reference]
    if not scored:
        return None
    return (max if mode == 'max' else min)(scored, key=lambda r: r.best)


def write_trials_csv(records: list[TrialRecord], path: Path, metric: str, pareto: list[TrialRecord] | None = None) -> None:
    """One row per trial; with ``pareto`` (multi-objective) a ``pareto`` column marks the front."""
    param_keys = sorted({k for r in records for k in r.params})
    extra = list(dict.fromkeys(k for r in records for k in r.component_metrics if k in r.last_metrics))
    front = {r.trial_id for r in pareto or []}
    header = ['trial_id', 'status', 'epochs', f'{metric}_final', f'{metric}_best', 'best_epoch', 'compute_seconds',
              'total_seconds', 'stop_deferred_at', 'reference', *(['pareto'] if pareto is not None else []),
              *param_keys, *extra, 'error']
    with open(path, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in records:
            writer.writerow([r.trial_id, r.status, r.epochs, r.final, r.best, r.best_epoch, round(r.compute_seconds, 2),
                             round(r.total_seconds, 2), r.stop_deferred_at, r.reference,
                             *([r.trial_id in front] if pareto is not None else []),
                             *[r.params.get(k) for k in param_keys],
                             *[r.last_metrics.get(k) for k in extra], r.error])


def write_pareto_csv(front: list[TrialRecord], path: Path, objectives: tuple[str, ...]) -> None:
    with open(path, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['trial_id', *objectives, 'params'])
        for r in front:
            writer.writerow([r.trial_id, *[r.last_metrics[o] for o in objectives], json.dumps(r.params)])


def write_summary(records: list[TrialRecord], path: Path, *, space: str, metric: str, mode: str,
                  wall_seconds: float, experiment: Path, pareto: list[TrialRecord] | None = None,
                  objectives: tuple[str, ...] = (), partial: str | None = None) -> dict:
    """Write summary.json; ``partial`` (e.g. ``'interrupted by SIGINT'``) marks results of an unfinished search."""
    best = best_record(records, mode)
    searched = [r for r in records if not r.reference]
    summary = dict(
        space=space, metric=metric, mode=mode, partial=partial is not None,
        **({'partial_reason': partial} if partial else {}), num_trials=len(searched),
        num_failed=sum(r.status == 'failed' for r in searched),
        num_not_started=sum(r.status == 'not started' for r in searched),
        num_running=sum(r.status == 'running' for r in searched),  # the reference has its own entry
        best=None if best is None else {'trial_id': best.trial_id, 'params': best.params, metric: best.best,
                                        'epoch': best.best_epoch},
        wall_seconds=round(wall_seconds, 2),
        compute_seconds_sum=round(sum(r.compute_seconds for r in records), 2),
        experiment=source_of(experiment),  # a local copy of an experiment in storage names its URI
        failures=[{'trial_id': r.trial_id, 'error': r.error, 'log': r.error_log}
                  for r in searched if r.status == 'failed'],
    )
    reference = reference_record(records)
    if reference is not None:
        summary['reference'] = {'trial_id': reference.trial_id, 'status': reference.status, metric: reference.best,
                                'epoch': reference.best_epoch, **({'error': reference.error} if reference.error else {})}
    test = read_test_metrics(experiment / TEST_FILE)
    if test:
        summary['test'] = test
    gain = gains(summary, metric)
    if gain:
        summary['gain'] = gain
    kept = [r for r in records if r.stop_deferred_at is not None]
    if kept:
        # What the schedule-aware rule bought: trials ASHA would have stopped, and whether the best is one.
        summary['schedule_aware'] = dict(
            trials_kept=len(kept), seconds_after_deferred_stops=round(sum(r.seconds_after_deferred_stop for r in kept), 2),
            best_was_kept=best is not None and best.stop_deferred_at is not None)
    if pareto is not None:
        summary['objectives'] = list(objectives)
        summary['pareto'] = [{'trial_id': r.trial_id, 'params': r.params,
                              **{o: r.last_metrics[o] for o in objectives}} for r in pareto]
    path.write_text(json.dumps(summary, indent=2, default=str) + '\n')
    return summary


def read_test_metrics(path: Path) -> dict:
    """The test-split evaluation written after the search (search/evaluate.py), or {} without one."""
    return json.loads(path.read_text()) if path.is_file() else {}


def gains(summary: dict, metric: str) -> dict:
    """Best minus reference on validation and, when evaluated, on test ({} where either is missing)."""
    out = {}
    best, reference = summary.get('best') or {}, summary.get('reference') or {}
    if is_number(best.get(metric)) and is_number(reference.get(metric)):
        out['validation'] = round(best[metric] - reference[metric], 6)
    test = summary.get('test') or {}
    tested_best, tested_reference = (test.get('best') or {}).get(metric), (test.get('reference') or {}).get(metric)
    if is_number(tested_best) and is_number(tested_reference):
        out['test'] = round(tested_best - tested_reference, 6)
    return out


def _best_checkpoint(trial_path: Path, rows: list[dict], metric: str, mode: str) -> str | None:
    """The kept checkpoint (Tune deletes beyond ``num_to_keep``) of the result with the best ``metric``.

    In an experiment pulled from a URI the file may still be in the storage (``ExperimentStore.fetch``).
    """
    kept = [r for r in rows if isinstance(r.get('checkpoint_dir_name'), str)
            and is_stored_file(trial_path / r['checkpoint_dir_name'] / CHECKPOINT_FILE)]
    if not kept:
        return None
    scored = [r for r in kept if is_number(r.get(metric))] or kept
    pick = (max if mode == 'max' else min)(scored, key=lambda r: r.get(metric, 0.0)) if scored is not kept else kept[-1]
    return str(trial_path / pick['checkpoint_dir_name'] / CHECKPOINT_FILE)


def _trained_values(trial_path: Path, params: dict) -> dict:
    """The values of the trial's ``trial_config.py`` at the paths of ``params`` (None where it has none)."""
    config = trial_path / TRIAL_CONFIG
    if not config.is_file():
        return {key: None for key in params}
    from mmcv import Config

    from search.mmdet_config import get_path, has_path

    trained = Config.fromfile(str(config))._cfg_dict.to_dict()
    return {key: get_path(trained, key) if has_path(trained, key) else None for key in params}


def _trial_budget(trial_path: Path) -> int | None:
    """The trial's epoch budget, read from the config it trained with."""
    config = trial_path / 'trial_config.py'
    if not config.is_file():
        return None
    from mmcv import Config

    return int(Config.fromfile(str(config)).runner.max_epochs)


def _error_file(trial_path: Path, metadata: dict) -> Path:
    name = metadata.get('error_filename')
    return trial_path / name if name else trial_path / 'error.txt'


def _error_text(error_file: Path) -> str:
    """The last line of the trial's error (the exception and its message), if it failed."""
    if error_file.is_file():
        lines = [line.strip() for line in error_file.read_text().splitlines() if line.strip()]
        return lines[-1][:300] if lines else 'failed'
    return ''


def _finite_or_none(value):
    return float(value) if is_number(value) else None
