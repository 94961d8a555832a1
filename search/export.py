"""Export a trial of an experiment as files that plain MMDetection uses, and write the result files.

    python search/export.py EXPERIMENT_DIR              # refresh trials.csv, summary.json and best/
    python search/export.py EXPERIMENT_DIR --trial ID   # export that trial into EXPERIMENT_DIR/trial-ID/
    python search/export.py s3://bucket/prefix/NAME     # an experiment in storage: the same, uploaded there

An export folder holds ``best_config.py`` (the exact mmdet 2.x config the trial trained with; it
loads DynTune's plugins through ``custom_imports``), ``best_params.yaml`` (the sampled parameters,
with a header saying where they came from) and ``best.pth`` (the trial's best-scoring checkpoint).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

if __name__ == '__main__':  # run as a script: import the package from the repo root, not from search/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import yaml

from search.errors import UsageError
from search.files import TRIAL_CONFIG
from search.results import (TrialRecord, best_record, gains, load_records, mark_pareto, read_search_config,
                            write_pareto_csv, write_summary, write_trials_csv)
from search.spec import objectives_and_modes



def export_trial(record: TrialRecord, out: Path, metric: str, partial: str | None = None, fetch=Path) -> Path:
    """Write best_config.py, best_params.yaml and best.pth of ``record`` into ``out``.

    ``partial``: why the search is unfinished; the files' headers then say the best is of partial results.
    ``fetch``: the local file of a stored path (``ExperimentStore.fetch`` for an experiment in a URI, whose
    checkpoints stay in the storage until read).
    """
    from mmcv import Config

    trial_config = Path(record.path) / TRIAL_CONFIG
    if not trial_config.is_file():
        raise UsageError(f'trial {record.trial_id} has no {TRIAL_CONFIG} (it failed before training started)')
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config.fromfile(str(trial_config))
    cfg.load_from = None
    cfg.resume_from = None
    origin = (f'trial {record.trial_id}: {metric}={record.best} at epoch {record.best_epoch} '
              f'({record.status}, {record.epochs} epochs); from {record.path}'
              + (f'; PARTIAL results, the search was {partial}' if partial else ''))
    (out / 'best_config.py').write_text(
        f'# DynTune export of {origin}\n'
        f'# Train it with mmdet\'s tools/train.py (with this repository installed, for custom_imports);\n'
        f'# best.pth beside it holds the trained weights.\n' + cfg.pretty_text)
    (out / 'best_params.yaml').write_text(f'# {origin}\n' + yaml.safe_dump(record.params, sort_keys=True))
    if record.best_checkpoint:
        shutil.copyfile(fetch(record.best_checkpoint), out / 'best.pth')
    return out


def export_experiment(experiment: Path, wall_seconds: float | None = None, partial: str | None = None,
                      fetch=Path) -> dict:
    """Write trials.csv, summary.json and best/ for an experiment folder; return the summary.

    ``partial`` says why the search did not finish (``'interrupted by SIGINT'``); without it the
    results count as partial when a trial was still running (a trial that ``search_budget_s`` kept
    from starting is not unfinished: the search ended as asked). Partial results
    say so in summary.json (``partial``, ``partial_reason``) and in best/'s file headers. ``fetch``: as in
    :func:`export_trial`.
    """
    experiment = Path(experiment).resolve()
    config = read_search_config(experiment)
    objectives, modes = objectives_and_modes(config)
    metric, mode = objectives[0], modes[0]
    records = load_records(experiment, metric, mode)
    pareto = None
    if len(objectives) > 1:
        pareto = mark_pareto(records, objectives, modes)
        write_pareto_csv(pareto, experiment / 'pareto.csv', objectives)
    write_trials_csv(records, experiment / 'trials.csv', metric, pareto)
    previous_file = experiment / 'summary.json'
    previous = json.loads(previous_file.read_text()) if previous_file.is_file() else {}
    if wall_seconds is None:
        wall_seconds = previous.get('wall_seconds', 0.0)
    if partial is None and any(r.status == 'running' for r in records):  # e.g. read after the driver was killed
        partial = previous.get('partial_reason') or 'unfinished: some trials were still running'
    summary = write_summary(records, previous_file, space=config['space'], metric=metric, mode=mode,
                            wall_seconds=wall_seconds, experiment=experiment, pareto=pareto, objectives=objectives,
                            partial=partial)
    best = best_record(records, mode)
    if best is not None:
        export_trial(best, experiment / 'best', metric, partial=partial, fetch=fetch)
    return summary


def export_finalists(experiment: Path, finalists: list[dict], wall_seconds: float, partial: str | None = None,
                     fetch=Path) -> dict:
    """Summarise the finalize/ re-trainings (mean and spread per configuration) and export the best mean.

    ``fetch``: as in :func:`export_trial`.
    """
    import statistics

    config = read_search_config(experiment)
    metric, mode = objectives_and_modes(config)[0][0], config['mode']
    runs = load_records(experiment / 'finalize', metric, mode)
    rows = []
    for index, params in enumerate(finalists):
        mine = [r for r in runs if r.params.get('finalist') == index and r.best is not None]
        scores = [r.best for r in mine]
        top = best_record(mine, mode)
        rows.append(dict(index=index, params=params, seeds=[r.params.get('seed') for r in mine], scores=scores,
                         mean=statistics.fmean(scores) if scores else None,
                         std=statistics.stdev(scores) if len(scores) > 1 else 0.0, runs=mine,
                         config=str(Path(top.path) / TRIAL_CONFIG) if top else None,
                         checkpoint=top.best_checkpoint if top else None))
    scored = [row for row in rows if row['mean'] is not None]
    summary = export_experiment(experiment, wall_seconds=wall_seconds, partial=partial, fetch=fetch)
    summary['finalize'] = [{k: v for k, v in row.items() if k != 'runs'} for row in rows]
    if scored:
        winner = (max if mode == 'max' else min)(scored, key=lambda row: row['mean'])
        run = best_record(winner['runs'], mode)
        run.params = dict(winner['params'])
        export_trial(run, experiment / 'best', metric, partial=partial, fetch=fetch)
        summary['best'] = {'trial_id': run.trial_id, 'params': winner['params'], metric: winner['mean'],
                           f'{metric}_std': winner['std'], 'epoch': run.best_epoch, 'seeds': winner['seeds']}
        summary.pop('gain', None)
        summary.update({'gain': gains(summary, metric)} if gains(summary, metric) else {})
    (experiment / 'summary.json').write_text(json.dumps(summary, indent=2, default=str) + '\n')
    return summary


def read_summary(experiment: Path) -> dict:
    """The experiment's summary.json ({} before the search wrote one)."""
    path = Path(experiment) / 'summary.json'
    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('experiment', help='the experiment folder or storage URI (experiment.dir/experiment.name)')
    parser.add_argument('--trial', help='export this trial id instead of refreshing the best')
    parser.add_argument('--out', type=Path, help='output folder (default: EXPERIMENT/trial-ID)')
    args = parser.parse_args(argv)
    from search.files import RESULT_FILES
    from search.storage import join_uri, open_experiment

    try:
        store = open_experiment(args.experiment)  # a URI: a local copy, the results uploaded back
        experiment = store.local
        if not args.trial:
            summary = export_experiment(experiment, fetch=store.fetch)
            store.push(*RESULT_FILES)
            if summary['best'] is None:  # nothing was written into best/: say why, name no folder
                from search.endings import EXIT_NO_SCORE, no_score_line

                print(f'export: {no_score_line(summary)}', file=sys.stderr)
                return EXIT_NO_SCORE
            partial = f" (PARTIAL results: {summary['partial_reason']})" if summary['partial'] else ''
            print(f"best{partial}: {json.dumps(summary['best'])}\nwritten: {join_uri(store.display, 'best')}")
            return 0
        config = read_search_config(experiment)
        metric = objectives_and_modes(config)[0][0]
        records = {r.trial_id: r for r in load_records(experiment, metric, config['mode'])}
        if args.trial not in records:
            raise UsageError(f"no trial '{args.trial}' in {experiment}: choose one of {', '.join(records)}")
        out = export_trial(records[args.trial], args.out or experiment / f'trial-{args.trial}', metric,
                           fetch=store.fetch)
        if args.out is None and store.remote:
            store.push(out.name)
            out = join_uri(store.display, out.name)
        print(f'written: {out}')
        return 0
    except UsageError as err:
        print(f'export: error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
