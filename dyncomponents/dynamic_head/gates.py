"""Gate activations and the spatial gate of the fine-grained dynamic head.

Song et al., `Fine-Grained Dynamic Head for Object Detection
<https://arxiv.org/abs/2012.03519>`_ (NeurIPS 2020); the formulas follow
``cvpods/layers/dynamic_conv.py`` of StevenGrove/DynamicHead.
"""
import math

import torch
import torch.nn as nn

GATE_ACTIVATIONS = ('GeReTanH', 'ReTanH', 'Sigmoid')


def retanh(x):
    """ReTanH: ``max(0, tanh(x))``; exactly 0 for ``x <= 0``."""
    return torch.tanh(x).clamp(min=0)


def geretanh(x, tau=1.5):
    """GeReTanH: ``max(0, (tanh(x - tau) + tanh(tau)) / (1 + tanh(tau)))``.

    Mathematically 0 exactly at ``x <= 0``. In float32 ``tanh(-tau)`` and the
    double ``tanh(tau)`` may differ by one ulp, which would leave a 1e-8 gate
    (and a counted position) at ``x = 0``; the ``where`` makes the zero exact.
    """
    ttau = math.tanh(tau)
    gate = ((torch.tanh(x - tau) + ttau) / (1 + ttau)).clamp(min=0)
    return torch.where(x > 0, gate, torch.zeros_like(gate))


def gate_activate(x, activation, tau=1.5):
    """Apply the gate activation named ``activation`` (see ``GATE_ACTIVATIONS``)."""
    if activation == 'GeReTanH':
        return geretanh(x, tau)
    if activation == 'ReTanH':
        return retanh(x)
    if activation == 'Sigmoid':
        return torch.sigmoid(x)
    raise ValueError(f'gate activation must be one of {GATE_ACTIVATIONS}, got {activation!r}')


def gate_bias(activation, init_gate=0.99, tau=1.5):
    """Return the pre-activation ``z`` at which the gate equals ``init_gate``.

    For ReTanH and GeReTanH this is the original's formula
    (``0.5*ln((1+g)/(1-g))`` and ``0.5*ln((1+g*e^{2 tau})/(1-g))``); for
    Sigmoid it is the exact logit ``ln(g/(1-g))``, where the original's
    ``0.5*ln(g/(1-g))`` gives a starting gate of 0.91 instead of 0.99.
    """
    if not 0 < init_gate < 1:
        raise ValueError(f'init_gate must be in (0, 1), got {init_gate}')
    if activation == 'GeReTanH':
        return 0.5 * math.log((1 + init_gate * math.exp(2 * tau)) / (1 - init_gate))
    if activation == 'ReTanH':
        return 0.5 * math.log((1 + init_gate) / (1 - init_gate))
    if activation == 'Sigmoid':
        return math.log(init_gate / (1 - init_gate))
    raise ValueError(f'gate activation must be one of {GATE_ACTIVATIONS}, got {activation!r}')


class SpatialGate(nn.Module):
    """One gate value per location from a 3x3 conv, `paper <https://arxiv.org/abs/2012.03519>`_.

    Args:
        in_channels (int): Channels of the gate input.
        activation (str): ``'GeReTanH'``, ``'ReTanH'`` or ``'Sigmoid'``. Default: ``'GeReTanH'``.
        tau (float): GeReTanH's shift; its slope at 0+ is ``1 - tanh(tau)``. Default: 1.5.
        init_gate (float): Gate value at initialisation (weights N(0, 0.01), bias
            from :func:`gate_bias`). Default: 0.99.
    """

    def __init__(self, in_channels, activation='GeReTanH', tau=1.5, init_gate=0.99):
        super().__init__()
        if activation not in GATE_ACTIVATIONS:
            raise ValueError(f'gate activation must be one of {GATE_ACTIVATIONS}, got {activation!r}')
        if activation == 'GeReTanH' and not tau > 0:
            raise ValueError(f'tau must be > 0 for GeReTanH, got {tau}')
        self.activation = activation
        self.tau = float(tau)
        self.init_gate = float(init_gate)
        self.gate_conv = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.init_weights()

    def init_weights(self):
        """Reset to the original's initialisation (mmdet's head init would zero the bias)."""
        nn.init.normal_(self.gate_conv.weight, std=0.01)
        nn.init.constant_(self.gate_conv.bias, gate_bias(self.activation, self.init_gate, self.tau))

    def forward(self, x):
        """Return the gate map, shape (N, 1, H, W), for the gate input ``x``."""
        return gate_activate(self.gate_conv(x), self.activation, self.tau)
