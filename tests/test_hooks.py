"""The search's mmcv hooks (search/hooks.py) in a real mmcv EpochBasedRunner with a toy model.

The runner gets the hooks mmdet's ``train_detector`` registers (step LR, optimizer, IterTimerHook,
TextLoggerHook, mmdet's EvalHook at LOW) and the search's hooks with the priorities
``search.trainable.train_mmdet`` gives them; the model is one Linear layer trained on 8 samples in
batches of 2. Each test asserts what one hook does; the last one runs ``TuneReportHook`` inside a
real Tune trial, since it reports through Tune's session.
"""
import logging
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mmcv.runner import EpochBasedRunner, Hook
from mmdet.core import EvalHook
from torch import nn
from torch.utils.data import DataLoader, Dataset

import search.hooks  # noqa: F401  (registers the search's hooks)
from search.files import CHECKPOINT_FILE
from search.hooks import REPORT_PRIORITY, TENSORBOARD_PRIORITY
from search.metrics import COCO_METRICS
from search.trainable import skip_epoch_sleeps

SAMPLES, BATCH = 8, 2  # 4 iterations per epoch


class ToyData(Dataset):
    """8 samples of 2 features; ``evaluate`` scores like a detection dataset: bbox_mAP 0.1 per evaluation so far."""

    def __init__(self, eval_seconds=0.0):
        self.x = torch.linspace(-1, 1, 2 * SAMPLES).reshape(SAMPLES, 2)
        self.eval_seconds = eval_seconds
        self.evaluations = 0

    def __len__(self):
        return SAMPLES

    def __getitem__(self, index):
        return dict(x=self.x[index])

    def evaluate(self, results, logger=None, **kwargs):
        time.sleep(self.eval_seconds)
        self.evaluations += 1
        return {'bbox_mAP': round(0.1 * self.evaluations, 6)}


class ToyModel(nn.Module):
    """A Linear layer with mmcv's ``train_step`` and mmdet's test-time call; loss NaN at call ``nan_at_call``."""

    def __init__(self, nan_at_call=None):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.nan_at_call = nan_at_call
        self.calls = 0

    def forward(self, x, return_loss=True, rescale=False):
        out = self.linear(x)
        return out if return_loss else list(out.detach())

    def train_step(self, data, optimizer, **kwargs):
        self.calls += 1
        loss = ((self.linear(data['x']) - 1.0) ** 2).mean()
        if self.calls == self.nan_at_call:
            loss = loss * float('nan')
        return dict(loss=loss, log_vars=dict(loss=loss.item()), num_samples=len(data['x']))


def search_hooks(lr, tensorboard_dir=None, report=False):
    """The search's hooks with the priorities train_mmdet registers them with."""
    hooks = [dict(type='TrialLearningRateHook', lr=lr, priority='HIGHEST'),
             dict(type='FiniteLossHook', priority='VERY_HIGH'),
             dict(type='EpochCostHook', priority='VERY_HIGH')]
    if tensorboard_dir:
        hooks.append(dict(type='TrialTensorboardHook', log_dir=str(tensorboard_dir), interval=2, ignore_last=False,
                          priority=TENSORBOARD_PRIORITY))
    if report:
        hooks.append(dict(type='TuneReportHook', priority=REPORT_PRIORITY))
    return hooks


def make_runner(work_dir, custom_hooks, model=None, lr=0.1, max_epochs=3, data=None):
    """A real EpochBasedRunner with mmdet's training hooks; the bias trains at twice the weight's rate."""
    model = model or ToyModel()
    optimizer = torch.optim.SGD([{'params': [model.linear.weight]}, {'params': [model.linear.bias], 'lr': 2 * lr}],
                                lr=lr, momentum=0.9)
    runner = EpochBasedRunner(model, optimizer=optimizer, work_dir=str(work_dir), logger=logging.getLogger('toy'),
                              max_epochs=max_epochs, meta={})
    runner.register_training_hooks(lr_config=dict(policy='step', step=[1], gamma=0.1),
                                   optimizer_config=dict(grad_clip=None), checkpoint_config=None,
                                   log_config=dict(interval=2, hooks=[dict(type='TextLoggerHook')]),
                                   custom_hooks_config=custom_hooks)
    runner.register_hook(EvalHook(DataLoader(data or ToyData(), batch_size=4), interval=1), priority='LOW')
    return runner


def train_loader():
    return DataLoader(ToyData(), batch_size=BATCH)


def run(runner):
    runner.run([train_loader()], [('train', 1)])


def hook(runner, name):
    return next(h for h in runner.hooks if type(h).__name__ == name)


class Probe(Hook):
    """Calls ``fn(event, runner)`` at every epoch boundary and iteration; register it at the priority to observe."""

    def __init__(self, fn):
        self.fn = fn

    def before_train_epoch(self, runner):
        self.fn('before_train_epoch', runner)

    def after_train_epoch(self, runner):
        self.fn('after_train_epoch', runner)

    def before_train_iter(self, runner):
        self.fn('before_train_iter', runner)


def save_last_epoch(runner, folder):
    """Save a checkpoint in ``folder`` at the end of the last epoch, as TuneReportHook does (mmcv's runner
    stores ``epoch + 1``, so a checkpoint saved after ``run`` would claim one epoch too many)."""

    def save(event, runner):
        if event == 'after_train_epoch' and runner.epoch + 1 == runner.max_epochs:
            runner.save_checkpoint(str(folder), filename_tmpl=CHECKPOINT_FILE, create_symlink=False)

    runner.register_hook(Probe(save), priority='LOWEST')
    return Path(folder) / CHECKPOINT_FILE


def test_priorities_order_the_hooks_as_search_hooks_documents(tmp_path):
    runner = make_runner(tmp_path, search_hooks(0.1, tensorboard_dir=tmp_path / 'tb', report=True))
    names = [type(h).__name__ for h in runner.hooks]
    position = names.index
    # before_run: the trial's learning rate is set before the LR hook reads it.
    assert position('TrialLearningRateHook') < position('StepLrUpdaterHook')
    # after_train_iter: a non-finite loss stops the trial before the optimizer steps.
    assert position('FiniteLossHook') < position('OptimizerHook')
    # after_train_epoch: the clock stops before evaluation; TensorBoard and Tune see the evaluation
    # before the logger clears it from the log buffer.
    chain = ['EpochCostHook', 'EvalHook', 'TrialTensorboardHook', 'TuneReportHook', 'TextLoggerHook']
    assert [position(n) for n in chain] == sorted(position(n) for n in chain), names


def test_trials_skip_the_runners_epoch_transition_sleeps(tmp_path, monkeypatch):
    """mmcv's runner sleeps 2 s before each epoch and 1 s after ``run``, guards for distributed data loaders;
    a trial trains in one process, and ``skip_epoch_sleeps`` drops them there."""
    from mmcv.runner import epoch_based_runner

    slept = []
    monkeypatch.setattr(epoch_based_runner, 'time', SimpleNamespace(sleep=slept.append))  # the runner as shipped
    run(make_runner(tmp_path / 'shipped', [], max_epochs=2))
    assert slept == [2, 2, 1]

    slept.clear()
    skip_epoch_sleeps()
    run(make_runner(tmp_path / 'trial', [], max_epochs=2))
    assert slept == []


def test_epoch_cost_hook_times_training_without_evaluation_and_sums_compute(tmp_path):
    seen = []

    def start(event, runner):  # at HIGHEST: before EpochCostHook (VERY_HIGH) starts its clock
        if event == 'before_train_epoch':
            seen.append(dict(start=time.perf_counter()))

    def end(event, runner):  # at NORMAL: after EpochCostHook stopped its clock, before evaluation (LOW)
        if event == 'after_train_epoch':
            seen[-1].update(end=time.perf_counter(), **hook(runner, 'EpochCostHook').epoch_metrics())

    runner = make_runner(tmp_path, search_hooks(0.1), data=ToyData(eval_seconds=0.2))
    runner.register_hook(Probe(start), priority='HIGHEST')
    runner.register_hook(Probe(end), priority='NORMAL')
    run(runner)
    assert len(seen) == 3
    compute = 0.0
    for epoch in seen:
        # The clock ran inside the window the probe saw, which closes before the 0.2 s evaluations.
        assert 0 < epoch['train_seconds'] <= epoch['end'] - epoch['start']
        assert epoch['images_per_second'] == pytest.approx(SAMPLES / epoch['train_seconds'])
        compute += epoch['train_seconds']
        assert epoch['compute_seconds'] == pytest.approx(compute)
        assert epoch['peak_memory_mb'] > 0
    # kept where mmcv checkpoints it, so a resumed trial goes on counting
    assert runner.meta['hook_msgs']['dyntune_compute_seconds'] == pytest.approx(compute)


def test_compute_seconds_go_on_counting_after_a_resume(tmp_path):
    first = make_runner(tmp_path / 'a', search_hooks(0.1), max_epochs=2)
    checkpoint = save_last_epoch(first, tmp_path)
    run(first)
    before = hook(first, 'EpochCostHook').epoch_metrics()['compute_seconds']
    resumed = make_runner(tmp_path / 'b', search_hooks(0.1), max_epochs=3)
    resumed.resume(str(checkpoint))
    run(resumed)
    last = hook(resumed, 'EpochCostHook').epoch_metrics()
    assert resumed.epoch == 3
    assert last['compute_seconds'] == pytest.approx(before + last['train_seconds'])


def test_peak_memory_is_each_epochs_own(tmp_path):
    held = {}

    def allocate(event, runner):  # 128 MiB, touched, during the second epoch's first iteration only
        if event == 'before_train_iter' and runner.epoch == 1 and runner.inner_iter == 0:
            held['buffer'] = torch.ones(32 * 2**20)
            time.sleep(0.2)  # long enough for a sampling meter too
        elif event == 'after_train_epoch':
            held.pop('buffer', None)
            held.setdefault('peaks', []).append(hook(runner, 'EpochCostHook').epoch_metrics()['peak_memory_mb'])

    runner = make_runner(tmp_path, search_hooks(0.1))
    runner.register_hook(Probe(allocate), priority='NORMAL')
    run(runner)
    first, second, third = held['peaks']
    assert second - first >= 100  # the 128 MiB held in epoch 2
    assert third <= second - 100  # epoch 3's window starts afresh, after the buffer was freed


@pytest.mark.parametrize('with_hook', [True, False])
def test_finite_loss_hook_fails_the_trial_before_the_optimizer_steps(tmp_path, with_hook):
    weights = {}

    def snapshot(event, runner):
        if event == 'before_train_iter':
            weights.update({k: v.clone() for k, v in runner.model.state_dict().items()})

    model = ToyModel(nan_at_call=6)  # the second iteration of the second epoch
    runner = make_runner(tmp_path, search_hooks(0.1) if with_hook else [], model=model)
    runner.register_hook(Probe(snapshot), priority='HIGHEST')
    if with_hook:
        with pytest.raises(FloatingPointError, match=r'non-finite loss nan at epoch 2, iteration 2: lower the lea'):
            run(runner)
        for key, value in model.state_dict().items():  # the diverged step never reached the weights
            assert torch.equal(value, weights[key]), key
    else:  # what the hook prevents: training goes on with NaN weights
        run(runner)
        assert torch.isnan(model.linear.weight).all()


@pytest.mark.parametrize('with_hook', [True, False])
def test_trial_learning_rate_hook_replaces_the_rate_a_checkpoint_restores(tmp_path, with_hook):
    donor = make_runner(tmp_path / 'donor', search_hooks(0.1), lr=0.1, max_epochs=1)
    checkpoint = save_last_epoch(donor, tmp_path)
    run(donor)
    rates = []

    def record(event, runner):
        if event == 'before_train_iter' and not rates:
            rates.extend(group['lr'] for group in runner.optimizer.param_groups)

    # A PBT exploit: the donor's checkpoint (initial rates 0.1 and 0.2) and a mutated rate of 0.02.
    hooks = search_hooks(0.02) if with_hook else [h for h in search_hooks(0.02) if h['type'] != 'TrialLearningRateHook']
    exploit = make_runner(tmp_path / 'exploit', hooks, lr=0.02, max_epochs=2)
    exploit.register_hook(Probe(record), priority='LOWEST')
    exploit.resume(str(checkpoint))
    assert exploit.epoch == 1
    run(exploit)
    # Epoch 2 is past the step at epoch 1 (x0.1); the bias keeps twice the weight's rate.
    assert rates == pytest.approx([0.002, 0.004] if with_hook else [0.01, 0.02])


# TuneReportHook reports through Tune's session: run the toy runner as a real Tune trial.

def _component_hook(nan_at_epoch=None):
    from dyncomponents.protocol import MetricSpec, declare

    class Component(Hook):
        """A component in the dyncomponents protocol: per-epoch metrics and when its schedule settles."""

        METRICS = declare('toy hook', [MetricSpec('toy_hook_epoch', 'epoch', 'the epoch the hook saw last')])

        def epoch_metrics(self):
            value = float('nan') if self.epoch == nan_at_epoch else float(self.epoch)
            return {'toy_hook_epoch': value}

        def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
            assert (max_epochs, iters_per_epoch) == (3, SAMPLES // BATCH)
            return 2

        def after_train_epoch(self, runner):
            self.epoch = runner.epoch + 1  # runs before TuneReportHook (NORMAL < 80)

    return Component()


def toy_trial(config):
    """A Tune function trainable: the toy runner with the search's hooks, TuneReportHook included."""
    from ray import tune

    import search.hooks  # noqa: F401

    skip_epoch_sleeps()  # what train_mmdet does in a trial's process
    from dyncomponents.protocol import MetricSpec, declare

    class DeclaredToyModel(ToyModel):  # a model module in the protocol
        METRICS = declare('toy module', [MetricSpec('toy_module_metric', 'count', 'a constant')])

        def epoch_metrics(self):
            return {'toy_module_metric': 1.5}

    model = DeclaredToyModel()
    trial_dir = Path(tune.get_context().get_trial_dir())
    runner = make_runner(trial_dir / 'mmdet', search_hooks(0.1, report=True), model=model)
    runner.register_hook(_component_hook(nan_at_epoch=2 if config['nan'] else None), priority='NORMAL')
    run(runner)


@pytest.mark.slow
def test_tune_report_hook_reports_each_epochs_metrics_and_checkpoint(ray_session, tmp_path):
    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    try:
        results = tune.Tuner(toy_trial, param_space={'nan': tune.grid_search([False, True])},
                             run_config=tune.RunConfig(name='toy', storage_path=str(tmp_path), verbose=0,
                                                       failure_config=tune.FailureConfig(max_failures=0))).fit()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    healthy = next(r for r in results if not r.config['nan'])
    rows = healthy.metrics_dataframe.to_dict('records')
    assert [row['epoch'] for row in rows] == [1, 2, 3]
    for row in rows:
        epoch = row['epoch']
        # the evaluation of this epoch, reported before the logger cleared it; the other COCO keys 0.0
        assert row['bbox_mAP'] == pytest.approx(0.1 * epoch)
        assert all(row[key] == 0.0 for key in COCO_METRICS if key != 'bbox_mAP')
        assert (row['toy_hook_epoch'], row['toy_module_metric']) == (epoch, 1.5)
        assert row['schedule_settled_epoch'] == 2
        assert row['eta_seconds'] == pytest.approx(row['compute_seconds'] / epoch * (3 - epoch))
        assert row['train_seconds'] > 0 and row['node_id']
    checkpoint = torch.load(Path(healthy.checkpoint.path) / CHECKPOINT_FILE, map_location='cpu', weights_only=True)
    assert checkpoint['meta']['epoch'] == 3  # the last epoch's checkpoint went to Tune with its report

    failed = next(r for r in results if r.config['nan'])
    assert 'non-finite metrics after epoch 2' in str(failed.error)
    assert failed.metrics_dataframe['epoch'].tolist() == [1]
