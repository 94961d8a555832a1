"""Step learning-rate decay at fractions of the training budget (``lr_config=dict(policy='BudgetStep')``).

mmcv's ``policy='step'`` decays at fixed epochs, so a trial whose budget (``runner.max_epochs``) is
sampled, or a search over where the decay happens, needs those epochs recomputed per trial. Here
the decay points are fractions of the budget and the epochs follow from ``runner.max_epochs``.
"""
from mmcv.runner import HOOKS
from mmcv.runner.hooks.lr_updater import LrUpdaterHook


def decay_epochs(step_fractions, max_epochs: int) -> list[int]:
    """Epochs (0-based, at whose start the LR drops) for ``step_fractions`` of ``max_epochs``; at least 1."""
    return sorted({max(1, round(float(f) * int(max_epochs))) for f in step_fractions})


@HOOKS.register_module()
class BudgetStepLrUpdaterHook(LrUpdaterHook):
    """Multiply the LR by ``gamma`` at each of ``step_fractions`` of the epoch budget.

    Args:
        step_fractions (list[float]): decay points as fractions of ``runner.max_epochs``, in (0, 1].
            Default: [0.75].
        gamma (float): the factor applied at each decay point. Default: 0.1.
        protect_decay (bool): report the last decay as a phase change, so DynTune's schedule-aware
            early stopping keeps a trial until its LR has decayed (use it when the decay point is
            searched: otherwise every trial decays at the same fraction and rungs compare like with
            like). Default: False.
        **kwargs: warm-up options of mmcv's ``LrUpdaterHook``.
    """

    def __init__(self, step_fractions=(0.75,), gamma=0.1, protect_decay=False, **kwargs):
        fractions = list(step_fractions)
        if not fractions or not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in fractions):
            raise ValueError(f'step_fractions must be fractions of the budget in (0, 1], got {step_fractions!r}')
        if not 0 < gamma <= 1:
            raise ValueError(f'gamma must be in (0, 1], got {gamma!r}')
        self.step_fractions = fractions
        self.gamma = float(gamma)
        self.protect_decay = bool(protect_decay)
        kwargs.setdefault('by_epoch', True)
        super().__init__(**kwargs)

    def get_lr(self, runner, base_lr):
        progress = runner.epoch if self.by_epoch else runner.iter
        steps = decay_epochs(self.step_fractions, runner.max_epochs)
        if not self.by_epoch:
            steps = [s * len(runner.data_loader) for s in steps]
        return base_lr * self.gamma ** sum(progress >= s for s in steps)

    def last_phase_change_epoch(self, max_epochs: int, iters_per_epoch: int) -> int:
        return decay_epochs(self.step_fractions, max_epochs)[-1] + 1 if self.protect_decay else 0
