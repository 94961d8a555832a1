"""Routing tower of the fine-grained dynamic head and its FLOPs accounting.

Song et al., `Fine-Grained Dynamic Head for Object Detection
<https://arxiv.org/abs/2012.03519>`_. Structure and cost units follow
``DynamicScale``/``DynamicBottleneck``/``DynamicConv2D`` (dynamic) and
``ScaleConv2d``/``Bottleneck`` (fixed) of StevenGrove/DynamicHead.

Costs are multiply-accumulates per image, as a float64 tensor of shape (3, N):
row 0 the soft cost (gate-weighted, differentiable), row 1 the used cost
(positions whose gate is not 0), row 2 the full cost (every position).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule

from .gates import SpatialGate

SOFT, USED, FULL = 0, 1, 2
VARIANTS = ('dynamic', 'fixed')
#: GFLOPs of one multiply-accumulate: a MAC is two floating-point operations. The original's README
#: reports MACs / 2**30 as "GFLOPs": ours = its figure x 2 x 2**30 / 1e9 (about 2.147).
GFLOPS_PER_MAC = 2 / 1e9


def depthwise_unit_cost(channels):
    """MACs per location of one gated depthwise 3x3 conv + norm on the scale path.

    The original counts ``len(convs)`` = 2 (the conv and its norm) as two convs,
    so the depthwise term is doubled; kept so numbers compare with its README.
    """
    return channels * 2 * 9 + channels


def conv_unit_cost(channels):
    """MACs per location of one 3x3 ``channels -> channels`` conv + norm."""
    return channels * channels * 9 + channels


def gated_cost(gate, unit_cost, detach_soft=False):
    """Return the (3, N) soft/used/full cost of a unit computed where ``gate`` allows.

    Args:
        gate (Tensor): Gate map, shape (N, 1, H, W).
        unit_cost (int): MACs of the unit at one location.
        detach_soft (bool): Cut the budget gradient, as the original does for
            the scale-path gates. Default: False.
    """
    gate = gate.double()
    soft = (gate.detach() if detach_soft else gate).flatten(1).sum(1)
    used = (gate != 0).flatten(1).sum(1).double()
    full = torch.full_like(used, gate[0].numel())
    return torch.stack([soft, used, full]) * unit_cost


def ungated_cost(x, unit_cost):
    """Return the (3, N) cost of a unit computed at every location of ``x`` (N, C, H, W)."""
    per_image = float(x.shape[-2] * x.shape[-1] * unit_cost)
    return x.new_full((3, x.shape[0]), per_image, dtype=torch.float64)


class RoutingLayer(nn.Module):
    """One layer of cross-level routing plus a (gated) residual block, `paper <https://arxiv.org/abs/2012.03519>`_.

    For each level ``x_l``: ``s_l = w_scale * (down(u_{l-1,0}) + up(u_{l+1,1})) + w_out * x_l``
    with ``u_{l,d} = g_d(x_l) * GN(DWConv3x3_d(x_l))`` (d=0 sends to the coarser
    level, d=1 to the finer one), then ``y_l = ReLU(s_l + g(s_l) * GN(Conv(ReLU(GN(Conv(s_l))))))``.
    The fixed variant drops the gates and ``w_scale``. Weights are shared over levels.

    Args:
        channels (int): Channels of every level.
        norm_cfg (dict): Norm layer config (the original: GN with 32 groups).
        gate_cfg (dict | None): :class:`SpatialGate` arguments (``activation``,
            ``tau``, ``init_gate``); None builds the fixed (ungated) layer.
    """

    def __init__(self, channels, norm_cfg, gate_cfg=None):
        super().__init__()
        self.channels = channels
        self.dynamic = gate_cfg is not None
        # index 0: sent to the next coarser level, index 1: to the next finer one
        self.scale_convs = nn.ModuleList([
            ConvModule(channels, channels, 3, padding=1, groups=channels, bias=True,
                       norm_cfg=norm_cfg, act_cfg=None) for _ in range(2)])
        self.conv1 = ConvModule(channels, channels, 3, padding=1, bias=False, norm_cfg=norm_cfg)
        self.conv2 = ConvModule(channels, channels, 3, padding=1, bias=False, norm_cfg=norm_cfg,
                                act_cfg=None)
        self.output_weight = nn.Parameter(torch.ones(1))
        if self.dynamic:
            self.scale_gates = nn.ModuleList([SpatialGate(channels, **gate_cfg) for _ in range(2)])
            self.block_gate = SpatialGate(channels, **gate_cfg)
            # starts at 0 so an untrained layer is a plain residual block
            self.scale_weight = nn.Parameter(torch.zeros(1))

    def init_weights(self):
        """Original init: convs N(0, 0.01) with zero bias, norms (1, 0), gates at init_gate."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # after the loop above, which also reached the gate convs
        for m in self.modules():
            if isinstance(m, SpatialGate):
                m.init_weights()
        nn.init.ones_(self.output_weight)
        if self.dynamic:
            nn.init.zeros_(self.scale_weight)

    def forward(self, feats):
        """Route a list of levels (fine to coarse); return (outputs, cost (3, N))."""
        cost = 0
        sent = []
        for x in feats:
            per_direction = []
            for d, conv in enumerate(self.scale_convs):
                u = conv(x)
                if self.dynamic:
                    g = self.scale_gates[d](x)
                    u = u * g
                    # the original detaches these gates: no budget gradient on the scale path
                    cost = cost + gated_cost(g, depthwise_unit_cost(self.channels), detach_soft=True)
                else:
                    cost = cost + ungated_cost(x, depthwise_unit_cost(self.channels))
                per_direction.append(u)
            sent.append(per_direction)

        outs = []
        for level, x in enumerate(feats):
            size = x.shape[-2:]
            neighbours = []
            if level > 0:
                neighbours.append(F.interpolate(sent[level - 1][0], size=size, mode='bilinear',
                                                align_corners=True))
            if level < len(feats) - 1:
                neighbours.append(F.interpolate(sent[level + 1][1], size=size, mode='bilinear',
                                                align_corners=True))
            routed = sum(neighbours)
            if self.dynamic:
                routed = routed * self.scale_weight
            s = routed + x * self.output_weight
            residual = self.conv2(self.conv1(s))
            unit = conv_unit_cost(self.channels)
            if self.dynamic:
                g = self.block_gate(s)
                residual = residual * g
                # conv2 runs where g > 0, conv1 on its 3x3 dilation (conv2's receptive field)
                cost = cost + gated_cost(g, unit) + gated_cost(
                    F.max_pool2d(g, kernel_size=3, stride=1, padding=1), unit)
            else:
                cost = cost + 2 * ungated_cost(s, unit)
            outs.append(F.relu(s + residual))
        return outs, cost


class RoutingTower(nn.Module):
    """``depth`` stacked :class:`RoutingLayer` (one branch of the head), `paper <https://arxiv.org/abs/2012.03519>`_.

    Args:
        channels (int): Channels of every level.
        depth (int): Number of routing layers D (each has two 3x3 convs).
        norm_cfg (dict): Norm layer config.
        gate_cfg (dict | None): :class:`SpatialGate` arguments; None for the fixed variant.
    """

    def __init__(self, channels, depth, norm_cfg, gate_cfg=None):
        super().__init__()
        if not (isinstance(depth, int) and depth >= 1):
            raise ValueError(f'depth must be an int >= 1, got {depth!r}')
        self.layers = nn.ModuleList(
            [RoutingLayer(channels, norm_cfg, gate_cfg) for _ in range(depth)])
        self.init_weights()

    def init_weights(self):
        """Re-apply the original init (called by mmdet's ``init_weights`` after the head's Normal init)."""
        for layer in self.layers:
            layer.init_weights()

    def forward(self, feats):
        """Return (list of routed levels, summed cost (3, N))."""
        cost = 0
        for layer in self.layers:
            feats, layer_cost = layer(feats)
            cost = cost + layer_cost
        return feats, cost


class HeadCostMeter:
    """Keeps the last forward's head cost and the per-image costs of eval-mode forwards.

    ``record`` replaces the last cost on every forward, so costs never pile up
    across iterations whether or not a budget loss consumes them. The eval costs
    are kept from :meth:`start_window` (the head calls it when put into training
    mode, at each epoch's start) until the next one; reading them clears nothing.
    """

    def __init__(self):
        self.last = None
        self._eval_used = []
        self._eval_full = []

    def start_window(self):
        """Forget the eval costs recorded so far."""
        self._eval_used, self._eval_full = [], []

    def record(self, cost, training):
        """Store ``cost`` (3, N) of the forward that just ran."""
        self.last = cost
        if not training:
            self._eval_used.extend(cost[USED].detach().cpu().tolist())
            self._eval_full.extend(cost[FULL].detach().cpu().tolist())

    def budget_losses(self, budget_lambda):
        """Return ``loss_budget`` (when lambda != 0) and the logged used/full ratio; clears the cost."""
        if self.last is None:
            raise RuntimeError('no head cost recorded: call the head forward before its loss')
        cost, self.last = self.last, None
        ratio = cost[SOFT] / cost[FULL]
        out = {'head_used_ratio': (cost[USED] / cost[FULL]).mean().float().detach()}
        if budget_lambda != 0:
            out['loss_budget'] = (ratio.mean() * budget_lambda).float()
        return out

    def epoch_metrics(self, prefix='dhead_'):
        """Head GFLOPs per image (``GFLOPS_PER_MAC``) over the eval forwards of the window; {} without any."""
        if not self._eval_used:
            return {}
        used = torch.tensor(self._eval_used, dtype=torch.float64) * GFLOPS_PER_MAC
        full = torch.tensor(self._eval_full, dtype=torch.float64) * GFLOPS_PER_MAC
        return {
            f'{prefix}gflops_avg': float(used.mean()),
            f'{prefix}gflops_min': float(used.min()),
            f'{prefix}gflops_max': float(used.max()),
            f'{prefix}gflops_full': float(full.mean()),
            f'{prefix}used_ratio': float((used / full).mean()),
        }
