"""DyRA's two resizer losses: the Pareto scale loss and the balance loss.

Paper: https://arxiv.org/abs/2311.17098 (code: github.com/DyRATEMP/DyRA,
``detectron2/modeling/resizer/dynamic_resizer.py``). Both are pure functions so they can
be checked on hand examples; the constants are the original's (areas in pixels^2).
"""
import torch

#: Base anchor areas of the original (detectron2's RetinaNet/FPN anchors 32..512).
BASE_ANCHOR_AREAS = (32.0**2, 64.0**2, 128.0**2, 256.0**2, 512.0**2)
#: COCO's small/large object bounds 32^2 and 96^2.
COCO_BOUNDS = (32.0**2, 96.0**2)
#: Initial gamma = mean(64^2, 256^2) / mean(32^2, 96^2) = 6.8.
GAMMA_INIT = (BASE_ANCHOR_AREAS[1] + BASE_ANCHOR_AREAS[3]) / (COCO_BOUNDS[0] + COCO_BOUNDS[1])


def check_pareto_range(pareto_range):
    """Return ``(st, end)`` after checking ``0 <= st <= end <= 5``, else raise ValueError."""
    if len(pareto_range) != 2:
        raise ValueError(f'pareto_range must be a pair (st, end), got {pareto_range!r}')
    st, end = (int(v) for v in pareto_range)
    if not 0 <= st <= end <= len(BASE_ANCHOR_AREAS):
        raise ValueError(f'pareto_range must satisfy 0 <= st <= end <= {len(BASE_ANCHOR_AREAS)}, '
                         f'got {pareto_range!r}')
    return st, end


def _map_range(x, lo, hi):
    # maps [lo, hi] linearly onto [-6, 6], the sigmoid's active range
    return 12.0 * (x - lo) / (hi - lo) - 6.0


def pareto_scale_loss(sf, gt_areas, gamma, gain=2.0, pareto_range=(0, 2)):
    """Pareto scale loss ``loss_ps``: per image, the sum over size bins of the bin-mean BCE.

    For image i with predicted scale factor ``sf_i`` and boxes of (original) area ``A_j``:
    ``a_j = A_j * sf_i^2`` (``sf`` detached), the target ``y_j = sigmoid(-map(a_j,
    [32^2 gamma, 96^2 gamma]))`` is ~1 for small boxes (upscale) and ~0 for large ones, and
    ``l_j = BCE(sf_i / gain, y_j)``. Boxes are binned by ``a_j`` with the bounds
    ``BASE_ANCHOR_AREAS[st:end]`` (plus the two open ends); the image loss is the sum of
    the non-empty bins' mean ``l_j`` (the original's ``-log prod exp(-mean)``). With
    ``st == end`` there are no bounds, so all boxes form one bin (plain MLE over all boxes,
    as the original README describes; the original code crashes there).

    Args:
        sf (Tensor): Predicted scale factors, shape (N,), in (0, gain).
        gt_areas (list[Tensor]): Per image, the areas of its GT boxes before resizing.
        gamma (Tensor): The learnable scalar gamma.
        gain (float): Upper bound of the scale factor. Default: 2.0.
        pareto_range (tuple[int, int]): (ST, END) slice of ``BASE_ANCHOR_AREAS``. Default: (0, 2).

    Returns:
        Tensor: Scalar, the mean over images that have at least one box; an image without
        boxes contributes nothing, and a batch without boxes gives a zero loss that still
        depends on ``sf`` and ``gamma`` (so every parameter takes part in the graph).
    """
    st, end = check_pareto_range(pareto_range)
    bounds = sf.new_tensor(BASE_ANCHOR_AREAS[st:end])
    per_image = []
    for sf_i, areas in zip(sf, gt_areas):
        if areas.numel() == 0:
            continue
        a = areas.to(sf.dtype) * sf_i.detach()**2
        y = torch.sigmoid(-_map_range(a, COCO_BOUNDS[0] * gamma, COCO_BOUNDS[1] * gamma))
        p = sf_i / gain
        bce = -(y * torch.log(p.clamp(min=1e-12)) + (1 - y) * torch.log((1 - p).clamp(min=1e-12)))
        # bin k holds bounds[k-1] <= a < bounds[k]; bin 0 is a < bounds[0]
        bins = torch.bucketize(a.detach(), bounds, right=True)
        sums = bce.new_zeros(len(bounds) + 1).index_add(0, bins, bce)
        counts = torch.bincount(bins, minlength=len(bounds) + 1)
        nonempty = counts > 0
        per_image.append((sums[nonempty] / counts[nonempty]).sum())
    if not per_image:
        return sf.sum() * 0 + gamma * 0
    return torch.stack(per_image).mean()


def balance_loss(gamma, pos_loss, pos_areas):
    """Balance loss ``loss_bal = |gamma - target|``: moves gamma towards the size group that
    localises worse.

    Positives are split at ``thr = mean(32^2, 96^2) * gamma`` by their matched GT area;
    ``L_g`` is each group's mean per-positive localisation loss (an empty group takes the
    other group's value, so it has no pull). Weights ``w = 1 / clamp(1 - L_g, 0.1)``,
    normalised, then ``w = 2w - min(2w) + 1``; ``target = mean(flip(w) * (64^2, 256^2)) /
    mean(32^2, 96^2)``, so a harder small group raises gamma (more boxes count as small and
    the Pareto targets push the scale factors up). Only gamma receives a gradient.

    Args:
        gamma (Tensor): The learnable scalar gamma.
        pos_loss (Tensor): Per-positive localisation loss (detached), shape (P,).
        pos_areas (Tensor): Area of each positive's matched GT box (as the detector saw it), (P,).

    Returns:
        Tensor: Scalar loss; zero (still depending on gamma) when there is no positive.
    """
    if pos_loss.numel() == 0:
        return gamma * 0
    pos_loss = pos_loss.detach().to(gamma.dtype)
    thr = (COCO_BOUNDS[0] + COCO_BOUNDS[1]) / 2 * gamma.detach()
    small = pos_areas.to(gamma.dtype) < thr
    groups = [pos_loss[small], pos_loss[~small]]
    means = [g.mean() if g.numel() else None for g in groups]
    means = [m if m is not None else other for m, other in zip(means, means[::-1])]
    lg = torch.stack(means)
    w = 1.0 / (1.0 - lg).clamp(min=0.1)
    w = 2 * w / w.sum()
    w = w - w.min() + 1
    anchors = gamma.new_tensor([BASE_ANCHOR_AREAS[1], BASE_ANCHOR_AREAS[3]])
    target = (w.flip(0) * anchors).mean() / ((COCO_BOUNDS[0] + COCO_BOUNDS[1]) / 2)
    return (gamma - target).abs()
