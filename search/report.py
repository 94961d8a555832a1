"""Write an HTML report with PNG plots for an experiment folder.

    python search/report.py EXPERIMENT_DIR      # writes EXPERIMENT_DIR/report.html and EXPERIMENT_DIR/report/*.png

The report reads only what the search stored (``search_config.yaml``, Ray Tune's experiment state
and each trial's ``result.json``), so it works on a finished, interrupted or copied folder. It shows
the search's header (space, metric, trials, failures with their reason, the best trial), learning
curves, the best metric against cumulative compute, the Pareto front of a two-objective search,
Optuna's parameter importance, and the per-epoch trajectories that the dynamic components report
(DBF freezing, Dynamic R-CNN IoU threshold and beta, DyRA scale factors, dynamic-head GFLOPs).
What each plot shows: docs/report.md.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if __name__ == '__main__':  # run as a script: import the package from the repo root, not from search/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import yaml

from search.errors import UsageError
from search.files import SPEC_FILE

if TYPE_CHECKING:
    from search.results import TrialRecord

REPORT_FILE = 'report.html'
PLOTS_DIR = 'report'
MIN_IMPORTANCE_TRIALS = 3
COMPONENTS = {'dbf': 'Dynamic Backbone Freezing', 'drcnn': 'Dynamic R-CNN', 'dyra': 'DyRA (dynamic resizing)',
              'dhead': 'Fine-grained dynamic head'}
_LEGEND_MAX = 12  # above this many trials a legend hides the plot; the trial table names the colours


@dataclass
class _Trial:
    record: TrialRecord
    rows: list[dict]  # result.json, one dict per reported epoch, in report order
    color: tuple


@dataclass
class _Figure:
    file: str
    caption: str


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """Which points are Pareto-optimal; the same rule as trials.csv's ``pareto`` column."""
    from search.results import pareto_optimal

    return pareto_optimal(points, directions)


def write_report(experiment: Path) -> Path:
    """Write ``report.html`` and its PNGs (in ``report/``) for an experiment folder; return the HTML path.

    Raises:
        UsageError: ``experiment`` is not a DynTune experiment folder.
    """
    experiment = Path(experiment).resolve()
    config = _search_config(experiment)
    from search.results import result_rows, load_records

    metric, mode = str(config['metric']), str(config['mode'])
    records = load_records(experiment, metric, mode)
    plots = experiment / PLOTS_DIR
    plots.mkdir(exist_ok=True)
    for old in plots.glob('*.png'):  # a plot of an earlier report that this one may not draw
        old.unlink()
    colors = _colors(len(records))
    trials = [_Trial(r, result_rows(Path(r.path) / 'result.json'), colors[i]) for i, r in enumerate(records)]

    sections = []
    if trials:
        sections.append(('Learning curves', [_learning_curves(trials, metric, plots)], ''))
        sections.append(('Best metric against compute', [_best_vs_compute(trials, metric, mode, plots)], ''))
        objectives = _objectives(config, metric)
        if objectives:
            figure, note = _pareto(trials, objectives, mode, plots)
            sections.append(('Pareto front', [figure] if figure else [], note))
        importances, note = param_importance(records, _space_params(config), mode)
        figure = _importance_plot(importances, metric, plots) if importances else None
        sections.append(('Parameter importance', [figure] if figure else [], note))
        for prefix, title in COMPONENTS.items():
            figures = _component_figures(trials, prefix, plots)
            if figures:
                sections.append((title, figures, ''))
    page = _html(experiment, config, records, metric, mode, trials, sections)
    out = experiment / REPORT_FILE
    tmp = out.with_suffix('.html.tmp')
    tmp.write_text(page, encoding='utf-8')
    tmp.replace(out)
    return out


def param_importance(records: list[TrialRecord], space: dict, mode: str) -> tuple[dict[str, float] | None, str]:
    """Optuna's fANOVA importance of each varying parameter for the trials' best metric.

    The finished trials (completed, or stopped by the scheduler, with a score) go into an in-memory
    Optuna study through ``optuna.trial.create_trial`` with distributions taken from the space
    (widened to the values seen, as smoke runs fix some of them), so Optuna's own evaluator does
    the work.

    Args:
        records (list[TrialRecord]): the experiment's trials.
        space (dict): parameter path -> :class:`search.space.Distribution`; a parameter missing here
            gets a distribution inferred from its values.
        mode (str): ``'max'`` or ``'min'``, the direction of the metric.

    Returns:
        tuple: (``{parameter: importance}`` summing to 1, highest first, ``''``) or (``None``, the
        reason it was skipped).
    """
    import optuna

    used = [r for r in records if r.status in ('completed', 'stopped') and r.best is not None]
    if len(used) < MIN_IMPORTANCE_TRIALS:
        return None, (f'skipped: needs at least {MIN_IMPORTANCE_TRIALS} finished trials with a score, '
                      f'this experiment has {len(used)}')
    keys = [k for k in sorted({k for r in used for k in r.params})
            if all(k in r.params for r in used) and len({json.dumps(r.params[k], default=str) for r in used}) > 1]
    if not keys:
        return None, 'skipped: no parameter took more than one value across the finished trials'
    distributions = {k: _optuna_distribution(space.get(k), [r.params[k] for r in used]) for k in keys}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created" in the search's output
    try:
        study = optuna.create_study(direction='maximize' if mode == 'max' else 'minimize')
        for r in used:
            study.add_trial(optuna.trial.create_trial(
                params={k: _optuna_value(r.params[k], distributions[k]) for k in keys},
                distributions=distributions, value=r.best))
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError) as err:  # e.g. every trial scored the same
        return None, f'skipped: Optuna could not evaluate importance ({err})'
    finally:
        optuna.logging.set_verbosity(verbosity)
    return dict(importances), ''


def _optuna_distribution(dist, values):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    kind = dist.kind if dist is not None else None
    if kind == 'choice' or not numeric:
        choices = [_categorical(v) for v in (list(dist.args) if kind == 'choice' else [])]
        choices += [c for c in (_categorical(v) for v in values) if c not in choices]
        return CategoricalDistribution(choices)
    low, high = min(values), max(values)
    if dist is not None:
        low, high = min(low, dist.low), max(high, dist.high)
    if kind == 'int' or (kind is None and all(isinstance(v, int) for v in values)):
        return IntDistribution(int(low), int(high))
    return FloatDistribution(float(low), float(high), log=kind == 'loguniform')


def _categorical(value):
    # Optuna's choices must be None/bool/int/float/str; a list choice (e.g. an image scale) becomes its JSON text.
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def _optuna_value(value, distribution):
    from optuna.distributions import CategoricalDistribution

    return _categorical(value) if isinstance(distribution, CategoricalDistribution) else value


def _search_config(experiment: Path) -> dict:
    path = experiment / SPEC_FILE
    if not experiment.is_dir():
        raise UsageError(f'{experiment} is not a folder')
    if not path.is_file():
        raise UsageError(f'{experiment} is not a DynTune experiment folder (no {SPEC_FILE})')
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not {'metric', 'mode', 'space'} <= set(config):
        raise UsageError(f'{path} is not a DynTune search config (needs metric, mode and space)')
    return config


def _space_params(config: dict) -> dict:
    """The space's distributions by parameter path; empty if its file is gone or changed shape."""
    from search.space import load_space

    try:
        return dict(load_space(str(config['space'])).params)
    except UsageError:
        return {}


def _objectives(config: dict, metric: str) -> list[str]:
    objectives = config.get('objectives')
    if not objectives and (config.get('search_alg') or {}).get('name') == 'nsga2':
        objectives = [metric, 'compute_seconds']  # NSGA-II's default (search/conf/search_alg/nsga2.yaml)
    return [str(o) for o in objectives or []]


# ---------------------------------------------------------------- plots

def _figure(width=7.0, height=4.0, rows=1, cols=1):
    from matplotlib.figure import Figure

    # A bare Figure draws with the Agg canvas and leaves pyplot's global state (and backend) alone.
    fig = Figure(figsize=(width, height), layout='constrained')
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, plots: Path, name: str, caption: str) -> _Figure:
    fig.savefig(plots / name, dpi=100)
    return _Figure(f'{PLOTS_DIR}/{name}', caption)


def _colors(n: int) -> list[tuple]:
    from matplotlib import colormaps

    cmap = colormaps['tab10' if n <= 10 else 'tab20']
    return [cmap(i % cmap.N) for i in range(n)]


def _epochs(rows: list[dict]) -> list[float]:
    return [float(r.get('epoch', r.get('training_iteration', i + 1))) for i, r in enumerate(rows)]


def _series(trial: _Trial, key: str) -> tuple[list[float], list[float]]:
    pairs = [(x, float(r[key])) for x, r in zip(_epochs(trial.rows), trial.rows) if _finite(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _epoch_axis(ax):
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend(ax, trials):
    if len(trials) <= _LEGEND_MAX and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize='small')


def _learning_curves(trials: list[_Trial], metric: str, plots: Path) -> _Figure:
    fig, axes = _figure()
    ax = axes[0, 0]
    for t in trials:
        x, y = _series(t, metric)
        if x:
            ax.plot(x, y, marker='o', color=t.color, linestyle='--' if t.record.status == 'failed' else '-',
                    label=f'{t.record.trial_id} ({t.record.status})')
    ax.set(ylabel=metric, title=f'{metric} per epoch, every trial')
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    _legend(ax, trials)
    return _save(fig, plots, 'learning_curves.png',
                 f'{metric} after each epoch of every trial (dashed: failed trials).')


def compute_timeline(trials_rows: dict[str, list[dict]], metric: str, mode: str) -> list[tuple[float, float]]:
    """(cumulative compute seconds, best ``metric`` so far) after each result, in the order results came.

    Results of all trials are merged by their ``timestamp``; each adds the compute its trial spent
    since its previous result (the increase of ``compute_seconds``, else ``time_this_iter_s``).
    """
    events = []
    for trial_id, rows in trials_rows.items():
        previous = 0.0
        for index, row in enumerate(rows):
            if _finite(row.get('compute_seconds')):
                # A restored or PBT-exploited trial may restart lower: count no negative compute.
                spent, previous = max(float(row['compute_seconds']) - previous, 0.0), float(row['compute_seconds'])
            else:
                spent = float(row['time_this_iter_s']) if _finite(row.get('time_this_iter_s')) else 0.0
            events.append((float(row.get('timestamp', 0)), trial_id, index, spent, row.get(metric)))
    events.sort(key=lambda e: e[:3])
    total, best, timeline = 0.0, None, []
    for _, _, _, spent, value in events:
        total += spent
        if _finite(value) and (best is None or (value > best if mode == 'max' else value < best)):
            best = float(value)
        if best is not None:
            timeline.append((total, best))
    return timeline


def _best_vs_compute(trials: list[_Trial], metric: str, mode: str, plots: Path) -> _Figure:
    timeline = compute_timeline({t.record.trial_id: t.rows for t in trials}, metric, mode)
    fig, axes = _figure()
    ax = axes[0, 0]
    if timeline:
        ax.step([p[0] for p in timeline], [p[1] for p in timeline], where='post', marker='.')
    ax.set(xlabel='cumulative compute (s, all trials)', ylabel=f'best {metric} so far',
           title=f'best {metric} against compute spent')
    ax.grid(alpha=0.3)
    return _save(fig, plots, 'best_vs_compute.png',
                 f'Best {metric} reached so far against the training compute summed over all trials, '
                 'results taken in the order they were reported.')


def _pareto(trials: list[_Trial], objectives: list[str], mode: str, plots: Path):
    if len(objectives) != 2:
        return None, f'drawn for two objectives; this search has {len(objectives)}: {", ".join(objectives)}'
    directions = [mode, 'min']  # the first objective in the search's mode, the rest minimised (config.yaml)
    # A failed or unfinished trial's last result is not a trade-off the search can offer.
    scored = [t for t in trials if t.record.status in ('completed', 'stopped') and t.rows
              and all(_finite(t.rows[-1].get(o)) for o in objectives)]
    if not scored:
        return None, f'no finished trial reported both {objectives[0]} and {objectives[1]}'
    points = [tuple(float(t.rows[-1][o]) for o in objectives) for t in scored]
    optimal = pareto_front(points, directions)
    fig, axes = _figure()
    ax = axes[0, 0]
    for t, p, opt in zip(scored, points, optimal):
        ax.scatter(p[1], p[0], color=t.color, s=80 if opt else 30, marker='*' if opt else 'o',
                   label=t.record.trial_id, zorder=3)
    front = sorted(p for p, opt in zip(points, optimal) if opt)
    ax.plot([p[1] for p in front], [p[0] for p in front], color='black', alpha=0.5, zorder=2)
    ax.set(xlabel=f'{objectives[1]} ({directions[1]})', ylabel=f'{objectives[0]} ({directions[0]})',
           title='Pareto front (stars: Pareto-optimal trials)')
    ax.grid(alpha=0.3)
    _legend(ax, trials)
    names = ', '.join(t.record.trial_id for t, opt in zip(scored, optimal) if opt)
    return _save(fig, plots, 'pareto.png',
                 f'Each finished trial\'s last reported {objectives[0]} against its {objectives[1]}; '
                 f'Pareto-optimal: {names}.'), ''


def _importance_plot(importances: dict[str, float], metric: str, plots: Path) -> _Figure:
    names = list(importances)[::-1]
    fig, axes = _figure(height=1.2 + 0.4 * len(names))
    ax = axes[0, 0]
    ax.barh([_short(n, names) for n in names], [importances[n] for n in names])
    ax.set(xlabel='importance (fANOVA, sums to 1)', title=f'parameter importance for best {metric}')
    return _save(fig, plots, 'importance.png',
                 f'Optuna\'s fANOVA importance of each varying parameter for the trials\' best {metric}: '
                 + ', '.join(f'{n} {v:.2f}' for n, v in importances.items()) + '.')


def _short(name: str, names: list[str]) -> str:
    """The last two dotted parts of a parameter path, unless another parameter ends the same way."""
    short = '.'.join(name.split('.')[-2:])
    return short if sum('.'.join(n.split('.')[-2:]) == short for n in names) == 1 else name


def _component_figures(trials: list[_Trial], prefix: str, plots: Path) -> list[_Figure]:
    keys = sorted({k for t in trials for r in t.rows for k, v in r.items()
                   if k.startswith(prefix + '_') and (_finite(v) or _numbers(v))})
    if not keys:
        return []
    figures, drawn = [], set()
    if prefix == 'dbf' and 'dbf_trained' in keys:
        figures.append(_dbf_timeline(trials, plots))
        drawn.add('dbf_trained')
    if prefix == 'dyra':
        for split in ('train', 'eval'):
            mean, std = f'dyra_{split}_sf_mean', f'dyra_{split}_sf_std'
            if mean in keys:
                figures.append(_band_plot(trials, mean, std, None, plots, f'dyra_{split}_scale_factor.png',
                                          f'DyRA {split} scale factor: per-epoch mean, band ±1 std over images.'))
                drawn |= {mean, std}
    if prefix == 'dhead' and 'dhead_gflops_avg' in keys:
        figures.append(_band_plot(trials, 'dhead_gflops_avg', 'dhead_gflops_min', 'dhead_gflops_max', plots,
                                  'dhead_gflops.png', 'Dynamic head GFLOPs per image: per-epoch mean, band '
                                  'from the epoch\'s min to max; dotted: the static head\'s GFLOPs.',
                                  full='dhead_gflops_full'))
        drawn |= {'dhead_gflops_avg', 'dhead_gflops_min', 'dhead_gflops_max', 'dhead_gflops_full'}
    hist_keys = [k for k in keys if any(_numbers(r.get(k)) for t in trials for r in t.rows)]
    for key in hist_keys:
        figures.append(_histogram(trials, key, plots))
    drawn |= set(hist_keys)
    first = {'drcnn': ['drcnn_iou_thr', 'drcnn_beta']}.get(prefix, [])
    rest = [k for k in first if k in keys] + [k for k in keys if k not in drawn and k not in first]
    if rest:
        figures.append(_grid_plot(trials, rest, plots, f'{prefix}_metrics.png',
                                  f'{COMPONENTS[prefix]} metrics per epoch, one line per trial.'))
    return figures


def _dbf_timeline(trials: list[_Trial], plots: Path) -> _Figure:
    import numpy as np

    max_epoch = max((int(x) for t in trials for x in _series(t, 'dbf_trained')[0]), default=0)
    grid = np.full((len(trials), max(max_epoch, 1)), np.nan)
    for i, t in enumerate(trials):
        for x, y in zip(*_series(t, 'dbf_trained')):
            grid[i, int(x) - 1] = y
    fig, axes = _figure(width=max(5.0, 2.5 + 0.35 * grid.shape[1]), height=1.5 + 0.3 * len(trials))
    ax = axes[0, 0]
    image = ax.imshow(np.ma.masked_invalid(grid), aspect='auto', cmap='viridis', vmin=0.0, vmax=1.0,
                      interpolation='nearest', extent=(0.5, grid.shape[1] + 0.5, len(trials) - 0.5, -0.5))
    ax.set_yticks(range(len(trials)), [t.record.trial_id for t in trials])
    ax.set(title='DBF: share of the epoch with the backbone trained')
    _epoch_axis(ax)
    fig.colorbar(image, ax=ax, label='1 trained, 0 frozen')
    return _save(fig, plots, 'dbf_timeline.png',
                 'DBF freeze timeline: one row per trial, one cell per epoch, coloured by the share of the '
                 'epoch\'s iterations in which the backbone trained (dbf_trained); blank: epoch not run.')


def _band_plot(trials, centre, low, high, plots, name, caption, full=None) -> _Figure:
    fig, axes = _figure()
    ax = axes[0, 0]
    for t in trials:
        x, y = _series(t, centre)
        if not x:
            continue
        ax.plot(x, y, marker='o', color=t.color, label=t.record.trial_id)
        rows = [r for r in t.rows if _finite(r.get(centre))]
        if high is None and all(_finite(r.get(low)) for r in rows):  # low is a std around the centre
            spread = [float(r[low]) for r in rows]
            ax.fill_between(x, [a - s for a, s in zip(y, spread)], [a + s for a, s in zip(y, spread)],
                            color=t.color, alpha=0.2)
        elif high is not None and all(_finite(r.get(low)) and _finite(r.get(high)) for r in rows):
            ax.fill_between(x, [float(r[low]) for r in rows], [float(r[high]) for r in rows], color=t.color, alpha=0.2)
        if full is not None:
            fx, fy = _series(t, full)
            ax.plot(fx, fy, linestyle=':', color=t.color)
    ax.set(ylabel=centre, title=f'{centre} per epoch')
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    _legend(ax, trials)
    return _save(fig, plots, name, caption)


def _histogram(trials, key, plots) -> _Figure:
    fig, axes = _figure()
    ax = axes[0, 0]
    for t in trials:
        lists = [r[key] for r in t.rows if _numbers(r.get(key))]
        if lists:
            ax.hist([float(v) for v in lists[-1]], bins=30, alpha=0.5, color=t.color, label=t.record.trial_id)
    ax.set(xlabel=key, ylabel='count', title=f'{key}: last reported epoch')
    _legend(ax, trials)
    return _save(fig, plots, f'{key}_histogram.png', f'Histogram of the per-item values of {key} in each '
                 'trial\'s last reported epoch.')


def _grid_plot(trials, keys, plots, name, caption) -> _Figure:
    cols = min(len(keys), 2)
    rows = math.ceil(len(keys) / cols)
    fig, axes = _figure(width=4.5 * cols, height=3.0 * rows, rows=rows, cols=cols)
    for index, key in enumerate(keys):
        ax = axes[index // cols, index % cols]
        for t in trials:
            x, y = _series(t, key)
            if x:
                ax.plot(x, y, marker='o', color=t.color, label=t.record.trial_id)
        ax.set(title=key)
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
    for index in range(len(keys), rows * cols):
        axes[index // cols, index % cols].set_visible(False)
    _legend(axes[0, 0], trials)
    return _save(fig, plots, name, caption)


# ---------------------------------------------------------------- HTML

_CSS = ('body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}'
        'table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;'
        'font-size:90%}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}'
        'figure{margin:1em 0}figcaption{color:#555;font-size:90%}.note{color:#a60}.failed{color:#b00}')


def _html(experiment, config, records, metric, mode, trials, sections) -> str:
    from search.results import best_record

    e = html.escape
    best = best_record(records, mode)
    counts = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    failures = [r for r in records if r.status == 'failed']
    objectives = _objectives(config, metric)
    header = [('experiment', str(experiment)), ('space', str(config['space'])), ('metric', f'{metric} ({mode})'),
              ('trials', f'{len(records)} (' + ', '.join(f'{n} {s}' for s, n in sorted(counts.items())) + ')'),
              ('failures', str(len(failures)))]
    if objectives:
        header.append(('objectives', ', '.join(objectives)))
    if best is not None:
        header.append(('best trial', f'{best.trial_id}: {metric} = {best.best} at epoch {best.best_epoch}'))
    out = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
           f'<title>DynTune report: {e(experiment.name)}</title><style>{_CSS}</style></head><body>',
           f'<h1>DynTune report: {e(experiment.name)}</h1>', '<table>']
    out += [f'<tr><th>{e(k)}</th><td>{e(v)}</td></tr>' for k, v in header]
    out.append('</table>')
    if not records:
        out.append('<p class="note">No trial was recorded in this folder (no Ray Tune experiment state).</p>')
    if failures:
        out.append('<h2>Failures</h2><ul>')
        out += [f'<li class="failed"><b>{e(r.trial_id)}</b> after {r.epochs} epoch(s): {e(r.error or "failed")}</li>'
                for r in failures]
        out.append('</ul>')
    if best is not None:
        out.append(f'<h2>Best trial {e(best.trial_id)}</h2><table><tr><th>parameter</th><th>value</th></tr>')
        out += [f'<tr><td>{e(k)}</td><td>{e(_fmt(v))}</td></tr>' for k, v in sorted(best.params.items())]
        out.append('</table>')
    if records:
        out.append(_trials_table(records, metric))
    for title, figures, note in sections:
        out.append(f'<h2>{e(title)}</h2>')
        if note:
            out.append(f'<p class="note">{e(note)}</p>')
        out += [f'<figure><img src="{e(f.file)}" alt="{e(title)}"><figcaption>{e(f.caption)}</figcaption></figure>'
                for f in figures]
    out.append('</body></html>')
    return '\n'.join(out) + '\n'


def _trials_table(records: list[TrialRecord], metric: str) -> str:
    e = html.escape
    keys = sorted({k for r in records for k in r.params})
    names = [_short(k, keys) for k in keys]
    head = ['trial', 'status', 'epochs', f'best {metric}', 'best epoch', 'compute s',
            *names]
    rows = ['<h2>Trials</h2><table><tr>' + ''.join(f'<th>{e(h)}</th>' for h in head) + '</tr>']
    for r in records:
        if r.status == 'not started':  # counted in the header; a row each would bury the trials that ran
            continue
        cells = [r.trial_id, r.status, r.epochs, r.best, r.best_epoch, round(r.train_seconds, 1),
                 *[r.params.get(k, '') for k in keys]]
        rows.append('<tr>' + ''.join(f'<td>{e(_fmt(c))}</td>' for c in cells) + '</tr>')
    rows.append('</table>')
    return '\n'.join(rows)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f'{value:.4g}'
    return '' if value is None else str(value)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(_finite(v) for v in value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('experiment', type=Path, help='the experiment folder (experiment.dir/experiment.name)')
    args = parser.parse_args(argv)
    try:
        out = write_report(args.experiment)
    except UsageError as err:
        print(f'report: error: {err}', file=sys.stderr)
        return 2
    print(f'written: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
