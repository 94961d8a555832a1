"""Search-algorithm factory: ``search_alg=NAME`` -> a Ray Tune searcher, seeded by ``seed``.

Each entry of :data:`SEARCH_ALGS` takes the section's options (minus ``name``) and the spec and
rejects unknown options. ``grid`` and ``random`` are Ray's BasicVariantGenerator (the driver turns
every choice into a grid axis for ``grid``), which applies ``max_concurrent_trials`` itself: Tune
ignores that option for a generator it did not create; ``optuna`` is TPE and ``nsga2`` Optuna's NSGA-II over
``objectives``, both through Ray's OptunaSearch.
"""
from __future__ import annotations

from search.errors import UsageError, reject_unknown_options


def _random(options: dict, spec):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    reject_unknown_options('search_alg random', options, set())
    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.max_concurrent_trials or 0)


def _grid(options: dict, spec):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    reject_unknown_options('search_alg grid', options, set())
    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.max_concurrent_trials or 0)


def _optuna(options: dict, spec):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    reject_unknown_options('search_alg optuna', options, {'n_startup_trials'})
    startup = options.get('n_startup_trials', 2)
    if isinstance(startup, bool) or not isinstance(startup, int) or startup < 0:
        raise UsageError(f'search_alg.n_startup_trials must be a whole number >= 0, got {startup!r}')
    sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=startup)
    return OptunaSearch(sampler=sampler, metric=spec.metric, mode=spec.mode)


def _nsga2(options: dict, spec):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    reject_unknown_options('search_alg nsga2', options, {'population_size'})
    size = options.get('population_size', 8)
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise UsageError(f'search_alg.population_size must be a whole number >= 2, got {size!r}')
    sampler = optuna.samplers.NSGAIISampler(population_size=size, seed=spec.seed)
    return OptunaSearch(sampler=sampler, metric=list(spec.objectives), mode=list(spec.objective_modes))


SEARCH_ALGS = {'random': _random, 'grid': _grid, 'optuna': _optuna, 'nsga2': _nsga2}


def create_search_alg(spec):
    options = dict(spec.search_alg)
    name = options.pop('name')
    if name not in SEARCH_ALGS:
        raise UsageError(f"unknown search_alg '{name}': choose one of {', '.join(SEARCH_ALGS)}")
    return SEARCH_ALGS[name](options, spec)
