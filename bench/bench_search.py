"""Benchmark of search efficiency on a real dataset: random search, ASHA variants and model-based search, same compute.

Searches of the same space on the same data, one after the other, each ``search/run.py`` with the
same ``seed`` (so the random arms draw the same sequence of configurations) and the same
``search_budget_s`` (the trials' summed ``time_total_s``: training, evaluation, checkpoints), as
many trials as that buys:

* ``random``: random search, every trial trained to its full budget (``scheduler=fifo``);
* ``asha``: Ray's ASHA with rungs in epochs (``scheduler=asha budget=epochs``);
* ``asha_cost``: cost-aware ASHA, rungs in measured training seconds (``scheduler=asha budget=compute``),
  so a trial whose schedule makes epochs cheaper (DBF's frozen epochs) reaches each rung later in epochs;
* ``asha_cost_unaware``: the same without the schedule-aware rule (``schedule_aware=false``), to measure
  what that rule costs: ASHA may then stop a trial before its schedule went through all its phases;
* ``tpe_asha``: Optuna's TPE under cost-aware, schedule-aware ASHA (``search_alg=optuna scheduler=asha
  budget=compute``): TPE learns from every rung (search/model_based.py) which configurations to try next;
* ``bohb``: BOHB (``search_alg=bohb``: Ray's TuneBOHB with its HyperBandForBOHB, budgets in epochs).

The draws of a model-based arm depend on its results, so ``--seeds`` repeats every arm over several
seeds (each seed a new set of searches, random's included) and reports per arm the median and the
spread (min-max) over the seeds of "compute to reach random's final best / random's compute", of its
final best at equal compute (the least compute any arm of that seed used), and the early-stopping
floor of every seed's random search.

Each search's curve is its best ``bbox_mAP`` so far against its cumulative compute: every reported result,
in report order, adds the time its trial used since its previous report. Reported per search: its final
best, and the compute it used until its best so far first reached random search's final best (``None``
if it never did), also as a fraction of what random search itself needed. Target: cost-aware ASHA gets
there with at most a third of random search's compute. For scale, the same fraction for an oracle that
stops every trial drawn before the winner at its first epoch (:func:`early_stopping_floor`): no
scheduler whose rungs are whole epochs can do better on the same draws.

The dataset is a fixed subset of a COCO-format dataset (``--data``, default ``../shared/datasets/hrplanes``:
HRPlanesV2 satellite aircraft, 640x360): ``--num-train`` / ``--num-val`` images drawn with ``--data-seed``,
written as annotation files beside a link to the image folder.

Usage::

    python bench/bench_search.py --budget-s 1800 --num-train 200 --num-val 100
    python bench/bench_search.py --space bench/spaces/dbf_long.yaml --seeds 0 1 2 \
        --strategies random asha_cost tpe_asha bohb --budget-s 2000 --num-train 80 --num-val 40 train.img_scale=[320,180]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from bench_overhead import REPO, add_output_arguments, load_average, new_run, start_search, wait

STRATEGIES = {
    'random': ['scheduler=fifo', 'budget=epochs'],
    'asha': ['scheduler=asha', 'budget=epochs'],
    'asha_cost': ['scheduler=asha', 'budget=compute'],
    'asha_cost_unaware': ['scheduler=asha', 'budget=compute', 'schedule_aware=false'],
    'tpe_asha': ['search_alg=optuna', 'scheduler=asha', 'budget=compute'],
    'bohb': ['search_alg=bohb', 'budget=epochs'],
}
# Their draws depend on their results: bench/replay_search.py cannot replay them from recorded draws.
MODEL_BASED = {'tpe_asha', 'bohb'}


def add_subset_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark that trains on a fixed subset of a COCO dataset (``search.data.subset``)."""
    parser.add_argument('--data', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'hrplanes')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--data-seed', type=int, default=0)


def start_run(args: argparse.Namespace, kind: str) -> tuple[Path, Path, Path]:
    """(run folder, JSON path, subset dataset folder) of a new ``kind`` run; a missing dataset exits."""
    if not (args.data / 'annotations' / 'train.json').is_file():
        raise SystemExit(f'no COCO dataset at {args.data} (annotations/train.json): pass --data')
    root, out = new_run(args, kind)
    from search.data.subset import write_subset

    try:
        data = write_subset(args.data, root / 'data', {'train': args.num_train, 'val': args.num_val,
                                                       'test': getattr(args, 'num_test', 0)}, args.data_seed)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    return root, out, data


def compute_curve(experiment: Path, metric: str = 'bbox_mAP') -> list[tuple[float, float | None]]:
    """(cumulative trial seconds, best ``metric`` so far or None) after each reported result, in report order.

    The report's best-against-compute curve (``search.results.compute_timeline``) on Tune's
    ``time_total_s``, the clock ``search_budget_s`` shares out: training, evaluation and checkpoints.
    """
    from search.results import compute_timeline, trial_rows

    return compute_timeline(trial_rows(experiment), metric, 'max', clock='time_total_s')


def compute_to_reach(curve: list[tuple[float, float | None]], target: float) -> float | None:
    return next((spent for spent, best in curve if best is not None and best >= target), None)


def early_stopping_floor(experiment: Path, target: float, metric: str = 'bbox_mAP') -> float | None:
    """The least compute an early-stopping search of the same draws could need to reach ``target``.

    ``experiment`` is a search that trained every trial to its full budget (random search). Trials
    start in draw order and each reports at least once, so with a one-epoch grace period (the least a
    rung can be when trials report once an epoch) an oracle scheduler that reaches ``target`` with
    trial w pays the first report of every trial drawn before w, then w until it reaches ``target``.
    The floor is the least of that over the trials it trained that reach it; ``None`` if none does.
    """
    from search.results import trial_rows

    rows = trial_rows(experiment)
    return order_floor([(trial_id, rows[trial_id]) for trial_id in draw_order(experiment) if trial_id in rows],
                       target, metric)


def draw_order(experiment: Path) -> list[str]:
    """Trial ids in the order Tune created them (``search.results.trial_states``): ids are random hex."""
    from search.results import trial_states

    return [state['trial_id'] for state, _ in trial_states(experiment)]


def order_floor(trials: list[tuple[str, list[dict]]], target: float, metric: str = 'bbox_mAP') -> float | None:
    """:func:`early_stopping_floor` of ``trials`` (id, results) in the order a search starts them."""
    floor, earlier = None, 0.0
    for _, rows in trials:
        reached = next((row for row in rows if (row.get(metric) or 0.0) >= target), None)
        if reached is not None:
            cost = earlier + float(reached['time_total_s'])
            floor = cost if floor is None else min(floor, cost)
        if rows:
            earlier += float(rows[0]['time_total_s'])
    return floor


def compute_on_hopeless(experiment: Path, below: float = 0.005, metric: str = 'bbox_mAP') -> float:
    """Seconds that trials whose ``metric`` never reached ``below`` ran after their first report.

    Early stopping cannot judge a trial before its first report; what such trials ran after it is
    the compute a scheduler could have saved on them.
    """
    from search.results import trial_rows

    return sum(float(rows[-1]['time_total_s']) - float(rows[0]['time_total_s'])
               for rows in trial_rows(experiment).values()
               if rows and max((row.get(metric) or 0.0) for row in rows) < below)


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, curve in curves.items():
        points = [(s, b) for s, b in curve if b is not None]
        ax.step([s for s, _ in points], [b for _, b in points], where='post', label=name)
    ax.set_xlabel('cumulative trial compute (s)')
    ax.set_ylabel('best bbox_mAP so far')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--space', default='dbf')
    add_subset_arguments(parser)
    parser.add_argument('--budget-s', type=float, default=1800.0, help='search_budget_s of every search')
    parser.add_argument('--num-samples', type=int, default=64, help='more than the budget buys: the budget ends each search')
    parser.add_argument('--seed', type=int, default=0, help='the seed of a single run (see --seeds)')
    parser.add_argument('--seeds', type=int, nargs='+', help='run every arm once per seed and report median and spread')
    parser.add_argument('--strategies', nargs='+', default=['random', 'asha', 'asha_cost'], choices=list(STRATEGIES))
    add_output_arguments(parser, 'search')
    parser.add_argument('overrides', nargs='*', help='more search overrides for every search, e.g. train.img_scale=[480,270]')
    args = parser.parse_args(argv)
    seeds = args.seeds or [args.seed]
    root, out, data = start_run(args, 'search')
    command = ' '.join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    per_seed = {}
    for seed in seeds:
        folder = root if len(seeds) == 1 else root / f'seed{seed}'
        folder.mkdir(exist_ok=True)
        report = run_seed(args, seed, folder, data, command)
        seed_out = out if len(seeds) == 1 else out.with_name(f'{out.stem}-seed{seed}.json')
        seed_out.parent.mkdir(parents=True, exist_ok=True)
        seed_out.write_text(json.dumps(report, indent=2) + '\n')  # bench/replay_search.py reads one seed's
        print_seed(report, seed, seed_out)
        per_seed[seed] = report
    if len(seeds) > 1:
        summary = dict(command=command, seeds=seeds, arms=over_seeds({s: r['runs'] for s, r in per_seed.items()}),
                       per_seed={s: str(out.with_name(f'{out.stem}-seed{s}.json')) for s in seeds}, folder=str(root))
        out.write_text(json.dumps(summary, indent=2) + '\n')
        print_over_seeds(summary['arms'], seeds, out)
    return 0


def run_seed(args, seed: int, root: Path, data: Path, command: str) -> dict:
    """Run every arm of ``args.strategies`` with ``seed`` into ``root``; return that seed's figures."""
    common = [f'space={args.space}', 'data=coco', f'data.root={data}', f'seed={seed}',
              f'num_samples={args.num_samples}', f'search_budget_s={args.budget_s}', *args.overrides]
    load_start = load_average()
    runs = {}
    for name in args.strategies:
        log = root / f'{name}.log'
        started = time.perf_counter()
        wait(start_search([*common, *STRATEGIES[name]], root, name, log), f'the {name} search (seed {seed})', log)
        curve = compute_curve(root / name)
        runs[name] = dict(overrides=[*common, *STRATEGIES[name]], wall_s=time.perf_counter() - started,
                          trials=_num_trials(root / name),
                          compute_s=curve[-1][0] if curve else 0.0, final_best=curve[-1][1] if curve else None,
                          curve=curve, schedule_aware=_summary(root / name).get('schedule_aware'),
                          compute_on_hopeless_s=compute_on_hopeless(root / name))
    equal = min((run['compute_s'] for run in runs.values()), default=0.0)
    for run in runs.values():
        run['best_at_equal_compute'] = best_at(run['curve'], equal)
    reference = runs.get('random')
    if reference and reference['final_best'] is not None:
        target = reference['final_best']
        random_needs = compute_to_reach(reference['curve'], target)
        for run in runs.values():
            run['compute_to_random_best_s'] = compute_to_reach(run['curve'], target)
            run['fraction_of_random_compute'] = (run['compute_to_random_best_s'] / random_needs
                                                 if run['compute_to_random_best_s'] is not None else None)
        floor = early_stopping_floor(root / 'random', target)
        reference['early_stopping_floor_s'] = floor
        reference['early_stopping_floor_fraction'] = floor / random_needs if floor is not None else None
    plot({n: r['curve'] for n, r in runs.items()}, root / 'best_vs_compute.png',
         f'{args.space} on {args.data.name} ({args.num_train}/{args.num_val} images), budget {args.budget_s:.0f} s, seed {seed}')
    return dict(command=command, seed=seed, load_average_start=load_start, load_average_end=load_average(),
                equal_compute_s=equal, runs=runs, plot=str(root / 'best_vs_compute.png'), folder=str(root))


def best_at(curve: list[tuple[float, float | None]], spent: float) -> float | None:
    """The best so far once ``spent`` seconds of compute were used (None if nothing scored by then)."""
    return next((best for seconds, best in reversed(curve) if seconds <= spent and best is not None), None)


def over_seeds(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Per arm, over the seeds: median and min-max of the fraction of random's compute ("never" counts as
    above every ratio, so it ranks last) and of the final best at equal compute; each seed's early-stopping floor."""
    import statistics

    arms = {}
    for name in dict.fromkeys(n for runs in per_seed.values() for n in runs):
        fractions = [runs[name].get('fraction_of_random_compute') for runs in per_seed.values() if name in runs]
        bests = [runs[name]['best_at_equal_compute'] for runs in per_seed.values()
                 if name in runs and runs[name]['best_at_equal_compute'] is not None]
        ranked = sorted(fractions, key=lambda f: math.inf if f is None else f)
        median = ranked[(len(ranked) - 1) // 2] if len(ranked) % 2 else _mean_or_never(ranked[len(ranked) // 2 - 1:len(ranked) // 2 + 1])
        random_bests = {s: runs['random']['best_at_equal_compute'] for s, runs in per_seed.items() if 'random' in runs}
        arms[name] = dict(
            fraction_median=median, fraction_min=ranked[0] if ranked else None,
            fraction_max=ranked[-1] if ranked else None, fractions=fractions, never=sum(f is None for f in fractions),
            best_at_equal_compute_median=statistics.median(bests) if bests else None,
            best_at_equal_compute=[runs[name]['best_at_equal_compute'] for runs in per_seed.values() if name in runs],
            at_least_random_in_every_seed=all(
                runs[name]['best_at_equal_compute'] is not None and random_bests.get(s) is not None
                and runs[name]['best_at_equal_compute'] >= random_bests[s]
                for s, runs in per_seed.items() if name in runs),
            **({'early_stopping_floor_fractions': [runs[name].get('early_stopping_floor_fraction')
                                                   for runs in per_seed.values()]} if name == 'random' else {}))
    return arms


def _mean_or_never(pair: list) -> float | None:
    return None if any(f is None for f in pair) else sum(pair) / 2


def print_seed(report: dict, seed: int, out: Path) -> None:
    runs = report['runs']
    print(f'seed {seed}:')
    print(f"{'search':>18} {'trials':>6} {'compute s':>9} {'best mAP':>8} {'at equal':>8} {'s to random best':>16} {'/ random':>8}")
    for name, run in runs.items():
        reach, frac = run.get('compute_to_random_best_s'), run.get('fraction_of_random_compute')
        best = '-' if run['final_best'] is None else f"{run['final_best']:.4f}"
        equal = '-' if run['best_at_equal_compute'] is None else f"{run['best_at_equal_compute']:.4f}"
        print(f"{name:>18} {run['trials']:6d} {run['compute_s']:9.0f} {best:>8} {equal:>8} "
              f"{'never' if reach is None else f'{reach:.0f}':>16} {'-' if frac is None else f'{frac:.3f}':>8}")
    print('compute on trials that never reached bbox_mAP 0.005, after their first report: '
          + ', '.join(f"{name} {run['compute_on_hopeless_s']:.0f} s" for name, run in runs.items()))
    for name, run in runs.items():
        if run['schedule_aware']:
            kept = run['schedule_aware']
            print(f"{name}: the schedule-aware rule kept {kept['trials_kept']} trials ASHA would have stopped, for "
                  f"{kept['seconds_after_deferred_stops']:.0f} s more; the best trial was "
                  f"{'one' if kept['best_was_kept'] else 'not one'} of them")
    reference = runs.get('random') or {}
    if reference.get('early_stopping_floor_s') is not None:
        print(f"floor of any early stopping with a 1-epoch grace period on these draws: "
              f"{reference['early_stopping_floor_s']:.0f} s = {reference['early_stopping_floor_fraction']:.3f} of random's")
    print(f"load average (1/5/15 min) start {report['load_average_start']}, end {report['load_average_end']}; "
          f"written: {out}, {report['plot']}")


def print_over_seeds(arms: dict, seeds: list[int], out: Path) -> None:
    def fmt(value, digits=3):
        return 'never' if value is None else f'{value:.{digits}f}'

    print(f'over seeds {seeds}: compute to reach random\'s final best / random\'s compute, and best at equal compute')
    print(f"{'search':>18} {'median':>7} {'min-max':>13} {'never':>5} {'best@equal median':>17} {'>= random every seed':>20}")
    for name, arm in arms.items():
        print(f"{name:>18} {fmt(arm['fraction_median']):>7} {fmt(arm['fraction_min']) + '-' + fmt(arm['fraction_max']):>13} "
              f"{arm['never']:5d} {fmt(arm['best_at_equal_compute_median'], 4):>17} {str(arm['at_least_random_in_every_seed']):>20}")
    floors = arms.get('random', {}).get('early_stopping_floor_fractions')
    if floors:
        print('early-stopping floor per seed (fraction of random\'s compute): ' + ', '.join(fmt(f) for f in floors))
    print(f'written: {out}')


def _summary(experiment: Path) -> dict:
    path = experiment / 'summary.json'
    return json.loads(path.read_text()) if path.is_file() else {}


def _num_trials(experiment: Path) -> int:
    from search.results import trial_rows

    return sum(1 for rows in trial_rows(experiment).values() if rows)


if __name__ == '__main__':
    sys.exit(main())
