"""Shared pytest fixtures: real datasets when present, one Ray runtime per session."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get('DYNTUNE_SHARED_DATASETS', REPO.parent / 'shared' / 'datasets'))


@pytest.fixture(scope='session')
def shared_dataset():
    """Return a function name -> Path of a real COCO dataset in ../shared/datasets, or skip."""

    def _get(name):
        root = SHARED_DATASETS / name
        if not (root / 'annotations' / 'train.json').is_file():
            pytest.skip(f'real dataset {name} not present at {root}')
        return root

    return _get


@pytest.fixture(scope='session')
def ray_session():
    """One local Ray runtime for the whole test session, on loopback, without the dashboard."""
    import ray

    if not ray.is_initialized():
        # num_gpus=1 fakes a GPU for Ray's bookkeeping, so GPU packing is testable on a CPU machine.
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address='127.0.0.1', log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


def run_search_for_test(overrides, tmp_path):
    """Compose, validate and run a search into ``tmp_path``; return (spec, summary)."""
    from search.config import compose_config
    from search.driver import run_search
    from search.spec import build_spec

    cfg = compose_config([*overrides, f'experiment.dir={tmp_path}', 'ray.verbose=0'])
    spec = build_spec(cfg)
    return spec, run_search(spec)
