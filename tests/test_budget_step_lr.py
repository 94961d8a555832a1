"""The budget-relative step LR: decay epochs follow runner.max_epochs, on a real mmcv runner."""
import logging

import pytest
import torch
from mmcv.runner import EpochBasedRunner, Hook, build_optimizer

from dyncomponents.schedules import BudgetStepLrUpdaterHook, decay_epochs


@pytest.mark.parametrize('fractions, max_epochs, expected', [
    ([0.75], 4, [3]), ([0.75], 12, [9]), ([0.67, 0.9], 10, [7, 9]), ([0.01], 4, [1]), ([0.5, 0.5], 4, [2]),
])
def test_decay_epochs(fractions, max_epochs, expected):
    assert decay_epochs(fractions, max_epochs) == expected


@pytest.mark.parametrize('kwargs', [dict(step_fractions=[]), dict(step_fractions=[1.5]), dict(gamma=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        BudgetStepLrUpdaterHook(**kwargs)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def train_step(self, data, optimizer):
        return dict(loss=self.linear(data).sum(), log_vars={}, num_samples=1)


def test_lr_per_epoch_on_a_runner(tmp_path):
    model = _Toy()
    optimizer = build_optimizer(model, dict(type='SGD', lr=1.0))
    runner = EpochBasedRunner(model, optimizer=optimizer, work_dir=str(tmp_path), logger=logging.getLogger('t'),
                              max_epochs=8)
    runner.register_lr_hook(dict(policy='BudgetStep', step_fractions=[0.5, 0.75], gamma=0.1))
    seen = []

    class Record(Hook):
        def before_train_epoch(self, runner):
            seen.append(round(runner.optimizer.param_groups[0]['lr'], 6))

    runner.register_hook(Record(), priority='LOWEST')
    runner.run([[torch.ones(1)]], [('train', 1)])
    assert seen == [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    hook = next(h for h in runner.hooks if isinstance(h, BudgetStepLrUpdaterHook))
    assert hook.last_phase_change_epoch(8, 1) == 0
    assert BudgetStepLrUpdaterHook(step_fractions=[0.75], protect_decay=True).last_phase_change_epoch(8, 1) == 7
