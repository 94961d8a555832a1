"""mmcv hooks owned by the search: measure each epoch's cost and report it to Ray Tune.

Hook order within ``after_train_epoch`` (mmcv runs lower priority numbers first):
``EpochCostHook`` (VERY_HIGH, 10) stops its clock before mmdet's ``EvalHook`` (LOW, 70) evaluates;
``TrialTensorboardHook`` (75) writes the evaluation to TensorBoard and ``TuneReportHook`` (80)
reports it, both before the logger hooks (VERY_LOW, 90) clear it from ``runner.log_buffer``.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from pathlib import Path

from mmcv.runner import HOOKS, Hook, TensorboardLoggerHook

from search.files import CHECKPOINT_FILE

EVAL_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')
REPORT_PRIORITY = 80
TENSORBOARD_PRIORITY = 75
_COMPUTE_KEY = 'dyntune_compute_seconds'  # cumulative training seconds, kept in the checkpoint's hook_msgs


class _PeakMemory:
    """Peak resident memory of this process (CPU) or peak allocated CUDA memory, in MiB, over a window.

    On Linux the kernel keeps the peak itself: writing 5 to /proc/self/clear_refs resets it to the
    current size and VmHWM in /proc/self/status reads it, so no thread competes with training for
    the interpreter lock. Elsewhere a thread samples the resident size every ``interval`` seconds.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread = None
        self._kernel = False

    def start(self) -> None:
        import torch

        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            Path('/proc/self/clear_refs').write_text('5')
            self._kernel = _kernel_peak_kib() is not None
        except OSError:
            self._kernel = False
        if self._kernel:
            return
        import psutil

        process = psutil.Process()
        self._peak = process.memory_info().rss
        self._stop.clear()

        def sample():
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        if self._cuda:
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        if self._kernel:
            return _kernel_peak_kib() / 1024
        self._stop.set()
        self._thread.join()
        return self._peak / 2**20


def _kernel_peak_kib() -> int | None:
    """VmHWM (peak resident set) of this process in KiB, or None where /proc does not give it."""
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@HOOKS.register_module()
class EpochCostHook(Hook):
    """Measure each training epoch's seconds, images per second and peak memory (evaluation excluded)."""

    def __init__(self):
        self._memory = _PeakMemory()
        self._metrics: dict[str, float] = {}
        self._start = 0.0

    def before_train_epoch(self, runner):
        self._memory.start()
        self._start = time.perf_counter()

    def after_train_epoch(self, runner):
        seconds = time.perf_counter() - self._start
        peak = self._memory.stop()
        loader = runner.data_loader
        images = len(loader) * loader.batch_size
        hook_msgs = runner.meta.setdefault('hook_msgs', {})
        hook_msgs[_COMPUTE_KEY] = float(hook_msgs.get(_COMPUTE_KEY, 0.0)) + seconds
        self._metrics = dict(train_seconds=seconds, images_per_second=images / max(seconds, 1e-9),
                             peak_memory_mb=peak, compute_seconds=hook_msgs[_COMPUTE_KEY])

    def epoch_metrics(self) -> dict[str, float]:
        return dict(self._metrics)


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Fail the trial with a clear reason as soon as its loss is NaN or infinite.

    Runs before mmcv's OptimizerHook (VERY_HIGH < ABOVE_NORMAL), so a diverged step never reaches
    the weights; Tune records the trial as failed with this message and retries it from its last
    checkpoint up to ``max_failures`` times.
    """

    def after_train_iter(self, runner):
        loss = runner.outputs.get('loss') if runner.outputs else None
        if loss is not None and not bool(loss.detach().isfinite().all()):
            raise FloatingPointError(f'non-finite loss {float(loss):g} at epoch {runner.epoch + 1}, iteration '
                                     f'{runner.inner_iter + 1}: lower the learning rate or check the data')


@HOOKS.register_module()
class TrialLearningRateHook(Hook):
    """Make the trial's configured learning rate win over one restored from a checkpoint.

    mmcv's LR hooks schedule from each param group's ``initial_lr``, which a resumed optimizer state
    brings back from the checkpoint. After a PBT exploit the checkpoint is another trial's and the
    configured rate is the mutated one, so it must replace the restored one (group ratios kept).
    Runs before the LR hook (HIGHEST < VERY_HIGH); a no-op when the two agree.
    """

    def __init__(self, lr: float):
        self.lr = float(lr)

    def before_run(self, runner):
        groups = runner.optimizer.param_groups
        reference = groups[0].get('initial_lr', groups[0]['lr'])
        for group in groups:
            ratio = group.get('initial_lr', group['lr']) / reference if reference else 1.0
            group['initial_lr'] = group['lr'] = self.lr * ratio


@HOOKS.register_module()
class TrialTensorboardHook(TensorboardLoggerHook):
    """mmcv's TensorBoard logger, flushed at every write and run before ``TuneReportHook``.

    Tune ends a stopped trial's process at its report, so anything logged after the report or left
    in the writer's buffer (flushed every 120 s by default) would be lost for early-stopped trials.
    """

    def log(self, runner):
        super().log(runner)
        self.writer.flush()


@HOOKS.register_module()
class TuneReportHook(Hook):
    """After each epoch's evaluation, report metrics and a checkpoint with ``ray.tune.report``.

    Metrics: the COCO bbox metrics of mmdet's evaluation (0.0 when the model predicted nothing),
    ``epoch``, ``eta_seconds`` of this trial, everything returned by ``epoch_metrics()`` of the
    runner's hooks and model modules (the dyncomponents protocol), and ``schedule_settled_epoch``,
    the latest ``last_phase_change_epoch`` of those components (search/schedule_aware.py).
    The epoch, bbox_mAP and compute seconds also go to live Ray gauges (search/monitoring.py).
    """

    def after_train_epoch(self, runner):
        import ray
        from ray import tune

        from search.monitoring import publish_trial_metrics

        metrics = {key: float(runner.log_buffer.output.get(key, 0.0)) for key in EVAL_KEYS}
        metrics['epoch'] = runner.epoch + 1
        settled = 0
        for source in [*runner.hooks, *runner.model.modules()]:
            if source is self:
                continue
            if callable(getattr(source, 'epoch_metrics', None)):
                metrics.update({k: float(v) for k, v in source.epoch_metrics().items()})
            if callable(getattr(source, 'last_phase_change_epoch', None)):
                settled = max(settled, int(source.last_phase_change_epoch(runner.max_epochs, len(runner.data_loader))))
        metrics['schedule_settled_epoch'] = settled
        done = runner.epoch + 1
        per_epoch = metrics.get('compute_seconds', 0.0) / max(done, 1)
        metrics['eta_seconds'] = per_epoch * (runner.max_epochs - done)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f'non-finite metrics after epoch {done}: {bad}')
        publish_trial_metrics(metrics, tune.get_context().get_trial_id())
        metrics['node_id'] = ray.get_runtime_context().get_node_id()  # which Ray node trained this epoch
        folder = Path(tempfile.mkdtemp(prefix='dyntune-ckpt-'))
        try:
            runner.save_checkpoint(str(folder), filename_tmpl=CHECKPOINT_FILE, create_symlink=False)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
