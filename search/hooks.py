"""mmcv hooks owned by the search: measure each epoch's cost, log it to TensorBoard and report it to Ray Tune.

Hook order within ``after_train_epoch`` (mmcv runs lower priority numbers first):
``RngStateHook`` (HIGHEST, 0) stores the random generators' states in ``runner.meta``;
``EpochCostHook`` (VERY_HIGH, 10) stops its clock before mmdet's ``EvalHook`` (LOW, 70) evaluates;
``TrialTensorboardHook`` (75) writes the evaluation to TensorBoard and ``TuneReportHook`` (80)
reports it, both before the logger hooks (VERY_LOW, 90) clear it from ``runner.log_buffer``.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path

from mmcv.runner import HOOKS, Hook, TensorboardLoggerHook

from dyncomponents.memory import PeakMemory
from dyncomponents.protocol import collect_epoch_metrics, declarations_in, settled_epoch
from search.files import CHECKPOINT_FILE, COMPONENT_METRICS_FILE
from search.metrics import COCO_METRICS
from search.monitoring import publish_trial_metrics

REPORT_PRIORITY = 80
TENSORBOARD_PRIORITY = 75
_COMPUTE_KEY = 'dyntune_compute_seconds'  # cumulative training seconds, kept in the checkpoint's hook_msgs
RNG_STATE_KEY = 'dyntune_rng_state'  # runner.meta key (saved in every checkpoint) of the generators' states


@HOOKS.register_module()
class EpochCostHook(Hook):
    """Measure each training epoch's seconds, images per second and peak memory (evaluation excluded).

    Its metrics are ``search.metrics.COST_METRICS``; the peak is that of the device the model trains on.
    The clock starts at the epoch's first iteration, not at ``before_train_epoch``: what lies between
    the two (data loader start; mmcv's 2 s sleep outside DynTune's trials) is no training.
    """

    def __init__(self):
        self._memory = None
        self._metrics: dict[str, float] = {}
        self._start = 0.0

    def before_train_iter(self, runner):
        if runner.inner_iter != 0:
            return
        if self._memory is None:
            self._memory = PeakMemory(next(runner.model.parameters()).device)
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
        """The latest training epoch's cost; reading changes nothing."""
        return dict(self._metrics)


def rng_state() -> dict:
    """The states of Python's ``random``, NumPy's global generator, torch's CPU generator and CUDA's.

    Only types that ``torch.load(weights_only=True)`` (mmcv's resume) reads back: lists, tuples,
    numbers, strings and tensors.
    """
    import numpy as np
    import torch

    numpy_state = np.random.get_state(legacy=False)
    state = dict(python=random.getstate(), numpy=dict(
        bit_generator=numpy_state['bit_generator'], key=numpy_state['state']['key'].tolist(),
        pos=int(numpy_state['state']['pos']), has_gauss=int(numpy_state['has_gauss']),
        gauss=float(numpy_state['gauss'])), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Set the generators to ``state`` (from :func:`rng_state`); CUDA's only where the same GPUs are there."""
    import numpy as np
    import torch

    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state['numpy']
    np.random.set_state(dict(bit_generator=numpy_state['bit_generator'], has_gauss=numpy_state['has_gauss'],
                             gauss=numpy_state['gauss'],
                             state=dict(key=np.asarray(numpy_state['key'], dtype=np.uint32), pos=numpy_state['pos'])))
    # .cpu(): on a GPU machine mmcv's resume maps every tensor of the checkpoint, these too, onto the GPU.
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


@HOOKS.register_module()
class RngStateHook(Hook):
    """Make a trial restored from a checkpoint continue exactly as if it had not been stopped.

    After each training epoch it stores the random generators' states (:func:`rng_state`) in
    ``runner.meta``, which mmcv writes into the checkpoint that ``TuneReportHook`` saves next and
    brings back with ``resume_from``. Before each epoch it sets the generators to the stored states.
    So what is random in an epoch (GroupSampler's shuffle on NumPy's generator, the DataLoader's
    worker base seed on torch's, the augmentations) depends only on the last checkpoint: an
    uninterrupted trial, a resumed search, a retried failure and a PBT exploit (which continues
    from another trial's checkpoint, and so with that trial's data order) train the same epoch
    alike. Register it at HIGHEST priority: it must run before anything random in
    ``before_train_epoch``, store the state before the checkpoint is written, and take a restored
    state out of ``runner.meta`` in ``before_run`` before mmcv's TextLoggerHook writes the meta to
    its JSON log (which cannot hold tensors).
    """

    def __init__(self):
        self._restored = None

    def before_run(self, runner):
        self._restored = (runner.meta or {}).pop(RNG_STATE_KEY, None)

    def after_train_epoch(self, runner):
        if runner.meta is None:
            runner.meta = {}
        runner.meta[RNG_STATE_KEY] = rng_state()

    def before_train_epoch(self, runner):
        state = (runner.meta or {}).get(RNG_STATE_KEY, self._restored)
        if state is not None:
            set_rng_state(state)


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


def tensorboard_hook(log_dir: Path, interval: int) -> dict | None:
    """A ``custom_hooks`` entry logging the trial to TensorBoard in ``log_dir``, or None without a writer.

    ``TrialTensorboardHook`` logs the training losses, learning rate and momentum every ``interval``
    iterations and at each epoch's end, and the evaluation metrics (``val/bbox_mAP``...) every epoch.
    mmcv imports its writer only when the run starts, so check here that one is installed rather than
    fail the trial then.
    """
    import importlib.util

    if not any(importlib.util.find_spec(name) for name in ('tensorboardX', 'tensorboard')):
        return None
    return dict(type='TrialTensorboardHook', log_dir=str(log_dir), interval=int(interval), ignore_last=False,
                priority=TENSORBOARD_PRIORITY)


@HOOKS.register_module()
class TuneReportHook(Hook):
    """After each epoch's evaluation, report metrics and a checkpoint with ``ray.tune.report``.

    Metrics (``search.metrics``): the COCO bbox metrics of mmdet's evaluation (0.0 when the model
    predicted nothing), ``epoch``, ``EpochCostHook``'s cost metrics, ``eta_seconds`` of this trial,
    the metrics of every component among the runner's hooks and model modules
    (``dyncomponents.protocol.collect_epoch_metrics``), and ``schedule_settled_epoch``, the latest
    ``last_phase_change_epoch`` among them (search/schedule_aware.py). Before the first epoch the
    components' declarations go to ``component_metrics.json`` in the trial folder, where the result
    files and the report read them. The epoch, bbox_mAP and compute seconds also go to live Ray
    gauges (search/monitoring.py).
    """

    def before_run(self, runner):
        from search.storage import trial_folder

        trial_dir = trial_folder()  # the trial's folder, uploaded to the experiment's storage by Tune
        if trial_dir is not None:  # None outside a Tune trial, where nothing reads the declarations
            write_component_metrics(trial_dir, declarations_in(_sources(runner)))

    def after_train_epoch(self, runner):
        import ray
        from ray import tune

        metrics = {key: float(runner.log_buffer.output.get(key, 0.0)) for key in COCO_METRICS}
        metrics['epoch'] = runner.epoch + 1
        for hook in runner.hooks:
            if isinstance(hook, EpochCostHook):
                metrics.update(hook.epoch_metrics())
        metrics.update(collect_epoch_metrics(_sources(runner)))
        metrics['schedule_settled_epoch'] = settled_epoch(_sources(runner), runner.max_epochs, len(runner.data_loader))
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


def _sources(runner) -> list:
    """Where components live: the runner's hooks and the model's modules."""
    return [*runner.hooks, *runner.model.modules()]


def write_component_metrics(trial_dir: Path, declarations) -> Path:
    """Write the components' ``dyncomponents.protocol.ComponentMetrics`` as ``component_metrics.json``."""
    path = trial_dir / COMPONENT_METRICS_FILE
    trial_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps([d.to_dict() for d in declarations], indent=1) + '\n')
    tmp.replace(path)
    return path
