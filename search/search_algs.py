"""Search-algorithm factory: ``search_alg=NAME`` -> a Ray Tune searcher, seeded by ``seed``.

Each entry of :data:`SEARCH_ALGS` takes the section's options (minus ``name``) and the spec and
rejects unknown options.
"""
from __future__ import annotations

from search.errors import UsageError, reject_unknown_options


def _random(options: dict, spec):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    reject_unknown_options('search_alg random', options, set())
    return BasicVariantGenerator(random_state=spec.seed)


def _optuna(options: dict, spec):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    reject_unknown_options('search_alg optuna', options, {'n_startup_trials'})
    startup = int(options.get('n_startup_trials', 2))
    if startup < 0:
        raise UsageError(f'search_alg.n_startup_trials must be >= 0, got {startup}')
    sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=startup)
    return OptunaSearch(sampler=sampler, metric=spec.metric, mode=spec.mode)


SEARCH_ALGS = {'random': _random, 'optuna': _optuna}


def create_search_alg(spec):
    options = dict(spec.search_alg)
    name = options.pop('name')
    if name not in SEARCH_ALGS:
        raise UsageError(f"unknown search_alg '{name}': choose one of {', '.join(SEARCH_ALGS)}")
    return SEARCH_ALGS[name](options, spec)
