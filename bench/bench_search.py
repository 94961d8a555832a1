"""Benchmark of search efficiency on a real dataset: ASHA, cost-aware ASHA and random search, same compute.

Three searches of the same space on the same data, one after the other, each ``search/run.py`` with
the same ``seed`` (so the same sequence of sampled configurations) and the same ``search_budget_s``
(the trials' summed ``time_total_s``: training, evaluation, checkpoints), as many trials as that buys:

* ``random``: random search, every trial trained to its full budget (``scheduler=fifo``);
* ``asha``: Ray's ASHA with rungs in epochs (``scheduler=asha budget=epochs``);
* ``asha_cost``: cost-aware ASHA, rungs in measured training seconds (``scheduler=asha budget=compute``),
  so a trial whose schedule makes epochs cheaper (DBF's frozen epochs) reaches each rung later in epochs;
* ``asha_cost_unaware``: the same without the schedule-aware rule (``schedule_aware=false``), to measure
  what that rule costs: ASHA may then stop a trial before its schedule went through all its phases.

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
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from bench_overhead import REPO, load_average, start_search, wait

STRATEGIES = {
    'random': ['scheduler=fifo', 'budget=epochs'],
    'asha': ['scheduler=asha', 'budget=epochs'],
    'asha_cost': ['scheduler=asha', 'budget=compute'],
    'asha_cost_unaware': ['scheduler=asha', 'budget=compute', 'schedule_aware=false'],
}


def write_subset(source: Path, target: Path, num_train: int, num_val: int, seed: int) -> Path:
    """A COCO dataset folder at ``target``: ``num_train``/``num_val`` images of ``source``'s train/val splits."""
    (target / 'annotations').mkdir(parents=True, exist_ok=True)
    images = target / 'images'
    if not images.exists():
        images.symlink_to((source / 'images').resolve(), target_is_directory=True)
    for split, count in (('train', num_train), ('val', num_val)):
        coco = json.loads((source / 'annotations' / f'{split}.json').read_text())
        with_boxes = sorted({a['image_id'] for a in coco['annotations']})
        if count > len(with_boxes):
            raise SystemExit(f'{source} {split} has {len(with_boxes)} images with boxes, asked for {count}')
        kept = set(random.Random(seed).sample(with_boxes, count))
        coco['images'] = [i for i in coco['images'] if i['id'] in kept]
        coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in kept]
        (target / 'annotations' / f'{split}.json').write_text(json.dumps(coco))
    return target


def add_subset_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark that trains on a fixed subset of a COCO dataset (:func:`write_subset`)."""
    parser.add_argument('--data', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'hrplanes')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--data-seed', type=int, default=0)


def start_run(args: argparse.Namespace, kind: str) -> tuple[Path, Path, Path]:
    """(run folder, JSON path, subset dataset folder) of a new ``kind`` run; a missing dataset exits."""
    if not (args.data / 'annotations' / 'train.json').is_file():
        raise SystemExit(f'no COCO dataset at {args.data} (annotations/train.json): pass --data')
    stamp = time.strftime('%Y%m%d-%H%M%S')
    root = (args.work_dir / f'{kind}-{stamp}').resolve()
    root.mkdir(parents=True)
    out = args.out or args.work_dir / f'{kind}-{stamp}.json'
    return root, out, write_subset(args.data, root / 'data', args.num_train, args.num_val, args.data_seed)


def compute_curve(experiment: Path, metric: str = 'bbox_mAP') -> list[tuple[float, float]]:
    """(cumulative trial seconds, best ``metric`` so far) after each reported result, in report order."""
    from search.results import trial_rows

    events = []
    for trial_id, rows in trial_rows(experiment).items():
        previous = 0.0
        for row in rows:
            used = float(row.get('time_total_s', 0.0))
            # Tune's timestamp is whole seconds; a trial's own clock breaks the ties between trials.
            events.append((row.get('timestamp', 0), used, used - previous, row.get(metric)))
            previous = used
    curve, spent, best = [], 0.0, float('-inf')
    for _, _, step, score in sorted(events, key=lambda e: (e[0], e[1])):
        spent += step
        if score is not None and score == score:  # NaN: a diverged trial scores nothing
            best = max(best, float(score))
        curve.append((spent, best))
    return curve


def compute_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((spent for spent, best in curve if best >= target), None)


def early_stopping_floor(experiment: Path, target: float, metric: str = 'bbox_mAP') -> float | None:
    """The least compute an early-stopping search of the same draws could need to reach ``target``.

    ``experiment`` is a search that trained every trial to its full budget (random search). Trials
    start in draw order and each reports at least once, so with a one-epoch grace period (the least a
    rung can be when trials report once an epoch) an oracle scheduler that reaches ``target`` with
    trial w pays the first report of every trial drawn before w, then w until it reaches ``target``.
    The floor is the least of that over the trials it trained that reach it; ``None`` if none does.
    """
    from search.results import trial_rows

    return order_floor(sorted(trial_rows(experiment).items()), target, metric)  # ids end in the draw index


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
        points = [(s, b) for s, b in curve if b != float('-inf')]
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
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--strategies', nargs='+', default=['random', 'asha', 'asha_cost'], choices=list(STRATEGIES))
    parser.add_argument('--work-dir', type=Path, default=REPO / 'experiments' / 'bench')
    parser.add_argument('--out', type=Path, help='JSON of the figures (default: WORK_DIR/search-<time>.json)')
    parser.add_argument('overrides', nargs='*', help='more search overrides for every search, e.g. train.img_scale=[480,270]')
    args = parser.parse_args(argv)
    root, out, data = start_run(args, 'search')
    common = [f'space={args.space}', 'data=coco', f'data.root={data}', f'seed={args.seed}',
              f'num_samples={args.num_samples}', f'search_budget_s={args.budget_s}', *args.overrides]
    load_start = load_average()

    runs = {}
    for name in args.strategies:
        log = root / f'{name}.log'
        started = time.perf_counter()
        wait(start_search([*common, *STRATEGIES[name]], root, name, log), f'the {name} search', log)
        curve = compute_curve(root / name)
        runs[name] = dict(overrides=[*common, *STRATEGIES[name]], wall_s=time.perf_counter() - started,
                          trials=_num_trials(root / name),
                          compute_s=curve[-1][0] if curve else 0.0, final_best=curve[-1][1] if curve else None,
                          curve=curve, schedule_aware=_summary(root / name).get('schedule_aware'),
                          compute_on_hopeless_s=compute_on_hopeless(root / name))
    reference = runs.get('random')
    if reference and reference['final_best'] not in (None, float('-inf')):
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
         f'{args.space} on {args.data.name} ({args.num_train}/{args.num_val} images), budget {args.budget_s:.0f} s, seed {args.seed}')
    report = dict(command=' '.join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
                  load_average_start=load_start, load_average_end=load_average(), runs=runs,
                  plot=str(root / 'best_vs_compute.png'), folder=str(root))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n')

    print(f"{'search':>10} {'trials':>6} {'compute s':>9} {'best mAP':>8} {'s to random best':>16} {'/ random':>8}")
    for name, run in runs.items():
        reach, frac = run.get('compute_to_random_best_s'), run.get('fraction_of_random_compute')
        print(f"{name:>10} {run['trials']:6d} {run['compute_s']:9.0f} {run['final_best']:8.4f} "
              f"{'never' if reach is None else f'{reach:.0f}':>16} {'-' if frac is None else f'{frac:.3f}':>8}")
    print('compute on trials that never reached bbox_mAP 0.005, after their first report: '
          + ', '.join(f"{name} {run['compute_on_hopeless_s']:.0f} s" for name, run in runs.items()))
    for name, run in runs.items():
        if run['schedule_aware']:
            kept = run['schedule_aware']
            print(f"{name}: the schedule-aware rule kept {kept['trials_kept']} trials ASHA would have stopped, for "
                  f"{kept['seconds_after_deferred_stops']:.0f} s more; the best trial was "
                  f"{'one' if kept['best_was_kept'] else 'not one'} of them")
    if reference and reference.get('early_stopping_floor_s') is not None:
        print(f"floor of any early stopping with a 1-epoch grace period on these draws: "
              f"{reference['early_stopping_floor_s']:.0f} s = {reference['early_stopping_floor_fraction']:.3f} of random's")
    print(f'load average (1/5/15 min) start {load_start}, end {report["load_average_end"]}; '
          f'written: {out}, {report["plot"]}')
    return 0


def _summary(experiment: Path) -> dict:
    path = experiment / 'summary.json'
    return json.loads(path.read_text()) if path.is_file() else {}


def _num_trials(experiment: Path) -> int:
    from search.results import trial_rows

    return sum(1 for rows in trial_rows(experiment).values() if rows)


if __name__ == '__main__':
    sys.exit(main())
