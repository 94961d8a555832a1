"""Read a finished (or interrupted) experiment folder into per-trial records, and write the result files.

Files written into ``<experiment>/``: ``trials.csv`` (one row per trial; failures keep their status
and reason, never a fake score) and ``summary.json``. Everything is read back from what Ray Tune
stored, so the same code serves a live search, a resumed one and ``search/export.py`` on a folder.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from search.files import CHECKPOINT_FILE, DEFERRED_STOPS_FILE, SPEC_FILE, TRIAL_CONFIG


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
    train_seconds: float
    total_seconds: float
    path: str
    error: str = ''
    best_checkpoint: str | None = None
    last_metrics: dict = field(default_factory=dict)
    stop_deferred_at: int | None = None  # the epoch whose STOP the schedule-aware rule deferred
    seconds_after_deferred_stop: float = 0.0  # time_total_s the trial ran after that epoch


def load_records(experiment: Path, metric: str, mode: str) -> list[TrialRecord]:
    """Records of every trial of the experiment folder, in trial-id order.

    Reads what Ray Tune 2.60 stores: the newest ``experiment_state-*.json`` (trial ids, status,
    folders, error files) and each trial folder's ``params.json`` and ``result.json``.
    """
    records = []
    deferred = read_deferred_stops(experiment / DEFERRED_STOPS_FILE)
    for state, metadata in _trial_states(experiment):
        path = experiment / state['relative_logdir']
        rows = result_rows(path / 'result.json')
        scores = [(r[metric], int(r.get('epoch', i + 1))) for i, r in enumerate(rows) if _finite(r.get(metric))]
        best, best_epoch = (None, None)
        if scores:
            best, best_epoch = (max if mode == 'max' else min)(scores, key=lambda s: s[0])
        last = rows[-1] if rows else {}
        error = _error_text(path, metadata)
        if state['status'] == 'ERROR':
            status = 'failed'
        elif not rows and not error and not (path / TRIAL_CONFIG).is_file():
            status = 'not started'  # a search_budget_s or a stopped search ended before this trial's turn
        elif state['status'] in ('RUNNING', 'PENDING', 'PAUSED'):
            status = 'running'
        else:
            budget = _trial_budget(path)
            status = 'completed' if budget is not None and last.get('epoch', 0) >= budget else 'stopped'
        records.append(TrialRecord(
            trial_id=state['trial_id'], status=status, params=dict(state.get('config') or {}),
            epochs=int(last.get('epoch', 0)), final=_finite_or_none(last.get(metric)), best=best,
            best_epoch=best_epoch, train_seconds=float(last.get('compute_seconds', 0.0)),
            total_seconds=float(last.get('time_total_s', 0.0)), path=str(path), error=error,
            best_checkpoint=_best_checkpoint(path, rows, metric, mode),
            last_metrics={k: v for k, v in last.items() if _finite(v)},
            stop_deferred_at=deferred.get(state['trial_id']),
            seconds_after_deferred_stop=_seconds_after(rows, deferred.get(state['trial_id']))))
    return sorted(records, key=lambda r: r.trial_id)


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
            for state, _ in _trial_states(experiment)}


def trial_seconds(experiment: Path) -> dict[str, float]:
    """Trial id -> its last reported ``time_total_s`` (0 for a trial that reported nothing)."""
    return {trial_id: float(rows[-1].get('time_total_s', 0.0)) if rows else 0.0
            for trial_id, rows in trial_rows(experiment).items()}


def _trial_states(experiment: Path) -> list[tuple[dict, dict]]:
    # Ray's own rule (experiment_state._find_newest_experiment_checkpoint): the newest is the greatest
    # name, whose suffix is the session's start time. Not mtime: a resumed search ends by copying every
    # state file of its staging folder back, so the first session's file can look as new as its own.
    newest = max(experiment.glob('experiment_state-*.json'), key=lambda p: p.name, default=None)
    if newest is None:
        return []
    data = json.loads(newest.read_text())
    return [(json.loads(trial), json.loads(meta) if isinstance(meta, str) else meta)
            for trial, meta in data.get('trial_data', [])]


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
    scored = [r for r in records if all(_finite(r.last_metrics.get(o)) for o in objectives)]
    flags = pareto_optimal([tuple(r.last_metrics[o] for o in objectives) for r in scored], modes)
    return [r for r, keep in zip(scored, flags) if keep]


def best_record(records: list[TrialRecord], mode: str) -> TrialRecord | None:
    scored = [r for r in records if r.best is not None]
    if not scored:
        return None
    return (max if mode == 'max' else min)(scored, key=lambda r: r.best)


def write_trials_csv(records: list[TrialRecord], path: Path, metric: str, pareto: list[TrialRecord] | None = None) -> None:
    """One row per trial; with ``pareto`` (multi-objective) a ``pareto`` column marks the front."""
    param_keys = sorted({k for r in records for k in r.params})
    extra = sorted({k for r in records for k in r.last_metrics if _is_component_metric(k)})
    front = {r.trial_id for r in pareto or []}
    header = ['trial_id', 'status', 'epochs', f'{metric}_final', f'{metric}_best', 'best_epoch', 'train_seconds',
              'total_seconds', 'stop_deferred_at', *(['pareto'] if pareto is not None else []), *param_keys, *extra,
              'error']
    with open(path, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in records:
            writer.writerow([r.trial_id, r.status, r.epochs, r.final, r.best, r.best_epoch, round(r.train_seconds, 2),
                             round(r.total_seconds, 2), r.stop_deferred_at,
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
                  objectives: tuple[str, ...] = ()) -> dict:
    best = best_record(records, mode)
    summary = dict(
        space=space, metric=metric, mode=mode, num_trials=len(records),
        num_failed=sum(r.status == 'failed' for r in records),
        num_not_started=sum(r.status == 'not started' for r in records),
        best=None if best is None else {'trial_id': best.trial_id, 'params': best.params, metric: best.best,
                                        'epoch': best.best_epoch},
        wall_seconds=round(wall_seconds, 2),
        trial_seconds_sum=round(sum(r.train_seconds for r in records), 2),
        experiment=str(experiment),
        failures=[{'trial_id': r.trial_id, 'error': r.error} for r in records if r.status == 'failed'],
    )
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


def _best_checkpoint(trial_path: Path, rows: list[dict], metric: str, mode: str) -> str | None:
    """The kept checkpoint (Tune deletes beyond ``num_to_keep``) of the result with the best ``metric``."""
    kept = [r for r in rows if isinstance(r.get('checkpoint_dir_name'), str)
            and (trial_path / r['checkpoint_dir_name'] / CHECKPOINT_FILE).is_file()]
    if not kept:
        return None
    scored = [r for r in kept if _finite(r.get(metric))] or kept
    pick = (max if mode == 'max' else min)(scored, key=lambda r: r.get(metric, 0.0)) if scored is not kept else kept[-1]
    return str(trial_path / pick['checkpoint_dir_name'] / CHECKPOINT_FILE)


def _trial_budget(trial_path: Path) -> int | None:
    """The trial's epoch budget, read from the config it trained with."""
    config = trial_path / 'trial_config.py'
    if not config.is_file():
        return None
    from mmcv import Config

    return int(Config.fromfile(str(config)).runner.max_epochs)


def _error_text(trial_path: Path, metadata: dict) -> str:
    """The last line of the trial's error (the exception and its message), if it failed."""
    name = metadata.get('error_filename')
    error_file = trial_path / name if name else trial_path / 'error.txt'
    if error_file.is_file():
        lines = [line.strip() for line in error_file.read_text().splitlines() if line.strip()]
        return lines[-1][:300] if lines else 'failed'
    return ''


def _is_component_metric(key: str) -> bool:
    return key.split('_', 1)[0] in ('dbf', 'drcnn', 'dhead', 'dyra')


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_or_none(value):
    return float(value) if _finite(value) else None
