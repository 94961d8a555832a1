"""How many finished trials report.html's parameter importance needs before its ranking means something.

Simulated searches, no training: each draws ``--params`` parameters uniformly at random for n trials;
the score depends on one of them only (``lr``, the first), in one of two ways:

* ``band``: a trial scores 0.05 when ``lr`` falls in the best third of its range and 0.0 otherwise
  (plus tiny noise), like the 4-trial search whose only good trial (0.049) differed from three at 0.000 by
  its learning rate, and which fANOVA ranked 4th of 6;
* ``slope``: the score grows linearly with ``lr``, with noise of 20 % of that range from nowhere else.

For every n, ``--draws`` searches go through :func:`search.report.param_importance` (Optuna's fANOVA,
the report's own code) and the script prints how often ``lr`` comes out first among the searches where
importance could be computed (a search where every trial scored the same has none). The report's
``MIN_IMPORTANCE_TRIALS`` is the smallest n from which ``lr`` is first in at least ``--target`` of them in
both cases (docs/report.md).

Usage::

    python bench/bench_importance.py --params 6 --draws 40 --trials 3 4 5 6 8 10 12 15 20
"""
import argparse
import random

from search.report import MIN_IMPORTANCE_TRIALS, param_importance
from search.results import TrialRecord
from search.space import Distribution


def score(case: str, lr: float, rng: random.Random) -> float:
    if case == 'band':
        return (0.05 if lr > 2 / 3 else 0.0) + rng.uniform(0, 1e-4)
    return lr + rng.gauss(0, 0.2)


def first_rate(case: str, n: int, params: int, draws: int, seed: int) -> tuple[float, int]:
    """(share of the computable searches where lr ranks first, how many were computable)."""
    rng = random.Random(seed)
    names = ['lr'] + [f'p{i}' for i in range(1, params)]
    space = {name: Distribution('uniform', (0.0, 1.0)) for name in names}
    first = computable = 0
    for _ in range(draws):
        records = []
        for i in range(n):
            values = {name: rng.random() for name in names}
            best = score(case, values['lr'], rng)
            records.append(TrialRecord(trial_id=f't{i:05d}', status='completed', params=values, epochs=1, final=best,
                                       best=best, best_epoch=1, train_seconds=1.0, total_seconds=1.0, path=''))
        importances, _ = param_importance(records, space, 'max', min_trials=1)
        if importances:
            computable += 1
            first += max(importances, key=importances.get) == 'lr'
    return (first / computable if computable else 0.0), computable


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--params', type=int, default=6, help='parameters per trial (dbf, dyra, dynamic_rcnn: 6)')
    parser.add_argument('--draws', type=int, default=40, help='simulated searches per case and trial count')
    parser.add_argument('--trials', type=int, nargs='+', default=[3, 4, 5, 6, 8, 10, 12, 15, 20])
    parser.add_argument('--target', type=float, default=0.8, help='share of searches that must rank lr first')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    print(f'{args.params} parameters, lr decides the score; share of {args.draws} searches that rank lr first')
    print('| finished trials | band | slope |')
    print('| --- | --- | --- |')
    enough = None
    for n in args.trials:
        cells, rates = [], []
        for case in ('band', 'slope'):
            rate, computable = first_rate(case, n, args.params, args.draws, args.seed + n)
            rates.append(rate)
            cells.append(f'{rate:.2f}' + (f' (of {computable})' if computable < args.draws else ''))
        print(f'| {n} | {cells[0]} | {cells[1]} |', flush=True)
        if enough is None and min(rates) >= args.target:
            enough = n
    print(f'smallest n with both >= {args.target}: {enough}; the report uses MIN_IMPORTANCE_TRIALS = '
          f'{MIN_IMPORTANCE_TRIALS}')


if __name__ == '__main__':
    main()
