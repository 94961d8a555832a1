"""DyRA's resizer network: predicts one scale factor per image and resizes the batch."""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.builder import MODELS, build_backbone

from ..protocol import MetricSpec, Plot, declare
from .losses import GAMMA_INIT, balance_loss, check_pareto_range, pareto_scale_loss

#: Default encoder: ImageNet EfficientNet-Lite0 up to stride 16 (the original used an
#: ImageNet ResNet-18 up to res4, stride 16, which cannot be downloaded here). Stages 0-1
#: (stride 4) are frozen like the original's freeze_at=2.
DEFAULT_ENCODER = dict(type='EfficientNetLite', arch='lite0', out_indices=[3], pretrained=True,
                       frozen_stages=1, norm_eval=True)


@MODELS.register_module()
class DynamicResizer(nn.Module):
    """DyRA scale-factor predictor and batch resizer (https://arxiv.org/abs/2311.17098).

    Per image (un-padded, normalised, before any DyRA resizing): encoder -> global average
    pool -> Linear(C, d) -> TransformerEncoder(d, ``num_heads``, ``num_layers``; one token)
    -> Linear(d, 1) -> ``sigmoid * gain`` -> clamp(min=``0.1 * gain^2``). The factor is then
    rounded so the longer side is a multiple of ``norm`` and the image is resized bilinearly
    (align_corners=True). Rounding cuts the gradient: the resizer learns only from
    :func:`pareto_scale_loss`, gamma from it and from :func:`balance_loss`.

    Args:
        encoder (dict): mmdet backbone config; its last output feature map is pooled.
            Default: ``DEFAULT_ENCODER`` (EfficientNet-Lite0, ImageNet weights, stride 16).
        gain (float): Upper bound of the scale factor; the lower bound is ``0.1 * gain^2``.
            Must be in (0, 10) so the lower bound stays below the upper. Default: 2.0.
        norm (int): The resized longer side is a multiple of ``norm`` (8 for anchor-based
            detectors in the original, 1 otherwise). Default: 8.
        size_divisor (int): The resized batch is padded to a multiple of this. Default: 32.
        pareto_range (tuple[int, int]): (ST, END): the Pareto bins' bounds are the base anchor
            areas ``[32, 64, 128, 256, 512]^2[ST:END]``; ST == END is one bin. Default: (0, 2).
        balance (bool): Whether to use the balance loss on gamma. Default: True.
        gamma_init (float): Initial gamma, the scale of what counts as "small" (boxes below
            ``(187 sqrt(gamma / 6.8))^2`` px^2 get targets above 1). The balance loss pulls it into
            [6.8, 17.3] (6.8 when both size groups localise equally). Default: 6.8, the
            original's ``mean(64^2, 256^2) / mean(32^2, 96^2)``.
        embed_dims (int): Width d of the transformer. Default: 15.
        num_heads (int): Attention heads; must divide ``embed_dims``. Default: 5.
        num_layers (int): Transformer layers. Default: 3.

    Metrics: ``METRICS``, over the forwards since the resizer was last put into training mode
    (the latest epoch's training, then its evaluation).
    """

    METRICS = declare('DyRA (dynamic resizing)', [
        MetricSpec('dyra_gamma', 'area ratio', 'gamma now: the scale of what the Pareto loss counts as a small '
                   'object'),
        *(spec for split, when in (('train', 'training'), ('eval', 'evaluation')) for spec in (
            MetricSpec(f'dyra_{split}_sf_mean', 'scale factor', f"mean predicted scale factor over the latest "
                       f"epoch's {when} images"),
            MetricSpec(f'dyra_{split}_sf_std', 'scale factor', f'standard deviation of those {when} scale factors'),
            MetricSpec(f'dyra_{split}_pixel_ratio', 'ratio', f'mean resized / input pixel count over the '
                       f'latest epoch\'s {when} images'))),
    ], plots=[
        Plot((f'dyra_{split}_sf_mean',), style='band', spread=f'dyra_{split}_sf_std',
             title=f'DyRA {split} scale factor',
             caption=f'DyRA {split} scale factor: per-epoch mean, band +-1 std over images.')
        for split in ('train', 'eval')
    ])

    def __init__(self, encoder=None, gain=2.0, norm=8, size_divisor=32, pareto_range=(0, 2),
                 balance=True, gamma_init=GAMMA_INIT, embed_dims=15, num_heads=5, num_layers=3):
        super().__init__()
        if not 0 < gain < 10:
            raise ValueError(f'gain must be in (0, 10) so that 0.1*gain^2 < gain, got {gain}')
        if int(norm) != norm or norm < 1:
            raise ValueError(f'norm must be a positive integer, got {norm}')
        if int(size_divisor) != size_divisor or size_divisor < 1:
            raise ValueError(f'size_divisor must be a positive integer, got {size_divisor}')
        if not gamma_init > 0:
            raise ValueError(f'gamma_init must be > 0, got {gamma_init}')
        if embed_dims % num_heads:
            raise ValueError(f'num_heads must divide embed_dims, got {num_heads} and {embed_dims}')
        self.gain = float(gain)
        self.min_sf = 0.1 * self.gain**2
        self.norm = int(norm)
        self.size_divisor = int(size_divisor)
        self.pareto_range = check_pareto_range(pareto_range)
        self.balance = bool(balance)
        self.encoder = build_backbone(dict(DEFAULT_ENCODER if encoder is None else encoder))
        with torch.no_grad():
            channels = self.encoder.eval()(torch.zeros(1, 3, 64, 64))[-1].shape[1]
        self.proj = nn.Linear(channels, embed_dims)
        layer = nn.TransformerEncoderLayer(embed_dims, num_heads, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out = nn.Linear(embed_dims, 1)
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))
        self._reset_epoch_stats()

    def init_weights(self):
        """Initialise the encoder (e.g. load its pretrained weights) when it supports it."""
        if hasattr(self.encoder, 'init_weights'):
            self.encoder.init_weights()

    def train(self, mode=True):
        """Keep the encoder's norm layers in eval mode, like the original's FrozenBN: each
        image is encoded alone, so batch statistics would be those of a single image.
        Entering training mode (each epoch's start) begins a new metrics window."""
        if mode:
            self._reset_epoch_stats()
        super().train(mode)
        for m in self.encoder.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def predict(self, img, img_metas):
        """Return the raw scale factors, shape (N,), one per image of the padded batch."""
        feats = []
        for i, meta in enumerate(img_metas):
            h, w = meta['img_shape'][:2]
            feats.append(F.adaptive_avg_pool2d(self.encoder(img[i:i + 1, :, :h, :w])[-1], 1).flatten(1))
        tokens = self.proj(torch.cat(feats))[:, None, :]
        sf = torch.sigmoid(self.out(self.transformer(tokens))[:, 0, 0]) * self.gain
        return sf.clamp(min=self.min_sf)

    def resize_batch(self, img, img_metas, gt_bboxes=None, gt_bboxes_ignore=None):
        """Predict the scale factors and resize a padded batch image by image.

        Each image is un-padded with ``img_shape``, resized so its longer side becomes
        ``round(sf * L / norm) * norm``, and re-padded with zeros into a batch whose sides are
        multiples of ``size_divisor``. Boxes are scaled by the actual per-axis ratios;
        ``img_shape``, ``pad_shape``, ``batch_input_shape`` and ``scale_factor`` (multiplied
        by those ratios, so mmdet's ``rescale`` maps predictions back) are updated in copies
        of the meta dicts.

        Args:
            img (Tensor): Padded batch (N, C, H, W).
            img_metas (list[dict]): mmdet image metas.
            gt_bboxes (list[Tensor] | None): GT boxes per image. Default: None.
            gt_bboxes_ignore (list[Tensor] | None): Ignored boxes per image. Default: None.

        Returns:
            dict: ``img``, ``img_metas``, ``gt_bboxes``, ``gt_bboxes_ignore`` (resized or
            None) and ``sf`` (the raw predicted factors, with gradient).
        """
        sf = self.predict(img, img_metas)
        resized, metas, ratios = [], [], []
        for i, meta in enumerate(img_metas):
            h, w = meta['img_shape'][:2]
            longer = max(h, w)
            target = max(self.norm, round(float(sf[i]) * longer / self.norm) * self.norm)
            sf_rounded = target / longer
            new_h, new_w = max(1, round(h * sf_rounded)), max(1, round(w * sf_rounded))
            resized.append(F.interpolate(img[i:i + 1, :, :h, :w], size=(new_h, new_w),
                                         mode='bilinear', align_corners=True))
            rw, rh = new_w / w, new_h / h
            ratios.append(img.new_tensor([rw, rh, rw, rh]))
            meta = dict(meta)
            meta['img_shape'] = (new_h, new_w) + tuple(meta['img_shape'][2:])
            meta['scale_factor'] = np.asarray(meta['scale_factor'], dtype=np.float32) * np.array(
                [rw, rh, rw, rh], dtype=np.float32)
            metas.append(meta)
        pad_h = int(math.ceil(max(r.shape[2] for r in resized) / self.size_divisor)) * self.size_divisor
        pad_w = int(math.ceil(max(r.shape[3] for r in resized) / self.size_divisor)) * self.size_divisor
        batch = img.new_zeros(img.shape[0], img.shape[1], pad_h, pad_w)
        for i, (r, meta) in enumerate(zip(resized, metas)):
            batch[i, :, :r.shape[2], :r.shape[3]] = r[0]
            meta['pad_shape'] = (int(math.ceil(r.shape[2] / self.size_divisor)) * self.size_divisor,
                                 int(math.ceil(r.shape[3] / self.size_divisor)) * self.size_divisor,
                                 ) + tuple(meta['pad_shape'][2:])
            meta['batch_input_shape'] = (pad_h, pad_w)
        self._record(sf, [r.shape[2] * r.shape[3] / (m['img_shape'][0] * m['img_shape'][1])
                          for r, m in zip(resized, img_metas)])

        def scale(boxes):
            return None if boxes is None else [b * ratio for b, ratio in zip(boxes, ratios)]

        return dict(img=batch, img_metas=metas, gt_bboxes=scale(gt_bboxes),
                    gt_bboxes_ignore=scale(gt_bboxes_ignore), sf=sf)

    def losses(self, sf, gt_bboxes, loc_weight, pos_loss=None, pos_areas=None):
        """Return the DyRA loss dict, each loss scaled by the detached localisation loss.

        Args:
            sf (Tensor): Raw scale factors from :meth:`resize_batch`.
            gt_bboxes (list[Tensor]): GT boxes per image *before* DyRA resizing.
            loc_weight (Tensor): The detector's current localisation loss (detached here).
            pos_loss (list[Tensor] | None): Per-positive localisation losses, one tensor per
                balance term (e.g. RPN and RoI head); ignored when ``balance`` is off.
            pos_areas (list[Tensor] | None): Matched GT areas, aligned with ``pos_loss``.

        Returns:
            dict[str, Tensor]: ``loss_dyra_ps`` and, with ``balance``, ``loss_dyra_bal``, plus
            ``dyra_sf`` and ``dyra_gamma`` for the log (not summed: their names lack "loss").
        """
        areas = [(b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0) for b in gt_bboxes]
        weight = [float(w) for w in (loc_weight if isinstance(loc_weight, (list, tuple)) else [loc_weight])]
        out = dict(loss_dyra_ps=pareto_scale_loss(sf, areas, self.gamma, self.gain, self.pareto_range)
                   * sum(weight))
        if self.balance:
            # one weight per balance term (the original weights RPN and RoI terms separately)
            terms = [balance_loss(self.gamma, loss, area) * w
                     for loss, area, w in zip(pos_loss, pos_areas, weight)]
            out['loss_dyra_bal'] = torch.stack(terms).sum()
        out['dyra_sf'] = sf.detach().mean()
        out['dyra_gamma'] = self.gamma.detach().clone()
        return out

    def _record(self, sf, pixel_ratios):
        stats = self._stats['train' if self.training else 'eval']
        values = sf.detach().double().cpu()
        stats[0] += values.numel()
        stats[1] += float(values.sum())
        stats[2] += float((values**2).sum())
        stats[3] += float(sum(pixel_ratios))

    def _reset_epoch_stats(self):
        # [count, sum sf, sum sf^2, sum pixel ratio]; per-epoch only, so not in state_dict
        self._stats = dict(train=[0, 0.0, 0.0, 0.0], eval=[0, 0.0, 0.0, 0.0])

    def epoch_metrics(self):
        """The scale-factor statistics since the last ``train()`` (``METRICS``); reading clears nothing.

        Keys: ``dyra_gamma``; for each split seen in the window (``train``, ``eval``):
        ``dyra_{split}_sf_mean``, ``dyra_{split}_sf_std`` (raw predicted factors) and
        ``dyra_{split}_pixel_ratio`` (mean resized/input pixel count).
        """
        out = dict(dyra_gamma=float(self.gamma.detach()))
        for split, (n, s, s2, px) in self._stats.items():
            if n:
                mean = s / n
                out[f'dyra_{split}_sf_mean'] = mean
                out[f'dyra_{split}_sf_std'] = math.sqrt(max(s2 / n - mean**2, 0.0))
                out[f'dyra_{split}_pixel_ratio'] = px / n
        return out
