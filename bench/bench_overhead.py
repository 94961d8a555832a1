"""Benchmark of the search's overhead: N trials through ``search/run.py`` against the same N as plain mmdet runs.

One run does both, one after the other, on the same machine:

1. ``search``: ``python search/run.py space=SPACE scheduler=fifo num_samples=N ...`` in a subprocess
   (Ray started by the search itself, dashboard off, ``cpus_per_trial`` CPUs per trial);
2. ``plain``: every trial's own ``trial_config.py`` (the exact mmdet config it trained, with its seed)
   trained by mmdet's ``tools/train.py`` in a fresh process, one after another, with the trial's thread
   count (``OMP_NUM_THREADS``).

The figures (``C`` = concurrent trials = min(N, CPU cores / cpus_per_trial)):

* ``efficiency_time_total`` = sum of the trials' ``time_total_s`` / (``tuner_wall`` x C). ``time_total_s``
  is Tune's own clock of a trial: from its function's start to its last report, so it includes building
  the model and data, every evaluation and checkpoint; ``tuner_wall`` is the driver's clock from creating
  the Tuner to the written results (summary.json ``wall_seconds``), so Ray's start is excluded.
* ``efficiency_compute`` = the same with the trials' ``compute_seconds`` (training epochs only, the
  clock of ``EpochCostHook``; evaluation and checkpoints excluded).
* ``efficiency_vs_plain`` = sum of the plain mmdet runs' process wall times / (``search_wall`` x C),
  where ``search_wall`` is the whole ``search/run.py`` command (imports, Ray start, dry run included):
  how much of plain mmdet's work per core the search gets done.
* ``search_over_sequential`` = ``search_wall`` / sum of the plain runs' walls (0.5 is a perfect
  2-trial search on 2 idle cores).

The machine load average is recorded at the start and the end. The embedded dataset is generated
before any clock starts.

Usage::

    python bench/bench_overhead.py --num-samples 2 --max-epochs 2 --num-train 60 --num-val 20
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MMDET_TRAIN = 'mmdet/.mim/tools/train.py'  # mmdet's own tools/train.py, shipped inside its wheel


def mmdet_train_script() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec('mmdet').origin).parent.parent / MMDET_TRAIN


def prepare_embedded(num_train: int, num_val: int) -> None:
    """Generate the embedded dataset of these sizes now, so that no benchmark clock includes it."""
    sys.path.insert(0, str(REPO))
    from search.data import ensure_embedded_dataset

    ensure_embedded_dataset(seed=0, num_train=num_train, num_val=num_val, min_size=256, max_size=384)


def start_search(overrides: list[str], experiment_dir: Path, name: str, log: Path) -> subprocess.Popen:
    """Start ``search/run.py`` with ``overrides`` into ``experiment_dir/name``; its output goes to ``log``.

    Benchmarks measure the searched trials alone: no reference trial unless ``overrides`` ask for one.
    """
    reference = [] if any(o.startswith('reference=') for o in overrides) else ['reference=false']
    command = [sys.executable, str(REPO / 'search' / 'run.py'), *overrides, *reference,
               f'experiment.dir={experiment_dir}', f'experiment.name={name}', 'dashboard=false', 'ray.verbose=0']
    return subprocess.Popen(command, cwd=REPO, stdout=log.open('w'), stderr=subprocess.STDOUT)


def start_plain_mmdet(config: Path, work_dir: Path, threads: int, log: Path) -> subprocess.Popen:
    """Start mmdet's ``tools/train.py`` on ``config`` with the config's own seed and ``threads`` threads."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, str(mmdet_train_script()), str(config), '--work-dir', str(work_dir),
               '--seed', str(config_seed(config))]
    return subprocess.Popen(command, cwd=work_dir.parent, env=env, stdout=log.open('w'), stderr=subprocess.STDOUT)


def wait(process: subprocess.Popen, what: str, log: Path) -> None:
    if process.wait() != 0:
        raise SystemExit(f'{what} failed with exit code {process.returncode}; see {log}')


def config_seed(config: Path) -> int:
    """The ``seed`` of an mmdet config file: tools/train.py draws a random one unless given ``--seed``."""
    from mmcv import Config

    return int(Config.fromfile(str(config), import_custom_modules=False).seed)


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if p.is_dir() and (p / 'result.json').is_file())


def last_result(trial_dir: Path) -> dict:
    return json.loads((trial_dir / 'result.json').read_text().splitlines()[-1])


def add_output_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """Where a ``kind`` benchmark keeps its runs and writes its figures (see :func:`new_run`)."""
    parser.add_argument('--work-dir', type=Path, default=REPO / 'experiments' / 'bench',
                        help=f'folder of the runs (a new {kind}-<time> folder inside)')
    parser.add_argument('--out', type=Path, help=f'JSON of the figures (default: WORK_DIR/{kind}-<time>.json)')


def new_run(args: argparse.Namespace, kind: str) -> tuple[Path, Path]:
    """(a new, empty run folder, the JSON path of its figures) of a ``kind`` benchmark."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    root = (args.work_dir / f'{kind}-{stamp}').resolve()
    root.mkdir(parents=True)
    return root, args.out or args.work_dir / f'{kind}-{stamp}.json'


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--space', default='baseline')
    parser.add_argument('--num-samples', type=int, default=2)
    parser.add_argument('--max-epochs', type=int, default=2)
    parser.add_argument('--num-train', type=int, default=60)
    parser.add_argument('--num-val', type=int, default=20)
    parser.add_argument('--cpus-per-trial', type=int, default=1)
    add_output_arguments(parser, 'overhead')
    args = parser.parse_args(argv)

    root, out = new_run(args, 'overhead')
    overrides = [f'space={args.space}', 'scheduler=fifo', f'num_samples={args.num_samples}',
                 f'max_epochs={args.max_epochs}', f'data.num_train={args.num_train}', f'data.num_val={args.num_val}',
                 f'cpus_per_trial={args.cpus_per_trial}']
    prepare_embedded(args.num_train, args.num_val)
    load_start = load_average()

    started = time.perf_counter()
    log = root / 'search.log'
    wait(start_search(overrides, root, 'search', log), 'the search', log)
    search_wall = time.perf_counter() - started
    experiment = root / 'search'
    tuner_wall = json.loads((experiment / 'summary.json').read_text())['wall_seconds']

    trials = []
    for trial_dir in trial_dirs(experiment):
        result = last_result(trial_dir)
        work_dir = root / f'plain-{len(trials)}'
        log = root / f'plain-{len(trials)}.log'
        started = time.perf_counter()
        wait(start_plain_mmdet(trial_dir / 'trial_config.py', work_dir, args.cpus_per_trial, log),
             'mmdet tools/train.py', log)
        trials.append(dict(trial=result['trial_id'], epochs=result['epoch'],
                           time_total_s=result['time_total_s'], compute_seconds=result['compute_seconds'],
                           plain_mmdet_wall_s=time.perf_counter() - started))
    if len(trials) != args.num_samples or any(t['epochs'] != args.max_epochs for t in trials):
        raise SystemExit(f'expected {args.num_samples} trials of {args.max_epochs} epochs, got {trials}')

    concurrent = min(args.num_samples, (os.cpu_count() or 1) // args.cpus_per_trial)
    plain_wall = sum(t['plain_mmdet_wall_s'] for t in trials)
    figures = dict(
        efficiency_time_total=sum(t['time_total_s'] for t in trials) / (tuner_wall * concurrent),
        efficiency_compute=sum(t['compute_seconds'] for t in trials) / (tuner_wall * concurrent),
        efficiency_vs_plain=plain_wall / (search_wall * concurrent),
        search_over_sequential=search_wall / plain_wall)
    report = dict(command=' '.join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
                  overrides=overrides, cpu_count=os.cpu_count(), concurrent_trials=concurrent,
                  load_average_start=load_start, load_average_end=load_average(), search_wall_s=search_wall,
                  tuner_wall_s=tuner_wall, sequential_plain_mmdet_wall_s=plain_wall, trials=trials,
                  figures=figures, folder=str(root))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n')

    print(f"{'trial':>8} {'time_total_s':>13} {'compute_s':>10} {'plain mmdet s':>14}")
    for t in trials:
        print(f"{t['trial']:>8} {t['time_total_s']:13.1f} {t['compute_seconds']:10.1f} {t['plain_mmdet_wall_s']:14.1f}")
    print(f'search command wall {search_wall:.1f} s, Tuner wall {tuner_wall:.1f} s, '
          f'sequential plain mmdet {plain_wall:.1f} s, {concurrent} concurrent trials')
    for key, value in figures.items():
        print(f'{key:>24} {value:.3f}')
    print(f'load average (1/5/15 min) start {load_start}, end {report["load_average_end"]}; written: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
