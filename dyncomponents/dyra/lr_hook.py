"""DyRA's constant-then-cosine learning-rate schedule as an mmcv LR updater hook."""
import math

from mmcv.runner.hooks import HOOKS
from mmcv.runner.hooks.lr_updater import LrUpdaterHook


def const_cosine_multiplier(progress, min_lr_ratio, const_fraction=0.625):
    """LR multiplier at ``progress`` in [0, 1]: 1 up to ``const_fraction``, then a quarter
    cosine from 1 down to ``min_lr_ratio`` at the end.

    With ``t = (progress - c) / (1 - c)`` the decay is ``e + (1 - e) * (1 - sin(pi t / 2))``.
    At ``c = 5/8`` this is exactly the original ``ConstCosineParamScheduler`` (r = 1/3):
    ``e + (1 - e)/2 * (min(2 cos(4 pi r w - pi r), 0) + 2)``. Unlike mmcv's ``FlatCosineAnnealing``
    (a half cosine), it leaves the plateau with a finite slope and flattens towards the end.
    """
    if progress <= const_fraction:
        return 1.0
    t = min((progress - const_fraction) / (1.0 - const_fraction), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - math.sin(0.5 * math.pi * t))


@HOOKS.register_module()
class ConstCosineLrUpdaterHook(LrUpdaterHook):
    """DyRA's ConstCosine LR schedule (https://arxiv.org/abs/2311.17098): constant, then a
    quarter cosine down to ``min_lr_ratio * base_lr``. Config: ``lr_config=dict(policy='ConstCosine', ...)``.

    The original ends at BASE_LR_END = (the baseline's last LR) / 2, e.g. 5e-5 for RetinaNet at
    base LR 0.01 (ratio 0.005), and warms up linearly over 1000 iterations from 1e-3
    (``warmup='linear', warmup_iters=1000, warmup_ratio=1e-3``, handled by mmcv's base class).

    Args:
        min_lr_ratio (float): End LR as a fraction of the base LR, in [0, 1]. Default: 0.005.
        const_fraction (float): Fraction of training at the base LR, in [0, 1). Default: 0.625.
        by_epoch (bool): Progress counted in epochs instead of iterations. Default: False
            (per iteration, as the original).
        **kwargs: ``LrUpdaterHook`` arguments (warmup, warmup_iters, warmup_ratio, ...).
    """

    def __init__(self, min_lr_ratio=0.005, const_fraction=0.625, by_epoch=False, **kwargs):
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f'min_lr_ratio must be in [0, 1], got {min_lr_ratio}')
        if not 0.0 <= const_fraction < 1.0:
            raise ValueError(f'const_fraction must be in [0, 1), got {const_fraction}')
        self.min_lr_ratio = float(min_lr_ratio)
        self.const_fraction = float(const_fraction)
        super().__init__(by_epoch=by_epoch, **kwargs)

    def get_lr(self, runner, base_lr):
        """The LR for the runner's current epoch or iteration (mmcv applies warmup on top)."""
        progress = runner.epoch / runner.max_epochs if self.by_epoch else runner.iter / runner.max_iters
        return base_lr * const_cosine_multiplier(progress, self.min_lr_ratio, self.const_fraction)

    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        """Completed epochs after which the decay phase has begun (all phases seen once)."""
        decay_start = self.const_fraction * max_epochs * iters_per_epoch
        return min(max_epochs, int(decay_start // iters_per_epoch) + 1)
