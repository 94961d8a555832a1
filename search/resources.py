"""Per-trial resources: whether one trial fits at all, a short probe of its cost, how many share a GPU.

``check_trial_fits`` compares one trial's request with what the machine or cluster has: a request
larger than the whole cluster would leave every trial PENDING forever, so it is a usage error.

The probe trains the search's base config (every parameter at its lowest value, no freezing) for
a few iterations in a Ray task with one trial's resources, and measures the seconds of one
full-cost epoch (the unit of ``budget=compute``) and, on a GPU, the peak allocated memory (which
decides how many trials are packed on one GPU with ``gpus_per_trial=auto``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

GPU_HEADROOM = 0.85  # of a GPU's memory that packed trials may fill: the CUDA context and fragmentation need the rest


def check_trial_fits(cpus: float, gpus: float, total_cpus: float, total_gpus: float, where: str = 'this machine') -> None:
    """Raise UsageError (one line) when one trial asks for more CPUs or GPUs than ``where`` has in total.

    Ray would accept such a trial and keep it PENDING forever. ``where`` names the machine or the
    cluster in the message, e.g. ``'the Ray cluster at auto'``.

    >>> check_trial_fits(1, 0, 2, 0)
    >>> check_trial_fits(1000, 0, 2, 0)
    Traceback (most recent call last):
    search.errors.UsageError: cpus_per_trial=1000 but this machine has 2 CPUs in total, so no trial could ever start; use cpus_per_trial=2 or less
    """
    from search.errors import UsageError

    if cpus > total_cpus:
        raise UsageError(f'cpus_per_trial={_fmt(cpus)} but {where} has {_fmt(total_cpus)} CPUs in total, so no trial '
                         f'could ever start; use cpus_per_trial={_fmt(total_cpus)} or less')
    if gpus > total_gpus:
        fix = f'gpus_per_trial={_fmt(total_gpus)} or less' if total_gpus else 'gpus_per_trial=0'
        raise UsageError(f'gpus_per_trial={_fmt(gpus)} but {where} has {_fmt(total_gpus)} GPUs in total, so no trial '
                         f'could ever start; use {fix}')


def check_trial_fits_locally(cpus: float, gpus: float) -> None:
    """:func:`check_trial_fits` against this machine (the local Ray that ``run.py`` starts gets all of it)."""
    import os

    import torch

    check_trial_fits(cpus, gpus, os.cpu_count() or 1, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f'{number:g}'


@dataclass(frozen=True)
class Probe:
    """What one probed trial costs."""

    epoch_seconds: float
    seconds_per_iter: float
    iters_per_epoch: int
    peak_gpu_mb: float | None
    gpu_total_mb: float | None


def gpu_fraction(peak_mb: float, total_mb: float, headroom: float = GPU_HEADROOM) -> float:
    """The GPU share of one trial: 1/n for the largest n trials whose peaks fit in ``headroom`` of the GPU.

    >>> gpu_fraction(10_000, 80_000)   # 6 trials of 10 GB fit in 68 GB
    0.16666666666666666
    """
    if peak_mb <= 0 or total_mb <= 0:
        raise ValueError(f'peak and total GPU memory must be > 0 MB, got {peak_mb} and {total_mb}')
    per_gpu = max(1, math.floor(total_mb * headroom / peak_mb))
    return 1.0 / per_gpu


def probe_trial(trial_spec, params: dict, iterations: int = 4, warmup: int = 2) -> Probe:
    """Run :func:`measure_trial_cost` in a Ray task with one trial's resources."""
    import ray

    task = ray.remote(num_cpus=trial_spec.cpus_per_trial, num_gpus=1 if trial_spec.gpus_per_trial else 0)(
        measure_trial_cost)
    return ray.get(task.remote(trial_spec, params, iterations, warmup))


def measure_trial_cost(trial_spec, params: dict, iterations: int = 4, warmup: int = 2) -> Probe:
    """Train ``iterations`` steps (after ``warmup``) of the trial config; measure time and GPU memory."""
    import torch
    from mmcv.runner import build_optimizer
    from mmdet.datasets import build_dataloader, build_dataset
    from mmdet.models import build_detector
    from mmdet.utils import build_dp

    import dyncomponents  # noqa: F401  (registers the plugins)
    from search.mmdet_config import build_trial_config

    torch.set_num_threads(max(1, int(trial_spec.cpus_per_trial)))
    cfg = build_trial_config(trial_spec.base_config, params)
    device = 'cuda' if trial_spec.gpus_per_trial and torch.cuda.is_available() else 'cpu'
    model = build_detector(cfg.model, train_cfg=cfg.get('train_cfg'), test_cfg=cfg.get('test_cfg'))
    model.init_weights()
    dataset = build_dataset(cfg.data.train)
    loader = build_dataloader(dataset, cfg.data.samples_per_gpu, cfg.data.workers_per_gpu, num_gpus=1, dist=False,
                              shuffle=True, seed=cfg.seed)
    model = build_dp(model, device, device_ids=[0])
    optimizer = build_optimizer(model, cfg.optimizer)
    model.train()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    started, done = None, 0
    for step, batch in enumerate(_cycle(loader)):
        if step == warmup:
            if device == 'cuda':
                torch.cuda.synchronize()
            started = time.perf_counter()
        outputs = model.train_step(batch, optimizer)
        optimizer.zero_grad()
        outputs['loss'].backward()
        optimizer.step()
        if step >= warmup:
            done += 1
        if done == iterations:
            break
    if device == 'cuda':
        torch.cuda.synchronize()
    per_iter = (time.perf_counter() - started) / iterations
    peak = total = None
    if device == 'cuda':
        peak = torch.cuda.max_memory_allocated() / 2**20
        total = torch.cuda.get_device_properties(0).total_memory / 2**20
    return Probe(epoch_seconds=per_iter * len(loader), seconds_per_iter=per_iter, iters_per_epoch=len(loader),
                 peak_gpu_mb=peak, gpu_total_mb=total)


def _cycle(loader):
    while True:
        yield from loader
