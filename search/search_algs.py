"""Search-algorithm factory: ``search_alg=NAME`` -> an Optuna sampler behind Ray Tune's OptunaSearch.

Every search algorithm is a Tune ``Searcher`` (so one wrapper can put the reference trial first, and
Tune applies ``max_concurrent_trials`` to all of them alike), seeded by ``seed``:

- ``random``: Optuna's RandomSampler, independent draws;
- ``grid``: Optuna's GridSampler over every ``choice`` of the space (the driver runs the grid
  ``num_samples`` times);
- ``optuna``: Optuna's TPE sampler, which models good regions after ``n_startup_trials`` random trials;
- ``nsga2``: Optuna's NSGA-II over ``objectives`` (several objectives, a Pareto front);
- ``bohb``: Ray Tune's TuneBOHB (hpbandster's BOHB), a kernel-density model fitted on every rung of
  its own scheduler (``scheduler=bohb``, HyperBandForBOHB; search/schedulers.py pairs them).

A trial that ends before its epoch budget (a scheduler stopped it) is PRUNED for Optuna, not
COMPLETE, so TPE learns from its rung without ranking it with full budgets (search/model_based.py).
``warm_start`` points (search/warm_start.py) come first, after the reference.

:func:`validate_search_alg` checks the ``search_alg:`` section before Ray starts and returns typed
:class:`SearchAlgSettings`; :func:`create_search_alg` builds the searcher for a spec.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from search.errors import UsageError
from search.settings import Settings, validate_section, whole
from search.files import REFERENCE_KEY


@dataclass(frozen=True)
class SearchAlgSettings(Settings):
    """A validated ``search_alg:`` section: the algorithm's name and all its options."""

    @property
    def multi_objective(self) -> bool:
        """The algorithm optimises several objectives at once (results carry a Pareto front)."""
        return self.name in MULTI_OBJECTIVE


# name -> option -> (check, default)
OPTIONS: dict[str, dict[str, tuple[Callable, Any]]] = {
    'random': {},
    'grid': {},
    'optuna': {'n_startup_trials': (whole(0), 2)},
    'nsga2': {'population_size': (whole(2), 8)},
    'bohb': {},
}
MULTI_OBJECTIVE = {'nsga2'}


def validate_search_alg(section: dict) -> SearchAlgSettings:
    """Check a ``search_alg:`` section and fill in the defaults of the options it leaves out."""
    name, options = validate_section('search_alg', section, OPTIONS)
    return SearchAlgSettings(name=name, options=options)


def grid_size(params: dict) -> int:
    """The number of points of the grid over ``params`` (every one a ``choice``)."""
    for path, dist in params.items():
        if dist.kind != 'choice':
            raise UsageError(f"search_alg=grid needs every parameter to be a choice, got {dist.kind}{list(dist.args)} "
                             f"for '{path}'")
    return math.prod(len(dist.args) for dist in params.values())


def _sampler(settings: SearchAlgSettings, spec):
    import optuna

    options = settings.options
    if settings.name == 'random':
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if settings.name == 'grid':
        from search.space import to_tune

        return optuna.samplers.GridSampler({path: list(to_tune(dist).categories) for path, dist in spec.params.items()},
                                           seed=spec.seed)
    if settings.name == 'optuna':
        return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=options['n_startup_trials'])
    return optuna.samplers.NSGAIISampler(population_size=options['population_size'], seed=spec.seed)


def create_search_alg(spec, reference: dict | None = None):
    """The searcher of ``spec.search_alg``; with ``reference`` (a Tune config) it suggests that trial first.

    PBT and PB2 accept only Tune's own random generator (``BasicVariantGenerator``): with them,
    ``search_alg=random`` is that generator, and the reference is its first point.
    """
    import optuna

    from search.mmdet_config import MAX_EPOCHS_PATH
    from search.model_based import PlainTuneBOHB, RungAwareOptunaSearch

    warm = [dict(point) for point in getattr(spec, 'warm_start_points', ())]
    if spec.scheduler.population_based:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        first = ([reference] if reference else []) + [{**point, REFERENCE_KEY: False} for point in warm]
        return BasicVariantGenerator(points_to_evaluate=first or None, random_state=spec.seed,
                                     max_concurrent=spec.max_concurrent_trials or 0)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would bury Tune's table
    settings = spec.search_alg
    if settings.name == 'bohb':
        searcher = PlainTuneBOHB(metric=spec.metric, mode=spec.mode, seed=spec.seed, points_to_evaluate=warm or None)
    else:
        multi = settings.multi_objective
        searcher = RungAwareOptunaSearch(
            sampler=_sampler(settings, spec), metric=list(spec.objectives) if multi else spec.metric,
            mode=list(spec.objective_modes) if multi else spec.mode, points_to_evaluate=warm or None,
            budget_path=MAX_EPOCHS_PATH if MAX_EPOCHS_PATH in spec.params else None, max_epochs=spec.max_epochs)
    if reference is not None:
        from search.reference import ReferenceFirst

        searcher = ReferenceFirst(searcher, reference)
    return searcher
