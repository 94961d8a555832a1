"""Shared pytest fixtures: real datasets when present, one Ray runtime per session, stored Tune experiments."""
import json
import os
from dataclasses import dataclass, field
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


@pytest.fixture(autouse=True)
def _no_mmcv_epoch_sleeps(monkeypatch):
    """Skip the sleeps of mmcv's EpochBasedRunner in this process, as trials do (search.trainable.skip_epoch_sleeps):
    toy runners of a few iterations spent most of their time there. monkeypatch puts the module's ``time`` back."""
    from mmcv.runner import epoch_based_runner

    from search.trainable import skip_epoch_sleeps

    monkeypatch.setattr(epoch_based_runner, 'time', epoch_based_runner.time)
    skip_epoch_sleeps()


def pytest_collection_modifyitems(config, items):
    """``make test-fast`` (``-m "not slow"``) must start no Ray: a test that uses ray_session must be marked slow."""
    unmarked = [item.nodeid for item in items
                if 'ray_session' in getattr(item, 'fixturenames', ()) and item.get_closest_marker('slow') is None]
    if unmarked:
        raise pytest.UsageError('these tests start Ray (ray_session) but are not marked @pytest.mark.slow: '
                                + ', '.join(unmarked))



def free_port() -> int:
    """A TCP port free on loopback now (for a test's own cluster or server)."""
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def loopback_cluster_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess that runs a test's own Ray cluster on loopback (ray.cluster_utils.Cluster)
    and drives a search on it. Without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 Ray rewrites a 127.0.0.1 address to
    the machine's own IP before connecting (ray._private.services.resolve_ip_for_localhost); an inherited
    RAY_ADDRESS would point the driver at another Ray."""
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER='0', **extra)
    env.pop('RAY_ADDRESS', None)
    return env


@pytest.fixture(scope='session')
def ray_session():
    """One local Ray runtime for the whole test session, on loopback, without the dashboard."""
    import ray

    if not ray.is_initialized():
        # num_gpus=1 fakes a GPU for Ray's bookkeeping, so GPU packing is testable on a CPU machine.
        # address='local': a search SIGKILLed by an earlier test (test_reliability) leaves its cluster's
        # address in /tmp/ray/ray_current_cluster, where address=None would try to join it.
        ray.init(address='local', num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address='127.0.0.1', log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope='session')
def baseline_smoke_search(ray_session, tmp_path_factory):
    """(spec, summary, folder) of one default smoke search (space=baseline, ASHA, random, with the reference),
    shared by the tests that only read a finished search: each real search costs the suite a minute."""
    tmp = tmp_path_factory.mktemp('baseline_smoke')
    spec, summary = run_search_for_test(['space=baseline', 'smoke=true', 'experiment.name=smoke'], tmp)
    return spec, summary, tmp / 'smoke'


def run_search_for_test(overrides, tmp_path):
    """Compose, validate and run a search into ``tmp_path``; return (spec, summary)."""
    from search.config import compose_config
    from search.driver import run_search
    from search.spec import build_spec

    cfg = compose_config([*overrides, f'experiment.dir={tmp_path}', 'ray.verbose=0'])
    spec = build_spec(cfg)
    return spec, run_search(spec)


@dataclass
class StoredTrial:
    """One trial as Ray Tune 2.60 stores it (input of :func:`write_tune_experiment`).

    Args:
        rows (list[dict]): the trial's reports, oldest first (its ``result.json``).
        status (str): Tune's status: ``TERMINATED``, ``ERROR``, ``RUNNING``, ``PENDING``...
        config (dict): the sampled parameters, path -> value.
        error (str | None): the exception line of a failed trial; written as its ``error.txt``.
        components (tuple): the component declarations (``dyncomponents.protocol.ComponentMetrics``)
            that ``TuneReportHook`` stores in the trial folder.
        experiment_tag (str | None): Tune's tag, whose leading number is the trial's place in the draw order.
    """

    rows: list = field(default_factory=list)
    status: str = 'TERMINATED'
    config: dict = field(default_factory=dict)
    error: str | None = None
    components: tuple = ()
    experiment_tag: str | None = None


def write_tune_experiment(folder: Path, trials: dict, state_file: str = 'experiment_state-2026-12-01_12-00-00.json'):
    """Write the files Ray Tune stores for an experiment into ``folder``, as search/results.py reads them.

    ``trials`` maps a trial id to a :class:`StoredTrial` or just its list of result rows. Each trial gets
    the folder ``trial_<id>`` (the driver's name for it) with ``result.json`` and, when it failed,
    ``error.txt``; ``state_file`` lists them with their status, folder, config and error file name.
    Write two state files to imitate a resumed search (the greatest name is the newest session's).
    """
    folder = Path(folder)
    trial_data = []
    for trial_id, trial in trials.items():
        trial = trial if isinstance(trial, StoredTrial) else StoredTrial(rows=list(trial))
        trial_dir = folder / f'trial_{trial_id}'
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / 'result.json').write_text(''.join(json.dumps(row) + '\n' for row in trial.rows))
        if trial.error:
            (trial_dir / 'error.txt').write_text(f'Traceback (most recent call last):\n{trial.error}\n')
        if trial.components:
            from search.files import COMPONENT_METRICS_FILE

            (trial_dir / COMPONENT_METRICS_FILE).write_text(json.dumps([c.to_dict() for c in trial.components]))
        state = dict(trial_id=trial_id, status=trial.status, relative_logdir=trial_dir.name, config=trial.config,
                     **({'experiment_tag': trial.experiment_tag} if trial.experiment_tag else {}))
        trial_data.append([json.dumps(state), json.dumps({'error_filename': 'error.txt' if trial.error else None})])
    (folder / state_file).write_text(json.dumps({'trial_data': trial_data}))
    return folder
