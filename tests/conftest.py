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
