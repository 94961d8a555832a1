"""Time ``make demo`` as a new user runs it, and what it found: the README's demo figures.

Each repeat runs ``make demo`` (the Makefile's own command: its search, with the dashboard and the
reference trial) into a new experiment folder and times it from start to exit; ``--cold`` also gives it
an empty dataset cache (``$DYNTUNE_CACHE``), so the time includes generating the built-in images. The
scores come from the demo's summary.json (``bench_gain.outcome``): reference against best, and the
best's training compute as a share of the reference's. Usage::

    python bench/bench_demo.py                    # one run with the dataset cache as it is
    python bench/bench_demo.py --repeats 2 --cold # two runs, each generating the dataset first
    python bench/bench_demo.py data.num_train=300 data.num_val=100 'train.img_scale=[320,320]'  # the full-sized data
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_gain import outcome
from bench_overhead import REPO, add_output_arguments, load_average, new_run

DEMO_BUDGET_S = 15 * 60  # README promises the demo inside 15 minutes on 2 cores


def run_demo(experiment_dir: Path, name: str, log: Path, cache: str | None, overrides: list[str]) -> float:
    """Seconds ``make demo`` took into ``experiment_dir/name``; a failed demo exits with its log."""
    env = dict(os.environ, **({'DYNTUNE_CACHE': cache} if cache else {}))
    args = ' '.join(shlex.quote(o) for o in [*overrides, f'experiment.dir={experiment_dir}', f'experiment.name={name}'])
    started = time.time()
    with log.open('w') as out:
        code = subprocess.call(['make', 'demo', f'ARGS={args}'],
                               cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f'make demo failed with exit code {code}; see {log}')
    return time.time() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=1)
    parser.add_argument('--cold', action='store_true', help='an empty dataset cache for each run')
    add_output_arguments(parser, 'demo')
    parser.add_argument('overrides', nargs='*', help="run.py overrides after the demo's own (the later one wins)")
    args = parser.parse_args(argv)

    root, out = new_run(args, 'demo')
    runs = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix='dyntune-demo-cache-') as cache:
            load = load_average()
            wall = run_demo(root, f'run{repeat}', root / f'run{repeat}.log', cache if args.cold else None,
                            args.overrides)
            found = outcome(root / f'run{repeat}')
            reference, best = found['reference'], found['best']
            runs.append(dict(wall_s=round(wall, 1), cold_cache=args.cold, load_before=load, load_after=load_average(),
                             reference=reference['validation'], best=best['validation'],
                             best_compute_share=round(best['compute_s'] / reference['compute_s'], 3),
                             reference_compute_s=reference['compute_s'], best_compute_s=best['compute_s'],
                             reference_epoch_s=round(reference['compute_s'] / reference['epochs'], 1)))
        print(json.dumps(runs[-1]), flush=True)
    out.write_text(json.dumps(dict(cpus=os.cpu_count(), budget_s=DEMO_BUDGET_S, runs=runs), indent=2) + '\n')
    walls = [r['wall_s'] for r in runs]
    print(f'make demo: {min(walls):.0f}-{max(walls):.0f} s over {len(runs)} run(s) ({"cold" if args.cold else "warm"} '
          f'dataset cache), {max(walls) / DEMO_BUDGET_S:.0%} of the 15 minutes at most; figures in {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
