"""DyRA: dynamic resolution adjustment (https://arxiv.org/abs/2311.17098) for mmdet 2.x.

Registers ``DynamicResizer`` (MODELS), ``DyRARetinaNet``, ``DyRAFCOS``, ``DyRAFasterRCNN``
(DETECTORS) and ``ConstCosineLrUpdaterHook`` (``lr_config=dict(policy='ConstCosine')``).
"""
from .detector import DyRAFasterRCNN, DyRAFCOS, DyRARetinaNet
from .losses import balance_loss, pareto_scale_loss
from .lr_hook import ConstCosineLrUpdaterHook, const_cosine_multiplier
from .resizer import DynamicResizer

__all__ = ['DynamicResizer', 'DyRARetinaNet', 'DyRAFCOS', 'DyRAFasterRCNN', 'ConstCosineLrUpdaterHook',
           'const_cosine_multiplier', 'pareto_scale_loss', 'balance_loss']
