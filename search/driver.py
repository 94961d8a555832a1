"""``run_search(spec)``: start Ray on loopback (or join a cluster), run the Tuner, write the results.

The spec is already validated; the scheduler, search algorithm and parameter space are built before
Ray starts so their option errors come first too. ``resume=true`` restores the Tuner from the
experiment folder: finished trials are kept and unfinished ones restart from their last checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import time

import yaml

from search.files import DEFERRED_STOPS_FILE, SPEC_FILE
from search.schedulers import Budget, budget_for, create_scheduler
from search.search_algs import create_search_alg
from search.space import to_tune
from search.spec import SearchSpec

# Tune snapshots the experiment state at most this often; a resumed search restarts a running trial
# from the last checkpoint recorded in a snapshot, so keep it well under a minute.
os.environ.setdefault('TUNE_GLOBAL_CHECKPOINT_S', '10')


def run_search(spec: SearchSpec) -> dict:
    """Run the search described by ``spec``; return the summary (also written to summary.json)."""
    from search.export import export_experiment

    search_alg = create_search_alg(spec)
    grid = spec.search_alg.get('name') == 'grid'
    param_space = {path: to_tune(dist, grid=grid) for path, dist in spec.params.items()}
    create_scheduler(spec, Budget(budget_for(spec, 1.0).time_attr, 1.0))  # option errors before Ray starts

    init_ray(spec)
    trial_spec, probe = _plan_resources(spec)
    scheduler = create_scheduler(spec, budget_for(spec, probe.epoch_seconds if probe else None),
                                 deferred_stops=spec.experiment_path / DEFERRED_STOPS_FILE)
    started = time.time()
    tuner = _tuner(spec, trial_spec, scheduler, search_alg, param_space)
    tuner.fit()
    summary = export_experiment(spec.experiment_path, wall_seconds=time.time() - started)
    if spec.finalize_top_k:
        summary = _finalize(spec, trial_spec, summary, started)
    _report(spec.experiment_path)
    print(f'DynTune: {summary["num_trials"]} trials, best {spec.metric} = '
          f'{(summary["best"] or {}).get(spec.metric)} -> {spec.experiment_path / "best"}')
    return summary


def _tuner(spec: SearchSpec, trial_spec, scheduler, search_alg, param_space):
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from search.monitoring import named_trainable
    from search.trainable import train_trial

    trainable = named_trainable(train_trial, {'cpu': trial_spec.cpus_per_trial, 'gpu': trial_spec.gpus_per_trial},
                                trial_spec=trial_spec)
    if spec.resume:
        return tune.Tuner.restore(str(spec.experiment_path), trainable=trainable, resume_errored=True)
    spec.experiment_path.mkdir(parents=True)
    (spec.experiment_path / SPEC_FILE).write_text(yaml.safe_dump(spec.config, sort_keys=False))
    single = not spec.scheduler_metric  # nsga2 gives metric and mode to its searcher and scheduler itself
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=spec.metric if single else None, mode=spec.mode if single else None,
                                    scheduler=scheduler, search_alg=search_alg, num_samples=spec.num_samples,
                                    # a BasicVariantGenerator limits itself (search_algs.py); Tune would warn
                                    max_concurrent_trials=None if isinstance(search_alg, BasicVariantGenerator)
                                    else spec.max_concurrent_trials, reuse_actors=False),
        run_config=tune.RunConfig(
            name=spec.experiment_name, storage_path=str(spec.experiment_dir),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.num_to_keep,
                                                    checkpoint_score_attribute=spec.metric,
                                                    checkpoint_score_order=spec.mode),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            stop=_budget_stopper(spec), verbose=int(spec.ray.get('verbose', 1))),
    )


def _budget_stopper(spec: SearchSpec):
    if spec.search_budget_s is None:
        return None
    from search.results import trial_seconds
    from search.stoppers import SearchBudgetStopper

    return SearchBudgetStopper(spec.search_budget_s, spent=trial_seconds(spec.experiment_path) if spec.resume else None)


def _report(experiment: Path) -> None:
    """Write report.html; the results are already on disk, so a plotting failure only warns."""
    from search.report import write_report

    try:
        print(f'DynTune report: {write_report(experiment)}')
    except Exception as err:  # noqa: BLE001  (matplotlib or optuna trouble must not hide finished results)
        print(f'DynTune: the report could not be written ({type(err).__name__}: {err}); '
              f'retry with python search/report.py {experiment}')


def _finalize(spec: SearchSpec, trial_spec, summary: dict, started: float) -> dict:
    """Re-train the top_k configurations at the full budget with ``finalize_seeds`` seeds each.

    The search's own ranking rewards lucky seeds and trials stopped early; this picks the
    configuration with the best mean over seeds and exports its best run as ``best/``.
    """
    from ray import tune

    from search.export import export_finalists
    from search.monitoring import named_trainable
    from search.results import load_records
    from search.schedulers import MAX_EPOCHS_PATH
    from search.trainable import train_finalist

    ranked = sorted((r for r in load_records(spec.experiment_path, spec.metric, spec.mode) if r.best is not None),
                    key=lambda r: r.best, reverse=spec.mode == 'max')[:spec.finalize_top_k]
    finalists = []
    for record in ranked:
        params = dict(record.params)
        if MAX_EPOCHS_PATH in params:
            params[MAX_EPOCHS_PATH] = spec.max_epochs  # the full budget, whatever the trial was given
        finalists.append(params)
    seeds = [spec.seed + i for i in range(spec.finalize_seeds)]
    trainable = named_trainable(train_finalist, {'cpu': trial_spec.cpus_per_trial, 'gpu': trial_spec.gpus_per_trial},
                                trial_spec=trial_spec, finalists=finalists)
    tune.Tuner(trainable, param_space={'finalist': tune.grid_search(list(range(len(finalists)))),
                                       'seed': tune.grid_search(seeds)},
               tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode,
                                           max_concurrent_trials=spec.max_concurrent_trials),
               run_config=tune.RunConfig(name='finalize', storage_path=str(spec.experiment_path),
                                         checkpoint_config=tune.CheckpointConfig(
                                             num_to_keep=1, checkpoint_score_attribute=spec.metric,
                                             checkpoint_score_order=spec.mode),
                                         verbose=int(spec.ray.get('verbose', 1)))).fit()
    return export_finalists(spec.experiment_path, finalists, wall_seconds=time.time() - started)


def _plan_resources(spec: SearchSpec):
    """Probe one trial when the budget is compute or trials are packed on GPUs; return (trial spec, probe)."""
    if spec.budget != 'compute' and not spec.pack_gpus:
        return spec.trial, None
    from search.resources import gpu_fraction, probe_trial
    from search.spec import lowest_params

    probe = probe_trial(spec.trial, lowest_params(spec.params))
    print(f'DynTune probe: {probe.epoch_seconds:.1f} s per full-cost epoch ({probe.iters_per_epoch} iterations)'
          + (f', peak GPU memory {probe.peak_gpu_mb:.0f} of {probe.gpu_total_mb:.0f} MiB' if probe.peak_gpu_mb else ''))
    trial_spec = spec.trial
    if spec.pack_gpus:
        share = gpu_fraction(probe.peak_gpu_mb, probe.gpu_total_mb)
        print(f'DynTune: {round(1 / share)} trials per GPU (gpus_per_trial={share:.3f})')
        trial_spec = dataclasses.replace(trial_spec, gpus_per_trial=share)
    return trial_spec, probe


def init_ray(spec: SearchSpec) -> None:
    """Start Ray on 127.0.0.1 (token authentication left on), or join ``ray.address``; no-op if running.

    The dashboard (``dashboard``, alias ``ray.dashboard``) listens on ``ray.dashboard_host``; its address
    and sign-in are printed (search/monitoring.py, docs/monitoring.md).
    """
    import ray

    from search.monitoring import LOOPBACK, dashboard_banner, dashboard_options

    if ray.is_initialized():
        return
    address = spec.ray.get('address')
    host = str(spec.ray.get('dashboard_host') or LOOPBACK)
    dashboard = dashboard_options(bool(spec.ray.get('dashboard', True)), host)
    log_to_driver = int(spec.ray.get('verbose', 1)) >= 2
    if address:
        context = ray.init(address=address, log_to_driver=log_to_driver)
    else:
        # address='local': a new Ray even when `ray start` left a cluster registered on this machine.
        context = ray.init(address='local', num_cpus=os.cpu_count(), num_gpus=_local_gpus(),
                           _node_ip_address=LOOPBACK, log_to_driver=log_to_driver, **dashboard)
    url = getattr(context, 'dashboard_url', None)
    if url and (address or dashboard['include_dashboard']):
        # A joined cluster's dashboard listens where that cluster put it, not on ray.dashboard_host.
        for line in dashboard_banner(url, url.rsplit(':', 1)[0] if address else host):
            print(line, flush=True)
    elif dashboard['include_dashboard'] != bool(spec.ray.get('dashboard', True)):
        print('Ray dashboard: off (its packages are missing: pip install "ray[default]")', flush=True)


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
