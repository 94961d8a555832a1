"""Fine-grained dynamic head (Song et al., NeurIPS 2020) for mmdet 2.x, with head FLOPs accounting."""
from .fcos_head import DynamicFCOSHead
from .gates import SpatialGate, gate_activate, gate_bias, geretanh, retanh
from .routing import HeadCostMeter, RoutingLayer, RoutingTower, gated_cost, ungated_cost

__all__ = [
    'DynamicFCOSHead', 'SpatialGate', 'gate_activate', 'gate_bias', 'geretanh', 'retanh',
    'HeadCostMeter', 'RoutingLayer', 'RoutingTower', 'gated_cost', 'ungated_cost',
]
