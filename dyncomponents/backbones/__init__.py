"""Backbones registered in mmdet's BACKBONES registry."""
from .efficientnet_lite import EFFICIENTNET_LITE_IMG_NORM_CFG, EfficientNetLite, imagenet_weights_path

__all__ = ['EFFICIENTNET_LITE_IMG_NORM_CFG', 'EfficientNetLite', 'imagenet_weights_path']
