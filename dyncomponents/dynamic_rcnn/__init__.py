"""Dynamic R-CNN (arXiv 2004.06002) as a resumable mmdet 2.x RoI head."""
from .roi_head import DynamicRCNNRoIHead, dynamic_update

__all__ = ['DynamicRCNNRoIHead', 'dynamic_update']
