"""Export a trial of an experiment as files that plain MMDetection uses, and write the result files.

    python search/export.py EXPERIMENT_DIR              # refresh trials.csv, summary.json and best/
    python search/export.py EXPERIMENT_DIR --trial ID   # export that trial into EXPERIMENT_DIR/trial-ID/

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
from search.files import SPEC_FILE, TRIAL_CONFIG
from search.results import (TrialRecord, best_record, load_records, mark_pareto, write_pareto_csv,
                            write_summary, write_trials_csv)
from search.spec import objectives_of



def export_trial(record: TrialRecord, out: Path, metric: str) -> Path:
    """Write best_config.py, best_params.yaml and best.pth of ``record`` into ``out``."""
    from mmcv import Config

    trial_config = Path(record.path) / TRIAL_CONFIG
    if not trial_config.is_file():
        raise UsageError(f'trial {record.trial_id} has no {TRIAL_CONFIG} (it failed before training started)')
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config.fromfile(str(trial_config))
    cfg.load_from = None
    cfg.resume_from = None
    origin = (f'trial {record.trial_id}: {metric}={record.best} at epoch {record.best_epoch} '
              f'({record.status}, {record.epochs} epochs); from {record.path}')
    (out / 'best_config.py').write_text(
        f'# DynTune export of {origin}\n'
        f'# Train it with mmdet\'s tools/train.py (with this repository installed, for custom_imports);\n'
        f'# best.pth beside it holds the trained weights.\n' + cfg.pretty_text)
    (out / 'best_params.yaml').write_text(f'# {origin}\n' + yaml.safe_dump(record.params, sort_keys=True))
    if record.best_checkpoint:
        shutil.copyfile(record.best_checkpoint, out / 'best.pth')
    return out


def export_experiment(experiment: Path, wall_seconds: float | None = None) -> dict:
    """Write trials.csv, summary.json and best/ for an experiment folder; return the summary."""
    experiment = Path(experiment).resolve()
    config = _search_config(experiment)
    objectives = objectives_of(config)
    metric, mode = objectives[0], config['mode']
    records = load_records(experiment, metric, mode)
    pareto = None
    if len(objectives) > 1:
        modes = (mode,) + ('min',) * (len(objectives) - 1)
        pareto = mark_pareto(records, objectives, modes)
        write_pareto_csv(pareto, experiment / 'pareto.csv', objectives)
    write_trials_csv(records, experiment / 'trials.csv', metric, pareto)
    if wall_seconds is None:
        previous = experiment / 'summary.json'
        wall_seconds = json.loads(previous.read_text()).get('wall_seconds', 0.0) if previous.is_file() else 0.0
    summary = write_summary(records, experiment / 'summary.json', space=config['space'], metric=metric, mode=mode,
                            wall_seconds=wall_seconds, experiment=experiment, pareto=pareto, objectives=objectives)
    best = best_record(records, mode)
    if best is not None:
        export_trial(best, experiment / 'best', metric)
    return summary


def export_finalists(experiment: Path, finalists: list[dict], wall_seconds: float) -> dict:
    """Summarise the finalize/ re-trainings (mean and spread per configuration) and export the best mean."""
    import statistics

    config = _search_config(experiment)
    metric, mode = objectives_of(config)[0], config['mode']
    runs = load_records(experiment / 'finalize', metric, mode)
    rows = []
    for index, params in enumerate(finalists):
        mine = [r for r in runs if r.params.get('finalist') == index and r.best is not None]
        scores = [r.best for r in mine]
        rows.append(dict(params=params, seeds=[r.params.get('seed') for r in mine], scores=scores,
                         mean=statistics.fmean(scores) if scores else None,
                         std=statistics.stdev(scores) if len(scores) > 1 else 0.0, runs=mine))
    scored = [row for row in rows if row['mean'] is not None]
    summary = export_experiment(experiment, wall_seconds=wall_seconds)
    summary['finalize'] = [{k: v for k, v in row.items() if k != 'runs'} for row in rows]
    if scored:
        winner = (max if mode == 'max' else min)(scored, key=lambda row: row['mean'])
        run = best_record(winner['runs'], mode)
        run.params = dict(winner['params'])
        export_trial(run, experiment / 'best', metric)
        summary['best'] = {'trial_id': run.trial_id, 'params': winner['params'], metric: winner['mean'],
                           f'{metric}_std': winner['std'], 'epoch': run.best_epoch, 'seeds': winner['seeds']}
    (experiment / 'summary.json').write_text(json.dumps(summary, indent=2, default=str) + '\n')
    return summary


def _search_config(experiment: Path) -> dict:
    path = experiment / SPEC_FILE
    if not path.is_file():
        raise UsageError(f'{experiment} is not a DynTune experiment folder (no {SPEC_FILE})')
    return yaml.safe_load(path.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('experiment', type=Path, help='the experiment folder (experiment.dir/experiment.name)')
    parser.add_argument('--trial', help='export this trial id instead of refreshing the best')
    parser.add_argument('--out', type=Path, help='output folder (default: EXPERIMENT/trial-ID)')
    args = parser.parse_args(argv)
    try:
        experiment = args.experiment.resolve()
        if not args.trial:
            summary = export_experiment(experiment)
            print(f"best: {json.dumps(summary['best'])}\nwritten: {experiment / 'best'}")
            return 0
        config = _search_config(experiment)
        records = {r.trial_id: r for r in load_records(experiment, objectives_of(config)[0], config['mode'])}
        if args.trial not in records:
            raise UsageError(f"no trial '{args.trial}' in {experiment}: choose one of {', '.join(records)}")
        out = export_trial(records[args.trial], args.out or experiment / f'trial-{args.trial}', objectives_of(config)[0])
        print(f'written: {out}')
        return 0
    except UsageError as err:
        print(f'export: error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
