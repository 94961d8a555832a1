"""Warm start: an earlier experiment's best configurations become a new search's first trials.

``warm_start=PATH`` names an experiment folder that DynTune wrote (a search on a small subset, or
last week's). Its ``summary.json`` says which metric it optimised and in which direction, its
``trials.csv`` what every trial scored and with which parameters. :func:`best_points` ranks the
searched trials by their best score and returns the best few as Tune configs of the new space; the
search algorithm runs them first (Tune's ``points_to_evaluate``, which Ray's OptunaSearch hands to
Optuna's ``enqueue_trial``), and a model-based one learns from their results like any other.

The points must be points of the new space: every parameter the new space samples must be in the
old trials.csv, with a value inside the new range (or among the new choices). Anything else is a
:class:`UsageError` naming the parameter, before Ray starts; nothing is silently dropped or clipped.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from search.errors import UsageError
from search.space import Distribution

WARM_START_POINTS = 3  # the best configurations taken (at most num_samples)


def best_points(path, params: dict[str, Distribution], limit: int) -> list[dict]:
    """The ``limit`` best searched trials of the experiment at ``path``, best first, as Tune configs of ``params``.

    Raises:
        UsageError: ``path`` is not a DynTune experiment folder, its files do not parse, no trial
            scored, or a best configuration is not a point of ``params``.
    """
    try:
        folder = Path(str(path)).expanduser().resolve()
        found = (folder / 'summary.json').is_file() and (folder / 'trials.csv').is_file()
    except (OSError, ValueError):  # a name the file system cannot hold (too long, a NUL byte)
        folder, found = path, False
    summary_file, trials_file = Path(str(folder)) / 'summary.json', Path(str(folder)) / 'trials.csv'
    if not found:
        raise UsageError(f'warm_start {folder} is not a DynTune experiment folder (it needs summary.json and '
                         'trials.csv): give the folder of an earlier search')
    try:
        summary = json.loads(summary_file.read_text())
        metric, mode = summary['metric'], summary['mode']
        with open(trials_file, newline='') as handle:
            rows = list(csv.DictReader(handle))
    except (ValueError, KeyError, TypeError, csv.Error, UnicodeDecodeError) as err:
        raise UsageError(f'warm_start {folder}: summary.json or trials.csv does not parse '
                         f'({type(err).__name__}: {err})') from None
    scored = [(score, row) for row in rows if row.get('reference') != 'True'
              for score in [_number(row.get(f'{metric}_best'))] if score is not None]
    if not scored:
        raise UsageError(f'warm_start {folder}: no searched trial of that experiment scored {metric}')
    scored.sort(key=lambda item: item[0], reverse=mode == 'max')
    points = []
    for _, row in scored:
        point = {p: _value(row, p, dist, folder, row.get('trial_id')) for p, dist in params.items()}
        if point not in points:  # a resumed or re-run configuration counts once
            points.append(point)
        if len(points) == limit:
            break
    return points


def _value(row: dict, path: str, dist: Distribution, folder: Path, trial_id):
    """The Tune value of ``path`` in a trials.csv row (csv holds text), checked against ``dist``."""
    from search.space import to_tune

    where = f'warm_start {folder}: trial {trial_id}'
    text = row.get(path)
    if text is None or text == '':
        raise UsageError(f"{where} has no value for '{path}', which this search samples: warm-start only from a "
                         'search of the same parameters')
    if dist.kind == 'choice':
        categories = to_tune(dist).categories  # what the search algorithm offers (lists as JSON text)
        match = [c for c in categories if str(c) == text]
        if not match:
            raise UsageError(f"{where} has {path}={text}, not one of this search's choices {categories}")
        return match[0]
    value = _number(text)
    if value is None or (dist.kind == 'int' and value != int(value)):
        raise UsageError(f"{where} has {path}={text!r}, not a {'whole ' if dist.kind == 'int' else ''}number")
    if not dist.low <= value <= dist.high:
        raise UsageError(f'{where} has {path}={text}, outside this search\'s range [{dist.low}, {dist.high}]: '
                         'widen the range or warm-start from a search inside it')
    return int(value) if dist.kind == 'int' else value


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
