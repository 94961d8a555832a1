"""Replay recorded trials through the search's own schedulers, over many draw orders.

Why: one real search per strategy gives one ratio, decided largely by where in the draw order the
good configuration falls (docs/benchmarks.md, section 3), and the machines are too noisy and slow to
run hundreds of searches. Training is deterministic per configuration and seed (the arms of one
``bench_search.py`` run report identical per-epoch metrics for the same draw), so a draw that some
search of the run trained to its budget has recorded every result an early-stopping search of it could
see (:func:`complete_draws`: the run's first N draws). This script feeds those results to the scheduler
``search/run.py`` builds for each strategy (``create_scheduler`` on the strategy's own overrides: Ray's
ASHA, the schedule-aware rule, ``budget=compute``), in the order ``--concurrency`` trials running side by
side would report them, and counts the compute until the best so far reaches random search's final best.
It does this for the recorded draw order and for ``--orders`` shuffles of it, and prints each
strategy's ratio to random search (replayed the same way) per order: its median and quartiles, and the
early-stopping floor's.

What a replay leaves out: a real early-stopping search goes on to draws beyond the pool with the
compute it saved, and may find a better configuration there. Replayed compute is the recorded
``time_total_s``; the seconds Ray spends starting a trial's worker are not in it, as they are not in
the real searches' budgets either.

Usage::

    python bench/replay_search.py experiments/bench/search-20261201-123515.json --orders 200
"""
from __future__ import annotations

import argparse
import heapq
import json
import random
import re
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from bench_search import MODEL_BASED, STRATEGIES, order_floor


@dataclass(frozen=True)
class ReplayedTrial:
    """What a scheduler reads of a trial: its id (Ray's schedulers key all their bookkeeping on it)."""

    trial_id: str


def replay(scheduler, trials: list[tuple[str, list[dict]]], target: float, metric: str = 'bbox_mAP',
           concurrency: int = 2) -> float | None:
    """Compute ``scheduler`` spends until a trial's ``metric`` reaches ``target``; ``None`` if none does.

    ``trials``: (trial id, its results in report order, at least one) in the order the search starts
    them; each result carries ``time_total_s``. A trial starts when a slot frees (the search starts with
    ``concurrency`` of them), reports its results at its start time plus their ``time_total_s``, and
    ends at its last result or when the scheduler says STOP. Results are fed in clock order.
    """
    from ray.tune.schedulers import TrialScheduler

    waiting = list(reversed(trials))
    reports: list[tuple[float, int, ReplayedTrial, list[dict], int]] = []  # (clock, tie order, trial, rows, index)
    spent = 0.0
    count = 0

    def start(clock: float) -> None:
        nonlocal count
        while waiting and len(reports) < concurrency:
            trial_id, rows = waiting.pop()
            trial = ReplayedTrial(trial_id)
            scheduler.on_trial_add(None, trial)
            heapq.heappush(reports, (clock + rows[0]['time_total_s'], count, trial, rows, 0))
            count += 1

    start(0.0)
    while reports:
        clock, _, trial, rows, index = heapq.heappop(reports)
        row = rows[index]
        spent += row['time_total_s'] - (rows[index - 1]['time_total_s'] if index else 0.0)
        if (row.get(metric) or 0.0) >= target:
            return spent
        decision = scheduler.on_trial_result(None, trial, dict(row))
        if decision == TrialScheduler.STOP or index + 1 == len(rows):
            scheduler.on_trial_complete(None, trial, dict(row))
        else:
            heapq.heappush(reports, (clock - row['time_total_s'] + rows[index + 1]['time_total_s'], count, trial,
                                     rows, index + 1))
            count += 1
        start(clock)
    return None


def first_report_ranks(trials: list[tuple[str, list[dict]]], target: float, metric: str = 'bbox_mAP') -> list[int]:
    """For each trial that reaches ``target``: its rank (1 = best) among all trials after their first report.

    What a rung at the first report can tell: a winner ranked low there is stopped by any scheduler
    that keeps only the best few.
    """
    firsts = [rows[0].get(metric) or 0.0 for _, rows in trials]
    return sorted(1 + sum(other > (rows[0].get(metric) or 0.0) for other in firsts)
                  for _, rows in trials if any((row.get(metric) or 0.0) >= target for row in rows))


Curves = dict[int, list[tuple[str, list[dict]]]]  # draw index -> (trial id, results) of each search that ran it


def draw_curves(searches: dict[str, dict[str, list[dict]]]) -> Curves:
    """:data:`Curves` of a run's searches (search -> trial id -> results, in draw order), in the searches' order.

    A trial's draw index is its position in its search's dict (``trial_rows`` lists trials in the order
    Tune created them): Tune's trial ids are random hex, so they do not say it.
    """
    curves: Curves = {}
    for rows_of in searches.values():
        for index, (trial_id, rows) in enumerate(rows_of.items()):
            if rows:
                curves.setdefault(index, []).append((trial_id, rows))
    return curves


def agreeing_epochs(curves: Curves, metric: str = 'bbox_mAP') -> tuple[int, int]:
    """(epochs reported alike, epochs reported) by two searches of the same draw, over every pair.

    The replay rests on training being deterministic per draw; this counts how far the run bears it out.
    """
    agree = shared = 0
    for recorded in curves.values():
        for (_, first), (_, second) in combinations(recorded, 2):
            for a, b in zip(first, second):
                shared += 1
                agree += a.get(metric) == b.get(metric)
    return agree, shared


def complete_draws(curves: Curves, default_epochs: int) -> list[tuple[str, list[dict]]]:
    """The run's first draws, in draw order, each with its whole curve: (trial id, results).

    ``curves`` is :func:`draw_curves`. A draw's results in any search of the run are a prefix of the
    same curve (:func:`agreeing_epochs`), and a search that trained it to its budget
    (``runner.max_epochs``, else ``default_epochs``) recorded all of it; the first such search gives it.
    Random search's last draws are cut short by the budget, and an early-stopping search may have
    finished them: the pool runs up to the first draw no search finished, so it is the first N draws,
    not a selection by score.
    """
    from search.spec import MAX_EPOCHS_PATH

    def finished(rows: list[dict]) -> bool:
        return rows[-1].get('epoch', 0) >= int(rows[0].get('config', {}).get(MAX_EPOCHS_PATH, default_epochs))

    pool = []
    while (whole := next((trial for trial in curves.get(len(pool), []) if finished(trial[1])), None)) is not None:
        pool.append(whole)
    return pool


def scheduler_factory(spec, epoch_seconds: float | None):
    """A function returning a fresh scheduler, built as ``search/run.py`` builds it for ``spec``."""
    from search.schedulers import budget_for, create_scheduler

    budget = budget_for(spec, epoch_seconds if spec.budget == 'compute' else None)

    def make():
        scheduler = create_scheduler(spec, budget)
        scheduler.set_search_properties(spec.metric, spec.mode)
        return scheduler

    return make


def probe_seconds(log: Path) -> float | None:
    """The probe's seconds per full-cost epoch, as a search printed them in its log."""
    found = re.search(r'DynTune probe: ([0-9.]+) s per full-cost epoch', log.read_text()) if log.is_file() else None
    return float(found.group(1)) if found else None


def quartiles(values: list[float | None]) -> tuple[float, float, float]:
    """First quartile, median, third quartile by nearest rank; ``None`` (never reached) ranks above all."""
    ranked = sorted(values, key=lambda v: (v is None, v or 0.0))
    picks = [ranked[round(share * (len(ranked) - 1))] for share in (0.25, 0.5, 0.75)]
    return tuple(float('inf') if v is None else v for v in picks)


def main(argv=None) -> int:
    from search.config import compose_config
    from search.results import trial_rows
    from search.spec import build_spec

    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('run', type=Path, help='the JSON a bench_search.py run wrote (it names its folder and arms)')
    parser.add_argument('--strategies', nargs='+', choices=list(STRATEGIES),
                        help="bench_search strategies to replay (default: the run's own arms)")
    parser.add_argument('--variant', action='append', default=[], metavar='NAME=OVERRIDES',
                        help="one more scheduler to replay, e.g. 'rf4=scheduler=asha budget=compute "
                             "scheduler.reduction_factor=4'; repeatable")
    parser.add_argument('--orders', type=int, default=200, help='shuffled draw orders, besides the recorded one')
    parser.add_argument('--concurrency', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0, help='seeds the shuffles')
    parser.add_argument('--target', type=float, help="the bbox_mAP to reach (default: random search's final best)")
    parser.add_argument('--epoch-seconds', type=float,
                        help="budget=compute's unit, one full-cost epoch (default: the probe's, from the run's logs)")
    args = parser.parse_args(argv)

    run = json.loads(args.run.read_text())
    folder = Path(run['folder'])
    random_arm = run['runs'].get('random')
    if random_arm is None:
        raise SystemExit(f'{args.run} has no random arm: the replay needs its fully trained trials')
    target = args.target if args.target is not None else random_arm['final_best']
    common = [o for o in random_arm['overrides'] if o not in STRATEGIES['random']]
    # A model-based arm's draws depend on its results: they are not the draws of the others, and no
    # replay of recorded draws can stand for it (bench_search.py --seeds repeats it instead).
    replayable = [name for name in run['runs'] if name not in MODEL_BASED]
    strategies = {name: STRATEGIES[name] for name in ['random', *(args.strategies or replayable)] if name not in MODEL_BASED}
    for variant in args.variant:
        name, _, overrides = variant.partition('=')
        if not name or not overrides:
            raise SystemExit(f"--variant '{variant}' is not NAME=OVERRIDES")
        strategies[name] = overrides.split()
    # The benchmark's searches ran without a reference trial (bench_overhead.start_search).
    specs = {name: build_spec(compose_config([*common, *overrides, 'reference=false']), dry_run=False)
             for name, overrides in strategies.items()}
    epoch_seconds = args.epoch_seconds or next((s for s in map(probe_seconds, sorted(folder.glob('*.log'))) if s), None)
    if epoch_seconds is None and any(spec.budget == 'compute' for spec in specs.values()):
        raise SystemExit(f'budget=compute needs the seconds of one full-cost epoch: no probe in {folder}/*.log, '
                         f'pass --epoch-seconds')
    factories = {name: scheduler_factory(spec, epoch_seconds) for name, spec in specs.items()}
    # Random search's records first: it trained the most draws to their budget.
    curves = draw_curves({name: trial_rows(folder / name) for name in sorted(replayable, key=lambda n: n != 'random')})
    agree, shared = agreeing_epochs(curves)
    trials = complete_draws(curves, specs['random'].max_epochs)

    shuffler = random.Random(args.seed)
    orders = [trials] + [shuffler.sample(trials, len(trials)) for _ in range(args.orders)]
    ratios: dict[str, list[float | None]] = {name: [] for name in [*factories, 'floor']}  # None: never reached
    recorded = {}
    for number, order in enumerate(orders):
        random_needs = replay(factories['random'](), order, target, concurrency=args.concurrency)
        for name, make in factories.items():
            needs = replay(make(), order, target, concurrency=args.concurrency)
            if number == 0:
                recorded[name] = needs
            ratios[name].append(needs / random_needs if needs is not None else None)
        ratios['floor'].append(order_floor(order, target) / random_needs)

    print(f'the first {len(trials)} draws of {folder} (each trained to its budget by some search), target bbox_mAP {target:.4f}, '
          f'{args.concurrency} at a time; the recorded draw order and {args.orders} shuffles of it')
    print(f'determinism: {agree} of the {shared} epochs that two searches of the run both trained for the same '
          f'draw report the same bbox_mAP')
    print(f'rank after the first report of each trial that reaches the target: {first_report_ranks(trials, target)} '
          f'of {len(trials)}')
    print(f"{'search':>18} {'recorded order':>14} {'real run':>9} {'median':>7} {'q1':>6} {'q3':>6} {'never':>6}")
    for name, values in ratios.items():
        q1, median, q3 = quartiles(values)
        real = None
        if target == random_arm['final_best']:  # the real run measured its ratios at random's final best
            real = (random_arm.get('early_stopping_floor_fraction') if name == 'floor'
                    else run['runs'].get(name, {}).get('fraction_of_random_compute'))
        first = 'never' if values[0] is None else f'{values[0]:.3f}'
        print(f"{name:>18} {first:>14} {'-' if real is None else f'{real:.3f}':>9} {median:7.3f} "
              f"{q1:6.3f} {q3:6.3f} {values.count(None):6d}")
    out = args.run.with_name(args.run.stem + '-replay.json')
    out.write_text(json.dumps(dict(command=' '.join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
                                   target=target, trials=len(trials), orders=len(orders), strategies=strategies,
                                   agreeing_epochs=agree, shared_epochs=shared,
                                   recorded_order_compute_s=recorded, ratios=ratios), indent=1) + '\n')
    print(f'written: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
