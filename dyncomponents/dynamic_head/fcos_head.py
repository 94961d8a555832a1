"""FCOS head with the fine-grained dynamic routing tower."""
import torch.nn as nn
from mmcv.cnn import Scale
from mmcv.runner import force_fp32
from mmdet.models.builder import HEADS
from mmdet.models.dense_heads import FCOSHead

from ..protocol import MetricSpec, Plot, declare
from .routing import VARIANTS, HeadCostMeter, RoutingTower


@HEADS.register_module()
class DynamicFCOSHead(FCOSHead):
    """FCOS head whose towers are D gated cross-level routing layers, `paper <https://arxiv.org/abs/2012.03519>`_.

    Paper symbols: D = ``depth``, lambda = ``budget_lambda``, tau = ``tau``.
    Each branch (cls, reg) runs ``depth`` :class:`RoutingLayer` over all FPN
    levels together, then FCOS's per-level predictors (Scale, stride, ReLU or
    exp, centerness) as :class:`FCOSHead` does. With ``budget_lambda != 0`` the
    loss adds ``loss_budget = lambda * mean_over_images(soft_cost / full_cost)``.
    ``stacked_convs``, ``conv_cfg`` and ``dcn_on_last_conv`` are not used.

    Args:
        num_classes (int): Number of categories excluding the background.
        in_channels (int): FPN channels; must equal ``feat_channels`` (routing
            adds levels and residuals, as in the original).
        depth (int): Routing layers per branch, D (D4 is 8 convs per branch). Default: 4.
        variant (str): ``'dynamic'`` (gated) or ``'fixed'`` (same tower, no gates;
            the original's "+Fix" baseline). Default: ``'dynamic'``.
        gate_activation (str): ``'GeReTanH'``, ``'ReTanH'`` or ``'Sigmoid'``. Default: ``'GeReTanH'``.
        tau (float): GeReTanH's tau. Default: 1.5.
        init_gate (float): Gate value at initialisation. Default: 0.99.
        budget_lambda (float): Weight lambda of the budget loss; 0 disables it. Default: 0.1.
        **kwargs: Passed to :class:`mmdet.models.dense_heads.FCOSHead`.

    Metrics: ``METRICS``, over the eval-mode forwards since the head was last put into
    training mode (the latest epoch's evaluation). GFLOPs are 2 x multiply-accumulates / 1e9
    of the routing towers, per image (docs/dynamic_head.md, "Cost accounting").
    """

    METRICS = declare('Fine-grained dynamic head', [
        MetricSpec('dhead_gflops_avg', 'GFLOPs', "mean GFLOPs per image that the towers' open gates execute, "
                   "over the latest epoch's evaluation images"),
        MetricSpec('dhead_gflops_min', 'GFLOPs', 'the least of those GFLOPs per image'),
        MetricSpec('dhead_gflops_max', 'GFLOPs', 'the most of those GFLOPs per image'),
        MetricSpec('dhead_gflops_full', 'GFLOPs', 'mean GFLOPs per image of the same routing towers with every '
                   'gate open (not the standard FCOS head)'),
        MetricSpec('dhead_used_ratio', 'fraction', 'mean per image of executed / all-gates-open cost'),
    ], plots=[
        Plot(('dhead_gflops_avg',), style='band', band=('dhead_gflops_min', 'dhead_gflops_max'),
             reference='dhead_gflops_full', title='Dynamic head GFLOPs per image',
             caption="Dynamic head GFLOPs per image: per-epoch mean, band from the epoch's min to max; dotted: "
                     'the same routing towers with every gate open (dhead_gflops_full), not the standard FCOS head.'),
    ])

    def __init__(self, num_classes, in_channels, depth=4, variant='dynamic',
                 gate_activation='GeReTanH', tau=1.5, init_gate=0.99, budget_lambda=0.1,
                 **kwargs):
        if variant not in VARIANTS:
            raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
        if budget_lambda < 0:
            raise ValueError(f'budget_lambda must be >= 0, got {budget_lambda}')
        if variant == 'fixed' and budget_lambda != 0:
            raise ValueError(f'the fixed variant has no gates, so budget_lambda must be 0, '
                             f'got {budget_lambda}')
        feat_channels = kwargs.get('feat_channels', 256)
        if feat_channels != in_channels:
            raise ValueError(f'feat_channels ({feat_channels}) must equal in_channels '
                             f'({in_channels}): the routing tower keeps the FPN width')
        self.depth = depth
        self.variant = variant
        self.gate_cfg = None if variant == 'fixed' else dict(
            activation=gate_activation, tau=tau, init_gate=init_gate)
        self.budget_lambda = budget_lambda
        self.cost_meter = HeadCostMeter()
        super().__init__(num_classes, in_channels, **kwargs)

    def _init_layers(self):
        """Build the two routing towers, the predictors, centerness and the Scales."""
        self.cls_tower = RoutingTower(self.feat_channels, self.depth, self.norm_cfg, self.gate_cfg)
        self.reg_tower = RoutingTower(self.feat_channels, self.depth, self.norm_cfg, self.gate_cfg)
        self._init_predictor()
        self.conv_centerness = nn.Conv2d(self.feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])

    def forward(self, feats):
        """Forward all FPN levels; returns (cls_scores, bbox_preds, centernesses) like FCOSHead."""
        cls_feats, cls_cost = self.cls_tower(list(feats))
        reg_feats, reg_cost = self.reg_tower(list(feats))
        self.cost_meter.record(cls_cost + reg_cost, self.training)
        cls_scores, bbox_preds, centernesses = [], [], []
        for cls_feat, reg_feat, scale, stride in zip(cls_feats, reg_feats, self.scales,
                                                     self.strides):
            cls_scores.append(self.conv_cls(cls_feat))
            centernesses.append(
                self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat))
            bbox_pred = scale(self.conv_reg(reg_feat)).float()
            if self.norm_on_bbox:
                # clamp, not an in-place relu, for the same autograd reason as FCOSHead
                bbox_pred = bbox_pred.clamp(min=0)
                if not self.training:
                    bbox_pred = bbox_pred * stride
            else:
                bbox_pred = bbox_pred.exp()
            bbox_preds.append(bbox_pred)
        return cls_scores, bbox_preds, centernesses

    @force_fp32(apply_to=('cls_scores', 'bbox_preds', 'centernesses'))
    def loss(self, cls_scores, bbox_preds, centernesses, gt_bboxes, gt_labels, img_metas,
             gt_bboxes_ignore=None):
        """FCOS losses plus ``loss_budget`` (if lambda != 0) and the logged ``head_used_ratio``."""
        losses = super().loss(cls_scores, bbox_preds, centernesses, gt_bboxes, gt_labels,
                              img_metas, gt_bboxes_ignore=gt_bboxes_ignore)
        losses.update(self.cost_meter.budget_losses(self.budget_lambda))
        return losses

    def train(self, mode=True):
        """Set the mode; entering training mode (each epoch's start) begins a new metrics window."""
        if mode:
            self.cost_meter.start_window()
        return super().train(mode)

    def epoch_metrics(self):
        """Head GFLOPs per image of the evaluation since the last ``train()`` (``METRICS``); reading clears nothing."""
        return self.cost_meter.epoch_metrics('dhead_')
