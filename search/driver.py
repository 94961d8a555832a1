"""``run_search(spec)``: start Ray on loopback (or join a cluster), run the Tuner, write the results.

The spec is already validated; the scheduler and search algorithm are built before Ray starts so
their option errors come first too. ``resume=true`` restores the Tuner from the experiment folder:
finished trials are kept and unfinished ones restart from their last checkpoint.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from search.results import SPEC_FILE
from search.schedulers import create_scheduler
from search.search_algs import create_search_alg
from search.space import to_tune
from search.spec import SearchSpec


def run_search(spec: SearchSpec) -> dict:
    """Run the search described by ``spec``; return the summary (also written to summary.json)."""
    from ray import tune

    from search.export import export_experiment
    from search.trainable import train_trial

    scheduler = create_scheduler(spec)
    search_alg = create_search_alg(spec)
    grid = spec.search_alg.get('name') == 'grid'
    param_space = {path: to_tune(dist, grid=grid) for path, dist in spec.params.items()}

    init_ray(spec)
    trainable = tune.with_resources(tune.with_parameters(train_trial, trial_spec=spec.trial),
                                    {'cpu': spec.trial.cpus_per_trial, 'gpu': spec.trial.gpus_per_trial})
    started = time.time()
    if spec.resume:
        tuner = tune.Tuner.restore(str(spec.experiment_path), trainable=trainable, resume_errored=True)
    else:
        spec.experiment_path.mkdir(parents=True)
        (spec.experiment_path / SPEC_FILE).write_text(yaml.safe_dump(spec.config, sort_keys=False))
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler, search_alg=search_alg,
                                        num_samples=spec.num_samples,
                                        max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=False),
            run_config=tune.RunConfig(
                name=spec.experiment_name, storage_path=str(spec.experiment_dir),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.num_to_keep,
                                                        checkpoint_score_attribute=spec.metric,
                                                        checkpoint_score_order=spec.mode),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                verbose=int(spec.ray.get('verbose', 1))),
        )
    tuner.fit()
    summary = export_experiment(spec.experiment_path, wall_seconds=time.time() - started)
    print(f'DynTune: {summary["num_trials"]} trials, best {spec.metric} = '
          f'{(summary["best"] or {}).get(spec.metric)} -> {spec.experiment_path / "best"}')
    return summary


def init_ray(spec: SearchSpec) -> None:
    """Start Ray on 127.0.0.1 (token authentication left on), or join ``ray.address``; no-op if running."""
    import ray

    if ray.is_initialized():
        return
    address = spec.ray.get('address')
    dashboard = bool(spec.ray.get('dashboard', True))
    log_to_driver = int(spec.ray.get('verbose', 1)) >= 2
    if address:
        context = ray.init(address=address, log_to_driver=log_to_driver)
    else:
        context = ray.init(num_cpus=os.cpu_count(), num_gpus=_local_gpus(), include_dashboard=dashboard,
                           dashboard_host='127.0.0.1', _node_ip_address='127.0.0.1', log_to_driver=log_to_driver)
    url = getattr(context, 'dashboard_url', None)
    if dashboard and url:
        token = Path.home() / '.ray' / 'auth_token'
        print(f'Ray dashboard: http://{url}  (sign in with the token in {token})')


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
