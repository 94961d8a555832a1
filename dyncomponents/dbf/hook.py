"""Dynamic Backbone Freezing for any mmdet 2.x detector: a hook plus a per-instance backbone gate."""
import time

import torch
from mmcv.runner import HOOKS, Hook
from torch.nn.modules.batchnorm import _BatchNorm

from ..memory import PeakMemory
from ..protocol import MetricSpec, Plot, declare
from .schedules import build_freeze_schedule

BN_MODES = ('train', 'eval')


def unwrap_model(model):
    """Return the detector inside ``MMDataParallel``/``MMDistributedDataParallel`` wrappers."""
    while hasattr(model, 'module'):
        model = model.module
    return model


class BackboneGate:
    """Replaces one backbone instance's ``forward``: while frozen, the backbone runs under ``torch.no_grad()``.

    Installed as an instance attribute, so only that detector is affected (no mmdet class is
    patched) and ``state_dict`` keys stay unchanged. Under ``no_grad`` autograd stores none of the
    backbone's activations and builds no graph into it, so the neck gets constant features (what
    the seed's ``detach`` gives) and the backbone backward never runs.

    Args:
        backbone (nn.Module): the detector's backbone.
        bn_mode (str): 'train' keeps BatchNorm layers as they are while frozen (in train mode they
            normalise with batch statistics and update their running statistics, as in the seed);
            'eval' switches the BatchNorm layers that are in train mode to eval for the frozen
            forward only, so they use and keep their running statistics. Default: 'train'.
    """

    def __init__(self, backbone, bn_mode='train'):
        if bn_mode not in BN_MODES:
            raise ValueError(f'bn_mode must be one of {BN_MODES}, got {bn_mode!r}')
        self.backbone = backbone
        self.bn_mode = bn_mode
        self.trains = True
        self._forward = backbone.forward

    def install(self):
        self.backbone.forward = self

    def remove(self):
        if self.backbone.__dict__.get('forward') is self:
            del self.backbone.forward

    def __call__(self, *args, **kwargs):
        # Evaluation already runs without grad; a frozen step only matters when autograd is on.
        if self.trains or not torch.is_grad_enabled():
            return self._forward(*args, **kwargs)
        switched = []
        if self.bn_mode == 'eval':
            switched = [m for m in self.backbone.modules() if isinstance(m, _BatchNorm) and m.training]
        for m in switched:
            m.train(False)
        try:
            with torch.no_grad():
                return self._forward(*args, **kwargs)
        finally:
            for m in switched:
                m.train(True)


@HOOKS.register_module()
class DynamicBackboneFreezingHook(Hook):
    """Dynamic Backbone Freezing (https://arxiv.org/abs/2407.15143): a schedule decides when the backbone trains.

    Before every training iteration the hook asks its schedule, a pure function of
    ``(runner.epoch, runner.inner_iter, runner.max_epochs, len(runner.data_loader))``, whether the
    backbone trains. In a frozen iteration the backbone forward runs under ``torch.no_grad()``
    (see :class:`BackboneGate`) and the backbone's ``.grad`` are set to None, so no optimizer
    (SGD with momentum and weight decay, AdamW, ...) moves them even if ``zero_grad`` was told to
    keep zero tensors. Nothing is decided "when epoch == k", so a resumed run or a Ray PBT restore
    takes the same decisions as an uninterrupted run.

    The running sums behind ``dbf_trained_fraction`` are kept in ``runner.meta['hook_msgs']``,
    which mmcv writes into every checkpoint and restores on ``runner.resume``. Metrics: ``METRICS``.

    Args:
        schedule (dict | BaseFreezeSchedule): the freezing schedule, e.g.
            ``dict(type='StepFreezeSchedule', rho=2)``. Default: ``StepFreezeSchedule(rho=2)``.
        bn_mode (str): BatchNorm behaviour in frozen steps, 'train' (the seed's: statistics keep
            updating) or 'eval' (see :class:`BackboneGate`). Default: 'train'.
        measure_memory (bool): report each epoch's peak memory (the process's peak resident set
            on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA; :mod:`dyncomponents.memory`).
            Default: True.
    """

    METRICS = declare('Dynamic Backbone Freezing', [
        MetricSpec('dbf_trained', 'fraction', "share of the latest epoch's iterations in which the backbone "
                   'trained: 1.0 or 0.0 with per-epoch schedules'),
        MetricSpec('dbf_trained_fraction', 'fraction', 'backbone-trained epochs / epochs so far, over the whole '
                   'run including what was trained before a resume'),
        MetricSpec('dbf_epoch_seconds', 's', "wall seconds from the start of the latest epoch's first iteration "
                   'to the end of its last'),
        MetricSpec('dbf_epoch_peak_mem_mb', 'MiB', "peak memory of the latest epoch's iterations (with "
                   'measure_memory)'),
    ], plots=[
        Plot(('dbf_trained',), style='timeline', title='DBF: share of the epoch with the backbone trained',
             ylabel='1 trained, 0 frozen',
             caption="DBF freeze timeline: one row per trial, one cell per epoch, coloured by the share of the "
                     "epoch's iterations in which the backbone trained (dbf_trained); blank: epoch not run."),
    ])

    def __init__(self, schedule=dict(type='StepFreezeSchedule', rho=2), bn_mode='train', measure_memory=True):
        if bn_mode not in BN_MODES:
            raise ValueError(f'bn_mode must be one of {BN_MODES}, got {bn_mode!r}')
        self.schedule = build_freeze_schedule(schedule)
        self.bn_mode = bn_mode
        self.measure_memory = bool(measure_memory)
        self.gate = None
        self._memory = None
        self._metrics = {}
        self._reset_epoch()

    def _reset_epoch(self):
        self._iters = 0
        self._trained_iters = 0
        self._t_start = None
        self._t_end = None

    def before_run(self, runner):
        if getattr(runner, 'max_epochs', None) is None:
            raise ValueError(f'DynamicBackboneFreezingHook needs an epoch-based runner with max_epochs, '
                             f'got {type(runner).__name__} with max_epochs=None')
        detector = unwrap_model(runner.model)
        backbone = getattr(detector, 'backbone', None)
        if not isinstance(backbone, torch.nn.Module):
            raise ValueError(f'DynamicBackboneFreezingHook needs a detector with a `backbone` module, '
                             f'got {type(detector).__name__}')
        existing = backbone.__dict__.get('forward')
        if isinstance(existing, BackboneGate):  # a second run on the same model: reuse, never stack
            existing.remove()
        self.gate = BackboneGate(backbone, self.bn_mode)
        self.gate.install()
        self._params = list(backbone.parameters())
        if self.measure_memory:
            self._memory = PeakMemory(self._params[0].device if self._params else 'cpu')
        if runner.meta is None:
            runner.meta = {}
        runner.meta.setdefault('hook_msgs', {})

    def after_run(self, runner):
        if self.gate is not None:
            self.gate.remove()
        if self._memory is not None:
            self._memory.stop()

    def before_train_epoch(self, runner):
        self._reset_epoch()

    def before_train_iter(self, runner):
        if self._t_start is None:
            # Timed from the first iteration: mmcv sleeps 2 s after before_train_epoch.
            self._t_start = time.perf_counter()
            if self._memory is not None:
                self._memory.start()
        trains = self.schedule.trains(runner.epoch, runner.inner_iter, runner.max_epochs, len(runner.data_loader))
        self.gate.trains = trains
        if not trains:
            # Optimizers skip parameters whose grad is None; zero tensors would still get
            # momentum and weight-decay updates.
            for p in self._params:
                p.grad = None

    def after_train_iter(self, runner):
        self._iters += 1
        self._trained_iters += int(self.gate.trains)
        self._t_end = time.perf_counter()
        msgs = runner.meta['hook_msgs']
        share = 1.0 / len(runner.data_loader)
        msgs['dbf_seen_epochs'] = msgs.get('dbf_seen_epochs', 0.0) + share
        msgs['dbf_trained_epochs'] = msgs.get('dbf_trained_epochs', 0.0) + share * self.gate.trains

    def after_train_epoch(self, runner):
        msgs = runner.meta['hook_msgs']
        metrics = {
            'dbf_trained': self._trained_iters / max(self._iters, 1),
            'dbf_trained_fraction': msgs.get('dbf_trained_epochs', 0.0) / max(msgs.get('dbf_seen_epochs', 0.0), 1e-12),
            'dbf_epoch_seconds': (self._t_end - self._t_start) if self._t_start is not None else 0.0,
        }
        if self._memory is not None:
            metrics['dbf_epoch_peak_mem_mb'] = self._memory.stop()
        self._metrics = metrics

    def epoch_metrics(self):
        """The latest training epoch's ``METRICS`` (see docs/dbf.md); reading changes nothing."""
        return dict(self._metrics)

    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        """Completed epochs before which the schedule has not gone through all its phases once."""
        return self.schedule.last_phase_change_epoch(max_epochs, iters_per_epoch)
