"""``run_search(spec)``: start Ray on loopback (or join a cluster), run the Tuner, write the results.

The spec is already validated; the scheduler, search algorithm and parameter space are built before
Ray starts so their option errors come first too. ``resume=true`` restores the Tuner from the
experiment folder: finished trials are kept and unfinished ones restart from their last checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import yaml

from pathlib import Path

from search.files import DEFERRED_STOPS_FILE, REFERENCE_KEY, RESULT_FILES, SPEC_FILE, trial_dirname
from search.schedulers import budget_for, create_scheduler
from search.search_algs import create_search_alg, grid_size
from search.space import to_tune
from search.spec import SearchSpec
from search.storage import join_uri

# Tune snapshots the experiment state at most this often; a resumed search restarts a running trial
# from the last checkpoint recorded in a snapshot, so keep it well under a minute.
os.environ.setdefault('TUNE_GLOBAL_CHECKPOINT_S', '10')
_NO_AUTO_LOGGERS = 'TUNE_DISABLE_AUTO_CALLBACK_LOGGERS'


def run_search(spec: SearchSpec) -> dict:
    """Run the search described by ``spec``; return the summary (also written to summary.json)."""
    param_space = {path: to_tune(dist) for path, dist in spec.params.items()}
    if spec.reference and spec.scheduler.population_based:
        param_space[REFERENCE_KEY] = False  # Tune's own generator takes only points of its space
    init_ray(spec)
    trial_spec, probe = _plan_resources(spec)
    scheduler = create_scheduler(spec, budget_for(spec, probe.epoch_seconds if probe else None),
                                 deferred_stops=spec.store.file(DEFERRED_STOPS_FILE))
    started = time.time()
    tuner = _tuner(spec, trial_spec, scheduler, create_search_alg(spec, reference=_reference_point(spec)), param_space)
    return _fit_and_end(spec, trial_spec, tuner, started)


def _fit_and_end(spec: SearchSpec, trial_spec, tuner, started: float) -> dict:
    """Run the Tuner (then finalize and the test split), write the results, and end truthfully; return the summary.

    Raises:
        SearchEnded: interrupted by SIGINT or SIGTERM (exit 130 or 143; the partial results are
            exported and marked partial, and the message gives the resume command), or no trial
            scored the metric (exit 1; the message gives the first failure and its log).
    """
    from search.endings import EXIT_NO_SCORE, SearchEnded, StopSignals, exit_code, interrupted_line, no_score_line
    from search.errors import release_stderr
    from search.export import export_experiment
    from search.report import gain_sentence

    release_stderr()  # no usage error can come any more: what run.py held back is shown now
    store = spec.store
    with StopSignals() as stop:
        _fit(tuner)
        stop.tune_run_ended()
        store.pull()  # an experiment in a URI: the result code reads a local copy (search/storage.py)
        summary = export_experiment(spec.experiment_path, wall_seconds=time.time() - started, partial=stop.reason,
                                    fetch=store.fetch)
        if spec.finalize_top_k and stop.signum is None and summary['best'] is not None:
            summary = _finalize(spec, trial_spec, summary, started, stop)
        if spec.test_ann and stop.signum is None and summary['best'] is not None:
            summary = _evaluate_on_test(spec, trial_spec)
        _report(spec.experiment_path)
        store.push(*RESULT_FILES)
        sys.stdout.flush()  # what was printed comes before the last line (stderr)
        if stop.signum is not None:
            raise SearchEnded(exit_code(stop.signum), interrupted_line(stop.signum, spec.experiment_path, summary))
    failed = no_score_line(summary)
    if failed:
        raise SearchEnded(EXIT_NO_SCORE, failed)
    against = f'; {gain_sentence(summary, spec.metric)}' if spec.reference else ''
    print(f'DynTune: TensorBoard of every trial: tensorboard --logdir {store.display}')
    print(f'DynTune: {summary["num_trials"]} trials, best {spec.metric} = '
          f'{summary["best"][spec.metric]}{against} -> {join_uri(store.display, "best")}')
    return summary


def _reference_point(spec: SearchSpec) -> dict | None:
    """The reference trial's Tune config: the marker, and at each sampled path the value it trains with.

    The trainable builds the reference from the spec and ignores these values; they are what Tune's
    status table shows. Tune's own generator (PBT, PB2) takes only values of the space, so there a
    path the reference does not have gets the lowest value instead of None.
    """
    if not spec.reference:
        return None
    from search.mmdet_config import get_path, has_path
    from search.spec import lowest_params

    config = spec.trial.reference_config
    placeholders = lowest_params(spec.params) if spec.scheduler.population_based else dict.fromkeys(spec.params)
    values = {path: get_path(config, path) if has_path(config, path) else placeholders[path] for path in spec.params}
    return {**values, REFERENCE_KEY: True}


def _num_samples(spec: SearchSpec) -> int:
    """Trials Tune creates: the grid ``num_samples`` times over (or ``num_samples`` draws), and the reference."""
    samples = spec.num_samples * (grid_size(spec.params) if spec.search_alg.name == 'grid' else 1)
    return samples + int(spec.reference)


def _tuner(spec: SearchSpec, trial_spec, scheduler, search_alg, param_space):
    from ray import tune

    from search.trainable import named_trainable, train_trial

    trainable = named_trainable(train_trial, {'cpu': trial_spec.cpus_per_trial, 'gpu': trial_spec.gpus_per_trial},
                                trial_spec=trial_spec)
    store = spec.store
    if spec.resume:
        store.pull()  # search_budget_s counts the seconds its trials already spent
        return tune.Tuner.restore(store.path if store.remote else str(spec.experiment_path), trainable=trainable,
                                  resume_errored=True, storage_filesystem=store.tune_storage().get('storage_filesystem'))
    store.write_text(SPEC_FILE, yaml.safe_dump(spec.config, sort_keys=False))
    single = not spec.multi_objective  # a multi-objective searcher and its scheduler get metric and mode themselves
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=spec.metric if single else None, mode=spec.mode if single else None,
                                    scheduler=scheduler, search_alg=search_alg, num_samples=_num_samples(spec),
                                    # Tune's own generator limits itself (search_algs.py); Tune would warn
                                    max_concurrent_trials=None if spec.scheduler.population_based
                                    else spec.max_concurrent_trials, reuse_actors=False,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=spec.experiment_name, **store.tune_storage(), sync_config=_sync_config(),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.num_to_keep,
                                                    checkpoint_score_attribute=spec.metric,
                                                    checkpoint_score_order=spec.mode),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            stop=_budget_stopper(spec), verbose=spec.ray.verbose, callbacks=_result_loggers()),
    )


def _sync_config():
    """Tune uploads each trial's working directory to its folder in storage (the trial folder on a cluster).

    The trials write trial_config.py, mmdet's logs, TensorBoard events and component_metrics.json
    there (search/storage.py: trial_folder); with sync_artifacts Tune persists them at each checkpoint
    (every epoch) and when the trial ends, wherever the trial ran.
    """
    from ray import tune

    return tune.SyncConfig(sync_artifacts=True)


def _result_loggers() -> list:
    """Tune's result files (result.json, params.json, progress.csv), without Tune's own TensorBoard logger.

    The trials log to TensorBoard themselves (TrialTensorboardHook, in the experiment folder); Tune's
    logger would only add a copy of the reported numbers and point users at a staging folder in /tmp.
    """
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _fit(tuner):
    """``tuner.fit()`` with only the loggers the RunConfig names (:func:`_result_loggers`)."""
    previous = os.environ.get(_NO_AUTO_LOGGERS)
    os.environ[_NO_AUTO_LOGGERS] = '1'  # read by Tune when fit() creates its default callbacks
    try:
        return tuner.fit()
    finally:
        if previous is None:
            os.environ.pop(_NO_AUTO_LOGGERS, None)
        else:
            os.environ[_NO_AUTO_LOGGERS] = previous


def _evaluate_on_test(spec: SearchSpec, trial_spec) -> dict:
    """Evaluate best/ (each finalist's best run too) and the reference once on the test split; refresh the results."""
    import json

    from search.evaluate import evaluate_on_test
    from search.export import read_summary
    from search.files import TEST_FILE, TRIAL_CONFIG
    from search.results import gains, load_records, reference_record

    experiment = spec.experiment_path
    runs = {'best': (str(experiment / 'best' / 'best_config.py'), str(experiment / 'best' / 'best.pth'))}
    reference = reference_record(load_records(experiment, spec.metric, spec.mode))
    if reference is not None and reference.best_checkpoint:
        checkpoint = spec.store.fetch(reference.best_checkpoint)  # a URI's checkpoints stay in it until read
        runs['reference'] = (str(Path(reference.path) / TRIAL_CONFIG), str(checkpoint))
    for row in (read_summary(experiment).get('finalize') or []):
        if row.get('checkpoint'):
            runs[f"finalist {row['index']}"] = (row['config'], str(spec.store.fetch(row['checkpoint'])))
    print(f'DynTune: evaluating {", ".join(runs)} once on the test split {spec.test_ann}', flush=True)
    metrics = evaluate_on_test(runs, spec.test_ann, trial_spec.cpus_per_trial, trial_spec.gpus_per_trial)
    test = {'ann_file': spec.test_ann, **{name: metrics.get(name, {'error': 'no checkpoint'}) for name in runs}}
    (experiment / TEST_FILE).write_text(json.dumps(test, indent=2) + '\n')  # pushed with the results
    summary = read_summary(experiment)
    summary['test'] = test
    summary.update({'gain': gains(summary, spec.metric)} if gains(summary, spec.metric) else {})
    (experiment / 'summary.json').write_text(json.dumps(summary, indent=2, default=str) + '\n')
    return summary


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


def _finalize(spec: SearchSpec, trial_spec, summary: dict, started: float, stop) -> dict:
    """Re-train the top_k configurations at the full budget with ``finalize_seeds`` seeds each.

    The search's own ranking rewards lucky seeds and trials stopped early; this picks the
    configuration with the best mean over seeds and exports its best run as ``best/``.
    """
    from ray import tune

    from search.export import export_finalists
    from search.results import load_records
    from search.schedulers import MAX_EPOCHS_PATH
    from search.trainable import named_trainable, train_finalist

    ranked = sorted((r for r in load_records(spec.experiment_path, spec.metric, spec.mode)
                     if r.best is not None and not r.reference),
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
    _fit(tune.Tuner(trainable, param_space={'finalist': tune.grid_search(list(range(len(finalists)))),
                                       'seed': tune.grid_search(seeds)},
               tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode,
                                           max_concurrent_trials=spec.max_concurrent_trials,
                                           trial_dirname_creator=trial_dirname),
               run_config=tune.RunConfig(name='finalize', sync_config=_sync_config(), **_finalize_storage(spec.store),
                                         checkpoint_config=tune.CheckpointConfig(
                                             num_to_keep=1, checkpoint_score_attribute=spec.metric,
                                             checkpoint_score_order=spec.mode),
                                         verbose=spec.ray.verbose, callbacks=_result_loggers())))
    stop.tune_run_ended()
    spec.store.pull()
    return export_finalists(spec.experiment_path, finalists, wall_seconds=time.time() - started, partial=stop.reason,
                            fetch=spec.store.fetch)


def _finalize_storage(store) -> dict:
    """Tune's storage for the finalize/ re-trainings: a folder inside the experiment."""
    if store.remote:
        return dict(storage_path=store.path, storage_filesystem=store.fs)
    return dict(storage_path=str(store.local))


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
    address = spec.ray.address
    host = spec.ray.dashboard_host
    dashboard = dashboard_options(spec.ray.dashboard, host)
    log_to_driver = spec.ray.verbose >= 2
    if address:
        context = ray.init(address=address, log_to_driver=log_to_driver)
        _check_cluster_fits(spec, address)
        _check_nodes_read_inputs(spec)
    else:
        # address='local': a new Ray even when `ray start` left a cluster registered on this machine.
        context = ray.init(address='local', num_cpus=os.cpu_count(), num_gpus=_local_gpus(),
                           _node_ip_address=LOOPBACK, log_to_driver=log_to_driver, **dashboard)
    url = getattr(context, 'dashboard_url', None)
    if url and (address or dashboard['include_dashboard']):
        # A joined cluster's dashboard listens where that cluster put it, not on ray.dashboard_host.
        for line in dashboard_banner(url, url.rsplit(':', 1)[0] if address else host):
            print(line, flush=True)
    elif dashboard['include_dashboard'] != spec.ray.dashboard:
        print('Ray dashboard: off (its packages are missing: pip install "ray[default]")', flush=True)


def _check_cluster_fits(spec: SearchSpec, address: str) -> None:
    """Raise UsageError if one trial asks for more than the joined cluster has: it would stay PENDING forever.

    The cluster's resources are those of its nodes now; an autoscaling cluster must have grown first.
    The experiment folder does not exist yet (``_tuner`` creates it), so a usage error leaves none.
    """
    import ray

    from search.errors import UsageError
    from search.resources import check_trial_fits

    total = ray.cluster_resources()
    try:
        check_trial_fits(spec.trial.cpus_per_trial, spec.trial.gpus_per_trial, total.get('CPU', 0.0),
                         total.get('GPU', 0.0), where=f'the Ray cluster at {address}')
    except UsageError:
        ray.shutdown()  # leaves the cluster, which keeps running
        raise


def _check_nodes_read_inputs(spec: SearchSpec) -> None:
    """Raise UsageError if a node of the joined cluster cannot read the dataset, load_from or the base (search/nodes.py)."""
    import ray

    from search.errors import UsageError
    from search.nodes import check_nodes, input_paths

    try:
        check_nodes(input_paths(spec.config, spec.trial.base_config))
    except UsageError:
        ray.shutdown()  # leaves the cluster, which keeps running
        raise


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
