"""mmdet detectors with DyRA: RetinaNet, FCOS and Faster R-CNN whose input is resized per
image by a :class:`DynamicResizer` after batching, in training and in ``simple_test``."""
from mmdet.models.builder import DETECTORS, MODELS
from mmdet.models.detectors import FCOS, FasterRCNN, RetinaNet

from .positives import anchor_head_positives, fcos_head_positives, roi_head_positives


def _build_resizer(resizer):
    cfg = dict(type='DynamicResizer')
    cfg.update(resizer or {})
    return MODELS.build(cfg)


class _DyRAMixin:
    """Shared DyRA plumbing: building the resizer, resizing the batch, refusing aug_test.

    First in each detector's bases, so its ``__init__`` takes ``resizer`` and passes the rest on.
    """

    def __init__(self, *args, resizer=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.resizer = _build_resizer(resizer)

    def _resize(self, img, img_metas, gt_bboxes=None, gt_bboxes_ignore=None):
        return self.resizer.resize_batch(img, img_metas, gt_bboxes, gt_bboxes_ignore)

    def aug_test(self, imgs, img_metas, rescale=False):
        """Not supported: each augmented view would need its own scale factor."""
        raise NotImplementedError(f'{type(self).__name__} supports simple_test only, not test-time '
                                  'augmentation (MultiScaleFlipAug with one scale and flip=False)')


class _DyRASingleStage(_DyRAMixin):
    """forward_train / simple_test for single-stage detectors; ``_positives`` is per head type."""

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore=None):
        """Resize by DyRA, then the detector losses plus ``loss_dyra_ps`` / ``loss_dyra_bal``
        weighted by the detached ``loss_bbox``."""
        r = self._resize(img, img_metas, gt_bboxes, gt_bboxes_ignore)
        x = self.extract_feat(r['img'])
        outs = self.bbox_head(x)
        losses = self.bbox_head.loss(*outs, r['gt_bboxes'], gt_labels, r['img_metas'],
                                     gt_bboxes_ignore=r['gt_bboxes_ignore'])
        loss_bbox = losses['loss_bbox']
        loc = sum(loss_bbox) if isinstance(loss_bbox, (list, tuple)) else loss_bbox
        pos = [self._positives(outs, r, gt_labels)] if self.resizer.balance else []
        losses.update(self.resizer.losses(r['sf'], gt_bboxes, loc.detach(),
                                          [p[0] for p in pos], [p[1] for p in pos]))
        return losses

    def simple_test(self, img, img_metas, rescale=False):
        """Resize by DyRA, then the detector's own test (``rescale`` uses the updated
        ``scale_factor``, so boxes come back in original image coordinates)."""
        r = self._resize(img, img_metas)
        return super().simple_test(r['img'], r['img_metas'], rescale=rescale)


@DETECTORS.register_module()
class DyRARetinaNet(_DyRASingleStage, RetinaNet):
    """RetinaNet with DyRA dynamic resolution (https://arxiv.org/abs/2311.17098).

    Args:
        resizer (dict): :class:`DynamicResizer` arguments (``type`` optional). Default: {}.
        **kwargs: ``RetinaNet`` arguments.
    """

    def _positives(self, outs, r, gt_labels):
        return anchor_head_positives(self.bbox_head, outs[0], outs[1], r['gt_bboxes'], r['img_metas'],
                                     gt_labels, r['gt_bboxes_ignore'])


@DETECTORS.register_module()
class DyRAFCOS(_DyRASingleStage, FCOS):
    """FCOS with DyRA dynamic resolution (https://arxiv.org/abs/2311.17098).

    Args:
        resizer (dict): :class:`DynamicResizer` arguments (``type`` optional). Default: {}.
        **kwargs: ``FCOS`` arguments.
    """

    def _positives(self, outs, r, gt_labels):
        return fcos_head_positives(self.bbox_head, outs[0], outs[1], r['gt_bboxes'], gt_labels)


@DETECTORS.register_module()
class DyRAFasterRCNN(_DyRAMixin, FasterRCNN):
    """Faster R-CNN with DyRA dynamic resolution (https://arxiv.org/abs/2311.17098).

    The balance loss has two terms, RPN and RoI box head, each weighted by its own detached
    box loss; the Pareto loss is weighted by their sum (as in the original).

    Args:
        resizer (dict): :class:`DynamicResizer` arguments (``type`` optional). Default: {}.
        **kwargs: ``FasterRCNN`` arguments.
    """

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_bboxes_ignore=None,
                      gt_masks=None, proposals=None, **kwargs):
        """Resize by DyRA, then TwoStageDetector's training step plus the DyRA losses."""
        if proposals is not None:
            raise ValueError('DyRAFasterRCNN computes its proposals with the RPN on the resized '
                             'image; precomputed proposals are not supported, got proposals')
        r = self._resize(img, img_metas, gt_bboxes, gt_bboxes_ignore)
        img_metas, boxes, ignore = r['img_metas'], r['gt_bboxes'], r['gt_bboxes_ignore']
        x = self.extract_feat(r['img'])
        losses = dict()
        proposal_cfg = self.train_cfg.get('rpn_proposal', self.test_cfg.rpn)
        rpn_outs = self.rpn_head(x)
        losses.update(self.rpn_head.loss(*rpn_outs, boxes, img_metas, gt_bboxes_ignore=ignore))
        proposal_list = self.rpn_head.get_bboxes(*rpn_outs, img_metas=img_metas, cfg=proposal_cfg)
        losses.update(self.roi_head.forward_train(x, img_metas, proposal_list, boxes, gt_labels,
                                                  ignore, gt_masks, **kwargs))
        loc = [sum(losses['loss_rpn_bbox']).detach(), losses['loss_bbox'].detach()]
        pos = []
        if self.resizer.balance:
            pos = [anchor_head_positives(self.rpn_head, rpn_outs[0], rpn_outs[1], boxes, img_metas,
                                         None, ignore),
                   roi_head_positives(self.roi_head, x, proposal_list, boxes, gt_labels, ignore)]
        losses.update(self.resizer.losses(r['sf'], gt_bboxes, loc, [p[0] for p in pos],
                                          [p[1] for p in pos]))
        return losses

    def simple_test(self, img, img_metas, proposals=None, rescale=False):
        """Resize by DyRA, then TwoStageDetector's test with the updated metas."""
        r = self._resize(img, img_metas)
        return super().simple_test(r['img'], r['img_metas'], proposals=proposals, rescale=rescale)
