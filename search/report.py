"""Write an HTML report with PNG plots for an experiment folder.

    python search/report.py EXPERIMENT_DIR      # writes EXPERIMENT_DIR/report.html and EXPERIMENT_DIR/report/*.png
    python search/report.py s3://bucket/prefix/NAME   # an experiment in storage: the same, uploaded there

The report reads only what the search stored (``search_config.yaml``, Ray Tune's experiment state,
each trial's ``result.json`` and ``component_metrics.json``), so it works on a finished, interrupted
or copied folder. It shows the search's header (space, metric, trials, failures with their reason,
the best trial), learning curves, the best metric against cumulative compute, the Pareto front of a
two-objective search, Optuna's parameter importance, and a section per component with the per-epoch
trajectories of its metrics, drawn as the component declared them (``dyncomponents.protocol``; this
module names no component). What each plot shows: docs/report.md.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

if __name__ == '__main__':  # run as a script: import the package from the repo root, not from search/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from search.errors import UsageError, is_number
from search.results import (TrialRecord, best_record, compute_timeline, load_records, pareto_optimal,
                            read_component_metrics, read_search_config, result_rows)

REPORT_FILE = 'report.html'
PLOTS_DIR = 'report'
# Below this many finished trials the report says importance cannot be estimated yet. In simulated searches
# where one of 6 parameters decides the score, fANOVA ranks it first in 5-35 % of searches of 3-5 trials and in
# over 80 % from 10 on (bench/bench_importance.py, docs/report.md).
MIN_IMPORTANCE_TRIALS = 10
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
    return pareto_optimal(points, directions)


def write_report(experiment: Path) -> Path:
    """Write ``report.html`` and its PNGs (in ``report/``) for an experiment folder; return the HTML path.

    Raises:
        UsageError: ``experiment`` is not a DynTune experiment folder.
    """
    experiment = Path(experiment).resolve()
    config = read_search_config(experiment)
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
        for title, figures in _component_sections(trials, plots):
            sections.append((title, figures, ''))
    page = _html(experiment, config, records, metric, mode, trials, sections)
    out = experiment / REPORT_FILE
    tmp = out.with_suffix('.html.tmp')
    tmp.write_text(page, encoding='utf-8')
    tmp.replace(out)
    return out


def param_importance(records: list[TrialRecord], space: dict, mode: str,
                     min_trials: int = MIN_IMPORTANCE_TRIALS) -> tuple[dict[str, float] | None, str]:
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
        min_trials (int): below this many finished trials importance is not estimated
            (:data:`MIN_IMPORTANCE_TRIALS`; bench/bench_importance.py measures other values).

    Returns:
        tuple: (``{parameter: importance}`` summing to 1, highest first, ``''``) or (``None``, the
        reason it was skipped).
    """
    import optuna

    used = [r for r in records if r.status in ('completed', 'stopped') and r.best is not None and not r.reference]
    if len(used) < min_trials:
        return None, (f'not estimated yet: importance needs at least {min_trials} finished trials with a score, '
                      f'this experiment has {len(used)}; from fewer, fANOVA ranks the parameters mostly by chance '
                      f'(docs/report.md)')
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


def _space_params(config: dict) -> dict:
    """The space's distributions by parameter path; empty if its file is gone or changed shape."""
    from search.space import load_space

    try:
        # A factor distribution's bounds are not values; the trials' own values give the range instead.
        return {k: v for k, v in load_space(str(config['space'])).params.items() if not v.factor}
    except UsageError:
        return {}


def _objectives(config: dict, metric: str) -> list[str]:
    """The objectives of a multi-objective search ([] for a single metric)."""
    from search.spec import objectives_and_modes

    objectives = objectives_and_modes(config)[0]
    return list(objectives) if len(objectives) > 1 else []


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
    pairs = [(x, float(r[key])) for x, r in zip(_epochs(trial.rows), trial.rows) if is_number(r.get(key))]
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


def _best_vs_compute(trials: list[_Trial], metric: str, mode: str, plots: Path) -> _Figure:
    timeline = [p for p in compute_timeline({t.record.trial_id: t.rows for t in trials}, metric, mode)
                if p[1] is not None]
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
              and all(is_number(t.rows[-1].get(o)) for o in objectives)]
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


def _component_sections(trials: list[_Trial], plots: Path) -> list[tuple[str, list[_Figure]]]:
    """(component, figures) for each component some trial declared and reported, in the order first seen.

    Each declared plot whose metrics some trial reported is drawn as declared; the component's other
    reported metrics follow in one grid of lines per epoch.
    """
    declarations = {}
    for t in trials:
        for declaration in read_component_metrics(Path(t.record.path)):
            declarations.setdefault(declaration['component'], declaration)
    sections = []
    for component, declaration in declarations.items():
        units = {m['name']: m['unit'] for m in declaration['metrics']}
        reported = {k for t in trials for r in t.rows for k, v in r.items() if k in units and is_number(v)}
        figures, drawn = [], set()
        for plot in declaration.get('plots', []):
            if reported & set(plot['metrics']):
                figures.append(_declared_plot(trials, plot, units, plots))
                drawn |= {*plot['metrics'], *plot.get('band', ()), plot.get('spread'), plot.get('reference')}
        rest = [name for name in units if name in reported and name not in drawn]
        if rest:
            figures.append(_grid_plot(trials, rest, units, plots, f'{_slug(component)}_metrics.png',
                                      f'{component} metrics per epoch, one line per trial.'))
        if figures:
            sections.append((component, figures))
    return sections


def _declared_plot(trials: list[_Trial], plot: dict, units: dict[str, str], plots: Path) -> _Figure:
    """One figure drawn as a component's ``dyncomponents.protocol.Plot`` (stored as a dict) says."""
    metrics, style = list(plot['metrics']), plot.get('style', 'lines')
    name = f'{metrics[0]}_{style}.png'
    caption = plot.get('caption') or f'{", ".join(metrics)} per epoch, one line per trial.'
    ylabel = plot.get('ylabel') or _label(metrics[0], units)
    title = plot.get('title') or ', '.join(metrics)
    if style == 'timeline':
        return _timeline(trials, metrics[0], plots, name, title, ylabel, caption)
    if style == 'band':
        band = list(plot.get('band') or [])
        return _band_plot(trials, metrics[0], plots, name, caption, title, ylabel, low_high=band or None,
                          spread=plot.get('spread') or None, reference=plot.get('reference') or None)
    return _grid_plot(trials, metrics, units, plots, name, caption, steps=style == 'steps', title=title)


def _label(metric: str, units: dict[str, str]) -> str:
    return f'{metric} ({units[metric]})' if units.get(metric) else metric


def _slug(text: str) -> str:
    return re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')


def _timeline(trials: list[_Trial], metric: str, plots: Path, name: str, title: str, label: str,
              caption: str) -> _Figure:
    """A trials x epochs heat map of ``metric`` (in [0, 1]); blank where a trial did not run the epoch."""
    import numpy as np

    max_epoch = max((int(x) for t in trials for x in _series(t, metric)[0]), default=0)
    grid = np.full((len(trials), max(max_epoch, 1)), np.nan)
    for i, t in enumerate(trials):
        for x, y in zip(*_series(t, metric)):
            grid[i, int(x) - 1] = y
    fig, axes = _figure(width=max(5.0, 2.5 + 0.35 * grid.shape[1]), height=1.5 + 0.3 * len(trials))
    ax = axes[0, 0]
    image = ax.imshow(np.ma.masked_invalid(grid), aspect='auto', cmap='viridis', vmin=0.0, vmax=1.0,
                      interpolation='nearest', extent=(0.5, grid.shape[1] + 0.5, len(trials) - 0.5, -0.5))
    ax.set_yticks(range(len(trials)), [t.record.trial_id for t in trials])
    ax.set(title=title)
    _epoch_axis(ax)
    fig.colorbar(image, ax=ax, label=label)
    return _save(fig, plots, name, caption)


def _band_plot(trials, centre, plots, name, caption, title, ylabel, low_high=None, spread=None,
               reference=None) -> _Figure:
    """``centre`` per epoch with a band between two metrics (``low_high``) or of +-``spread``, ``reference`` dotted."""
    fig, axes = _figure()
    ax = axes[0, 0]
    for t in trials:
        x, y = _series(t, centre)
        if not x:
            continue
        ax.plot(x, y, marker='o', color=t.color, label=t.record.trial_id)
        rows = [r for r in t.rows if is_number(r.get(centre))]
        if spread and all(is_number(r.get(spread)) for r in rows):
            width = [float(r[spread]) for r in rows]
            ax.fill_between(x, [a - w for a, w in zip(y, width)], [a + w for a, w in zip(y, width)],
                            color=t.color, alpha=0.2)
        elif low_high and all(is_number(r.get(low_high[0])) and is_number(r.get(low_high[1])) for r in rows):
            ax.fill_between(x, [float(r[low_high[0]]) for r in rows], [float(r[low_high[1]]) for r in rows],
                            color=t.color, alpha=0.2)
        if reference:
            fx, fy = _series(t, reference)
            ax.plot(fx, fy, linestyle=':', color=t.color)
    ax.set(ylabel=ylabel, title=title)
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    _legend(ax, trials)
    return _save(fig, plots, name, caption)


def _grid_plot(trials, keys, units, plots, name, caption, steps=False, title=None) -> _Figure:
    """One panel per metric of ``keys``, one line per trial (held steps with ``steps``)."""
    cols = min(len(keys), 2)
    rows = math.ceil(len(keys) / cols)
    fig, axes = _figure(width=4.5 * cols, height=3.0 * rows, rows=rows, cols=cols)
    for index, key in enumerate(keys):
        ax = axes[index // cols, index % cols]
        for t in trials:
            x, y = _series(t, key)
            if x and steps:
                ax.step(x, y, where='post', marker='o', color=t.color, label=t.record.trial_id)
            elif x:
                ax.plot(x, y, marker='o', color=t.color, label=t.record.trial_id)
        ax.set(title=key, ylabel=units.get(key, ''))
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
    for index in range(len(keys), rows * cols):
        axes[index // cols, index % cols].set_visible(False)
    if title and len(keys) > 1:
        fig.suptitle(title)
    _legend(axes[0, 0], trials)
    return _save(fig, plots, name, caption)


# ---------------------------------------------------------------- HTML

_CSS = ('body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}'
        'table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;'
        'font-size:90%}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}'
        'figure{margin:1em 0}figcaption{color:#555;font-size:90%}.note{color:#a60}.partial{color:#a60;font-weight:bold}.failed{color:#b00}')


def partial_reason(summary: dict, records: list[TrialRecord]) -> str | None:
    """Why the experiment's results are partial: summary.json's ``partial_reason``, else unfinished trials; or None."""
    if summary.get('partial'):
        return str(summary.get('partial_reason') or 'unfinished')
    if any(r.status == 'running' for r in records):
        return 'unfinished: some trials were still running'
    return None


def _html(experiment, config, records, metric, mode, trials, sections) -> str:
    from search.endings import resume_command

    e = html.escape
    best = best_record(records, mode)
    summary = _summary(experiment)
    partial = partial_reason(summary, records)
    counts = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    failures = [r for r in records if r.status == 'failed']
    objectives = _objectives(config, metric)
    header = [('results', f'PARTIAL: the search was {partial}' if partial else 'complete'),
              ('experiment', str(experiment)), ('space', str(config['space'])), ('metric', f'{metric} ({mode})'),
              ('trials', f'{len(records)} (' + ', '.join(f'{n} {s}' for s, n in sorted(counts.items())) + ')'),
              ('failures', str(len(failures)))]
    if objectives:
        header.append(('objectives', ', '.join(objectives)))
    if best is not None:
        header.append(('best trial' + (' so far' if partial else ''),
                       f'{best.trial_id}: {metric} = {best.best} at epoch {best.best_epoch}'))
    if summary.get('gain') or summary.get('reference'):
        header.append(('against your config', gain_sentence(summary, metric)))
    title = f'DynTune report: {e(experiment.name)}' + (' (partial results)' if partial else '')
    out = ['<!DOCTYPE html>', '<html><head><meta charset="utf-8">',
           f'<title>{title}</title><style>{_CSS}</style></head><body>', f'<h1>{title}</h1>']
    if partial:
        out.append(f'<p class="partial">Partial results: the search was {e(partial)}. What follows is what its trials '
                   f'reported until then. Resume it with <code>{e(resume_command(experiment))}</code></p>')
    out.append('<table>')
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
    if summary.get('reference') or summary.get('test'):
        out.append(_validation_and_test(summary, metric))
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


def _summary(experiment: Path) -> dict:
    path = experiment / 'summary.json'
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def gain_sentence(summary: dict, metric: str) -> str:
    """The search's answer in words: ``best +0.031 bbox_mAP over your config on validation, +0.020 on test``."""
    gain = summary.get('gain') or {}
    if not gain:
        reference = summary.get('reference') or {}
        return f"no gain measured (reference trial {reference.get('status', 'missing')})"
    parts = [f"{gain[split]:+.3f} {metric} over your config on {split}" if i == 0 else f"{gain[split]:+.3f} on {split}"
             for i, split in enumerate(s for s in ('validation', 'test') if s in gain)]
    return 'best ' + ', '.join(parts)


def _validation_and_test(summary: dict, metric: str) -> str:
    """Your config (the reference trial) and the best, on validation and on the test split, side by side."""
    e = html.escape
    reference, best, test = summary.get('reference') or {}, summary.get('best') or {}, summary.get('test') or {}
    rows = [('validation (best epoch)', reference.get(metric), best.get(metric), (summary.get('gain') or {}).get('validation'))]
    if test:
        rows.append(('test (once, after the search)', (test.get('reference') or {}).get(metric),
                     (test.get('best') or {}).get(metric), (summary.get('gain') or {}).get('test')))
    out = [f'<h2>Your config against the best</h2><table><tr><th>{e(metric)}</th><th>your config (reference trial)</th>'
           '<th>best</th><th>gain</th></tr>']
    out += [f'<tr><td>{e(name)}</td>' + ''.join(f'<td>{e(_fmt(v))}</td>' for v in values) + '</tr>'
            for name, *values in rows]
    out.append('</table><p class="note">The validation score of the best of many trials is optimistic: the search '
               'picked it for scoring high on that very data, noise included. The test split, never seen by the '
               'search, tells what to expect.</p>')
    return '\n'.join(out)


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
        cells = [r.trial_id + (' (reference)' if r.reference else ''), r.status, r.epochs, r.best, r.best_epoch,
                 round(r.compute_seconds, 1),
                 *[r.params.get(k, '') for k in keys]]
        rows.append('<tr>' + ''.join(f'<td>{e(_fmt(c))}</td>' for c in cells) + '</tr>')
    rows.append('</table>')
    return '\n'.join(rows)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f'{value:.4g}'
    return '' if value is None else str(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('experiment', help='the experiment folder or storage URI (experiment.dir/experiment.name)')
    args = parser.parse_args(argv)
    from search.storage import join_uri, open_experiment

    try:
        store = open_experiment(args.experiment)  # a URI: a local copy, the report uploaded beside the results
        out = write_report(store.local)
        store.push(REPORT_FILE, PLOTS_DIR)
    except UsageError as err:
        print(f'report: error: {err}', file=sys.stderr)
        return 2
    print(f'written: {join_uri(store.display, REPORT_FILE) if store.remote else out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
