"""Per-positive localisation losses and matched GT areas, for DyRA's balance loss.

mmdet's heads return only reduced losses, so these helpers re-run the head's own target
assignment (``get_targets`` / the RoI head's assigner and sampler) on the same outputs,
without gradient: the balance loss uses the values detached. Nothing in mmdet is edited or
patched. With a random sampler (RPN, RoI head) the re-run draws another random subset of
positives than the detector loss did, an unbiased sample of the same distribution.
Each function returns ``(loss, area)``: one loss value per positive (the loss's mean over
box coordinates, as the original's per-element mean) and its matched GT box area.
"""
import torch
from mmdet.core import bbox2roi


def _areas(boxes):
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _per_positive(loss):
    # mmdet's losses return a 0-dim zero instead of an empty tensor when there is no positive
    if loss.dim() == 0 or loss.numel() == 0:
        return loss.new_zeros(0)
    return loss.mean(-1) if loss.dim() > 1 else loss


@torch.no_grad()
def anchor_head_positives(head, cls_scores, bbox_preds, gt_bboxes, img_metas, gt_labels=None,
                          gt_bboxes_ignore=None):
    """Positives of an ``AnchorHead`` (RetinaHead, RPNHead): regression loss and GT area."""
    featmap_sizes = [f.shape[-2:] for f in cls_scores]
    anchor_list, valid_flag_list = head.get_anchors(featmap_sizes, img_metas, device=cls_scores[0].device)
    label_channels = head.cls_out_channels if head.use_sigmoid_cls else 1
    targets = head.get_targets(anchor_list, valid_flag_list, gt_bboxes, img_metas,
                               gt_bboxes_ignore_list=gt_bboxes_ignore, gt_labels_list=gt_labels,
                               label_channels=label_channels)
    empty = cls_scores[0].new_zeros(0)
    if targets is None:
        return empty, empty
    bbox_targets, bbox_weights = targets[2], targets[3]
    num_imgs = len(img_metas)
    anchors = torch.cat([torch.stack([a[lvl] for a in anchor_list]) for lvl in range(len(bbox_preds))], 1)
    preds = torch.cat([p.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for p in bbox_preds], 1)
    tgts = torch.cat(bbox_targets, 1)
    pos = torch.cat(bbox_weights, 1)[..., 0] > 0
    anchors, preds, tgts = anchors[pos], preds[pos], tgts[pos]
    if head.reg_decoded_bbox:
        preds, gt_boxes = head.bbox_coder.decode(anchors, preds), tgts
    else:
        gt_boxes = head.bbox_coder.decode(anchors, tgts)
    loss = head.loss_bbox(preds, tgts, reduction_override='none')
    return _per_positive(loss), _areas(gt_boxes)


@torch.no_grad()
def fcos_head_positives(head, cls_scores, bbox_preds, gt_bboxes, gt_labels):
    """Positives of an ``FCOSHead``: per-point IoU-type loss and the matched GT area."""
    featmap_sizes = [f.shape[-2:] for f in cls_scores]
    points = head.prior_generator.grid_priors(featmap_sizes, dtype=bbox_preds[0].dtype,
                                              device=bbox_preds[0].device)
    labels, bbox_targets = head.get_targets(points, gt_bboxes, gt_labels)
    num_imgs = cls_scores[0].shape[0]
    flat_points = torch.cat([p.repeat(num_imgs, 1) for p in points])
    flat_preds = torch.cat([p.permute(0, 2, 3, 1).reshape(-1, 4) for p in bbox_preds])
    flat_targets = torch.cat(bbox_targets)
    # the matched GT box in pixels is (l + r) x (t + b), undoing norm_on_bbox's division
    strides = torch.cat([flat_points.new_full((len(p) * num_imgs, 1), float(s))
                         for p, s in zip(points, head.strides)])
    pixel_targets = flat_targets * strides if head.norm_on_bbox else flat_targets
    pos = (torch.cat(labels) >= 0) & (torch.cat(labels) < head.num_classes)
    pts = flat_points[pos]
    loss = head.loss_bbox(head.bbox_coder.decode(pts, flat_preds[pos]),
                          head.bbox_coder.decode(pts, flat_targets[pos]), reduction_override='none')
    ltrb = pixel_targets[pos]
    return _per_positive(loss), (ltrb[:, 0] + ltrb[:, 2]) * (ltrb[:, 1] + ltrb[:, 3])


@torch.no_grad()
def roi_head_positives(roi_head, x, proposal_list, gt_bboxes, gt_labels, gt_bboxes_ignore=None):
    """Positives of a ``StandardRoIHead`` box branch: regression loss and matched GT area."""
    if gt_bboxes_ignore is None:
        gt_bboxes_ignore = [None] * len(proposal_list)
    results = []
    for i in range(len(proposal_list)):
        assign = roi_head.bbox_assigner.assign(proposal_list[i], gt_bboxes[i], gt_bboxes_ignore[i],
                                               gt_labels[i])
        results.append(roi_head.bbox_sampler.sample(assign, proposal_list[i], gt_bboxes[i], gt_labels[i],
                                                    feats=[f[i][None] for f in x]))
    pos_boxes = [r.pos_bboxes for r in results]
    empty = x[0].new_zeros(0)
    if sum(len(b) for b in pos_boxes) == 0:
        return empty, empty
    bbox_head = roi_head.bbox_head
    pred = roi_head._bbox_forward(x, bbox2roi(pos_boxes))['bbox_pred']
    anchors = torch.cat(pos_boxes)
    gt_boxes = torch.cat([r.pos_gt_bboxes for r in results])
    labels = torch.cat([r.pos_gt_labels for r in results])
    if not bbox_head.reg_class_agnostic:
        pred = pred.view(len(pred), -1, 4)[torch.arange(len(pred)), labels]
    if bbox_head.reg_decoded_bbox:
        pred, target = bbox_head.bbox_coder.decode(anchors, pred), gt_boxes
    else:
        target = bbox_head.bbox_coder.encode(anchors, gt_boxes)
    loss = bbox_head.loss_bbox(pred, target, reduction_override='none')
    return _per_positive(loss), _areas(gt_boxes)
