"""Dynamic R-CNN RoI head that survives empty batches, checkpoints and dense images."""
import math

import numpy as np
import torch

from mmdet.core import bbox2roi
from mmdet.models.builder import HEADS
from mmdet.models.roi_heads import DynamicRoIHead

from ..protocol import MetricSpec, Plot, declare

# Same guard as mmdet (PR #4303): a median regression target below this would make
# SmoothL1 degenerate (beta -> 0 asserts in mmdet's smooth_l1_loss).
EPS = 1e-15

_DEFAULTS = dict(
    iou_topk=75,
    beta_topk=10,
    update_iter_interval=100,
    initial_iou=0.4,
    initial_beta=1.0,
    start_from_initial=True,
    exclude_gt_from_stats=False,
    objects_per_image_ref=None,
)


def dynamic_update(iou_history, beta_history, iou_thr, beta, initial_iou,
                   initial_beta):
    """Return the new ``(iou_thr, beta)`` of one Dynamic R-CNN update.

    ``iou_thr = max(initial_iou, mean(iou_history))`` and
    ``beta = min(initial_beta, median(beta_history))`` (arXiv 2004.06002, Alg. 1).
    An empty history keeps the current value; so does a median below ``EPS``
    (mmdet's guard against beta -> 0).

    Args:
        iou_history (Sequence[float]): IoU statistics since the last update.
        beta_history (Sequence[float]): regression-target statistics since the last update.
        iou_thr (float): the IoU threshold in use now.
        beta (float): the SmoothL1 beta in use now.
        initial_iou (float): floor of the IoU threshold.
        initial_beta (float): ceiling of beta.

    Returns:
        tuple[float, float]: the new IoU threshold and beta.
    """
    if len(iou_history) > 0:
        iou_thr = max(initial_iou, float(np.mean(np.asarray(iou_history, dtype=np.float64))))
    if len(beta_history) > 0:
        median = float(np.median(np.asarray(beta_history, dtype=np.float64)))
        if median >= EPS:
            beta = min(initial_beta, median)
    return iou_thr, beta


def _topk_scale(num_gts, objects_per_image_ref):
    """Factor K_I/K_beta are scaled by for an image with ``num_gts`` objects (>= 1)."""
    if objects_per_image_ref is None:
        return 1.0
    return max(1.0, num_gts / objects_per_image_ref)


def _parse_dynamic_cfg(cfg):
    """Validate ``train_cfg.rcnn.dynamic_rcnn`` and return a plain dict with defaults."""
    if cfg is None:
        raise ValueError('DynamicRCNNRoIHead needs train_cfg.rcnn.dynamic_rcnn=dict(...) '
                         'when it is built with a train_cfg; got none')
    unknown = sorted(set(cfg) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f'train_cfg.rcnn.dynamic_rcnn has unknown keys {unknown}; '
                         f'allowed: {sorted(_DEFAULTS)}')
    out = dict(_DEFAULTS, **cfg)
    # Search spaces sample these on a log scale, so floats are rounded here.
    for key in ('iou_topk', 'beta_topk', 'update_iter_interval'):
        value = int(round(float(out[key])))
        if value < 1:
            raise ValueError(f'dynamic_rcnn.{key}={out[key]!r} must round to an integer >= 1')
        out[key] = value
    if not 0.0 < out['initial_iou'] < 1.0:
        raise ValueError(f"dynamic_rcnn.initial_iou={out['initial_iou']!r} must be in (0, 1)")
    if not out['initial_beta'] > 0.0:
        raise ValueError(f"dynamic_rcnn.initial_beta={out['initial_beta']!r} must be > 0")
    ref = out['objects_per_image_ref']
    if ref is not None and not ref > 0:
        raise ValueError(f'dynamic_rcnn.objects_per_image_ref={ref!r} must be None or > 0')
    return out


@HEADS.register_module()
class DynamicRCNNRoIHead(DynamicRoIHead):
    """Resumable `Dynamic R-CNN <https://arxiv.org/abs/2004.06002>`_ RoI head.

    Same update rule as mmdet's ``DynamicRoIHead``: every C iterations the
    R-CNN assigner's IoU threshold becomes ``max(initial_iou, mean(S_I))`` and the
    SmoothL1 beta becomes ``min(initial_beta, median(S_beta))``, where S_I holds
    each iteration's K_I-th largest proposal IoU (per image, averaged over images)
    and S_beta each iteration's K_beta*num_imgs-th smallest ``mean(|dx|, |dy|)``
    of the positive regression targets. Unlike mmdet, the threshold, beta and
    both histories are buffers (saved and restored with the checkpoint), a batch
    without positives skips the beta statistic instead of crashing, and two
    options keep dense images from driving the threshold to 1.0.

    Settings are read from ``train_cfg.rcnn.dynamic_rcnn`` (paper symbol -> key):

    - iou_topk (int): K_I. Default: 75.
    - beta_topk (int): K_beta. Default: 10.
    - update_iter_interval (int | float): C, rounded to an integer. Default: 100.
    - initial_iou (float): floor of the threshold. Default: 0.4.
    - initial_beta (float): ceiling of beta. Default: 1.0.
    - start_from_initial (bool): use ``initial_iou``/``initial_beta`` before the
      first update, as the original code does; False keeps the configured
      assigner thresholds and loss beta until then, as mmdet does. Default: True.
    - exclude_gt_from_stats (bool): leave the ground-truth rows that the sampler
      adds as proposals (IoU 1, target 0) out of both statistics. Default: False.
    - objects_per_image_ref (float | None): when set, an image with N objects
      uses ``K_I * max(1, N / ref)`` and contributes ``K_beta * max(1, N / ref)``
      to the beta rank, so only images denser than ``ref`` change. Default: None.

    Args:
        **kwargs: the arguments of :class:`mmdet.models.roi_heads.StandardRoIHead`.
    """

    METRICS = declare('Dynamic R-CNN', [
        MetricSpec('drcnn_iou_thr', 'IoU', "the R-CNN assigner's positive IoU threshold now"),
        MetricSpec('drcnn_beta', 'regression target', "the SmoothL1 loss's beta now"),
        MetricSpec('drcnn_num_updates', 'count', 'threshold and beta updates so far, over the whole run'),
    ], plots=[
        Plot(('drcnn_iou_thr', 'drcnn_beta'), style='steps', title='Dynamic R-CNN: IoU threshold and SmoothL1 beta',
             caption='The IoU threshold and beta in use after each epoch, one line per trial; both change only '
                     'at an update (every update_iter_interval iterations).'),
    ])

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # The parent keeps these as plain lists that no checkpoint sees; buffers replace them.
        del self.iou_history, self.beta_history
        if self.train_cfg is not None:
            self.dynamic_cfg = _parse_dynamic_cfg(self.train_cfg.get('dynamic_rcnn'))
            start = self.dynamic_cfg['start_from_initial']
            iou_thr = self.dynamic_cfg['initial_iou'] if start else self.bbox_assigner.pos_iou_thr
            beta = self.dynamic_cfg['initial_beta'] if start else self.bbox_head.loss_bbox.beta
            capacity = self.dynamic_cfg['update_iter_interval']
        else:
            # Built for inference: nothing is updated, but a checkpoint's state still loads.
            self.dynamic_cfg = None
            iou_thr, beta, capacity = 0.5, self.bbox_head.loss_bbox.beta, 0
        # float64 so that restored values equal the saved Python floats exactly.
        self.register_buffer('dyn_iou_thr', torch.tensor(float(iou_thr), dtype=torch.float64))
        self.register_buffer('dyn_beta', torch.tensor(float(beta), dtype=torch.float64))
        self.register_buffer('dyn_iou_hist', torch.zeros(capacity, dtype=torch.float64))
        self.register_buffer('dyn_iou_count', torch.tensor(0, dtype=torch.int64))
        self.register_buffer('dyn_beta_hist', torch.zeros(capacity, dtype=torch.float64))
        self.register_buffer('dyn_beta_count', torch.tensor(0, dtype=torch.int64))
        # iterations since the last update (decides the timing) and updates so far
        self.register_buffer('dyn_iters', torch.tensor(0, dtype=torch.int64))
        self.register_buffer('dyn_num_updates', torch.tensor(0, dtype=torch.int64))
        self._apply_state()

    # ----------------------------------------------------------------- state
    def _apply_state(self):
        """Make the assigner and the loss use the threshold and beta in the buffers."""
        self.bbox_head.loss_bbox.beta = float(self.dyn_beta)
        if self.dynamic_cfg is None:  # built for inference: no assigner
            return
        if self.dynamic_cfg['start_from_initial'] or int(self.dyn_num_updates) > 0:
            thr = float(self.dyn_iou_thr)
            self.bbox_assigner.pos_iou_thr = thr
            self.bbox_assigner.neg_iou_thr = thr
            self.bbox_assigner.min_pos_iou = thr

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Histories have the saving trial's length (its C may differ after a PBT
        # exploit): take the saved shape instead of reporting a size mismatch.
        for name in ('dyn_iou_hist', 'dyn_beta_hist'):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.zeros_like(saved, dtype=torch.float64,
                                                     device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._apply_state()

    def history(self):
        """Return the IoU and beta statistics recorded since the last update.

        Returns:
            tuple[list[float], list[float]]: ``(iou_history, beta_history)``.
        """
        return (self.dyn_iou_hist[:int(self.dyn_iou_count)].tolist(),
                self.dyn_beta_hist[:int(self.dyn_beta_count)].tolist())

    def _append(self, hist_name, count_name, value):
        hist, count = getattr(self, hist_name), int(getattr(self, count_name))
        if count == hist.numel():  # only after loading a trial with a smaller C
            hist = torch.cat([hist, hist.new_zeros(max(1, count))])
            setattr(self, hist_name, hist)
        hist[count] = value
        getattr(self, count_name).fill_(count + 1)

    def update_hyperparameters(self):
        """Apply one update from the histories and clear them.

        Returns:
            tuple[float, float]: the new ``iou_thr`` and ``beta``.
        """
        iou_history, beta_history = self.history()
        iou_thr, beta = dynamic_update(iou_history, beta_history, float(self.dyn_iou_thr),
                                       float(self.dyn_beta), self.dynamic_cfg['initial_iou'],
                                       self.dynamic_cfg['initial_beta'])
        self.dyn_iou_thr.fill_(iou_thr)
        self.dyn_beta.fill_(beta)
        self.dyn_iou_count.zero_()
        self.dyn_beta_count.zero_()
        self.dyn_iters.zero_()
        self.dyn_num_updates.add_(1)
        self._apply_state()
        return iou_thr, beta

    # -------------------------------------------------------------- metrics
    def epoch_metrics(self):
        """Current threshold, beta and number of updates (``METRICS``), for plotting their trajectories."""
        return {
            'drcnn_iou_thr': float(self.dyn_iou_thr),
            'drcnn_beta': float(self.dyn_beta),
            'drcnn_num_updates': float(self.dyn_num_updates),
        }

    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        """Epoch in which the first update happens: ``ceil(C / iters_per_epoch)``."""
        if self.dynamic_cfg is None or iters_per_epoch < 1:
            return 0
        first = math.ceil(self.dynamic_cfg['update_iter_interval'] / iters_per_epoch)
        return min(first, max_epochs)

    # ------------------------------------------------------------- training
    def forward_train(self,
                      x,
                      img_metas,
                      proposal_list,
                      gt_bboxes,
                      gt_labels,
                      gt_bboxes_ignore=None,
                      gt_masks=None):
        """Assign, sample, record the statistics, compute losses, update every C iterations.

        Args and Returns as :meth:`mmdet.models.roi_heads.StandardRoIHead.forward_train`.
        """
        self._apply_state()
        cfg = self.dynamic_cfg
        num_imgs = len(img_metas)
        if gt_bboxes_ignore is None:
            gt_bboxes_ignore = [None for _ in range(num_imgs)]
        sampling_results = []
        cur_iou = []
        for i in range(num_imgs):
            assign_result = self.bbox_assigner.assign(proposal_list[i], gt_bboxes[i],
                                                      gt_bboxes_ignore[i], gt_labels[i])
            # The sampler prepends GT rows (IoU 1) when add_gt_as_proposals is on;
            # this reference keeps the proposals-only IoUs.
            proposal_ious = assign_result.max_overlaps
            sampling_result = self.bbox_sampler.sample(
                assign_result, proposal_list[i], gt_bboxes[i], gt_labels[i],
                feats=[lvl_feat[i][None] for lvl_feat in x])
            sampling_results.append(sampling_result)
            ious = proposal_ious if cfg['exclude_gt_from_stats'] else assign_result.max_overlaps
            if ious.numel() > 0:
                scale = _topk_scale(len(gt_bboxes[i]), cfg['objects_per_image_ref'])
                k = min(int(round(cfg['iou_topk'] * scale)), ious.numel())
                cur_iou.append(torch.topk(ious, k)[0][-1].item())
        if cur_iou:
            self._append('dyn_iou_hist', 'dyn_iou_count', float(np.mean(cur_iou)))

        losses = dict()
        bbox_results = self._bbox_forward_train(x, sampling_results, gt_bboxes, gt_labels,
                                                img_metas)
        losses.update(bbox_results['loss_bbox'])
        if self.with_mask:
            mask_results = self._mask_forward_train(x, sampling_results,
                                                    bbox_results['bbox_feats'], gt_masks,
                                                    img_metas)
            losses.update(mask_results['loss_mask'])

        self.dyn_iters.add_(1)
        if int(self.dyn_iters) >= cfg['update_iter_interval']:
            self.update_hyperparameters()
        return losses

    def _bbox_forward_train(self, x, sampling_results, gt_bboxes, gt_labels, img_metas):
        cfg = self.dynamic_cfg
        rois = bbox2roi([res.bboxes for res in sampling_results])
        bbox_results = self._bbox_forward(x, rois)
        bbox_targets = self.bbox_head.get_targets(sampling_results, gt_bboxes, gt_labels,
                                                  self.train_cfg)
        # bbox_targets = (labels, label_weights, targets, weights); rows are per image,
        # positives first, so pos_is_gt lines up with the first num_pos rows of each image.
        stat_rows = bbox_targets[3][:, 0] > 0
        if cfg['exclude_gt_from_stats']:
            is_gt = torch.cat([
                torch.cat([res.pos_is_gt.bool(), res.pos_is_gt.new_zeros(len(res.neg_inds)).bool()])
                for res in sampling_results])
            stat_rows = stat_rows & ~is_gt
        num_stat = int(stat_rows.sum())
        # No positives (mmdetection #8851): skip the statistic, as mmdet 3.x does.
        if num_stat > 0:
            cur_target = bbox_targets[2][stat_rows, :2].abs().mean(dim=1)
            k_total = sum(cfg['beta_topk'] * _topk_scale(len(g), cfg['objects_per_image_ref'])
                          for g in gt_bboxes)
            k = min(int(round(k_total)), num_stat)
            self._append('dyn_beta_hist', 'dyn_beta_count',
                         torch.kthvalue(cur_target, k)[0].item())
        loss_bbox = self.bbox_head.loss(bbox_results['cls_score'], bbox_results['bbox_pred'],
                                        rois, *bbox_targets)
        bbox_results.update(loss_bbox=loss_bbox)
        return bbox_results
