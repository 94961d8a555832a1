"""DynTune's MMDetection 2.x plugins.

Importing this package registers every component in mmdet's/mmcv's registries, so a
config switches them on with::

    custom_imports = dict(imports=['dyncomponents'], allow_failed_imports=False)

Components know nothing of Ray or Hydra: each one works in a plain mmdet config
trained with mmdet's own ``tools/train.py``.

Metrics protocol: a hook or ``nn.Module`` that defines ``epoch_metrics() -> dict``
is polled once per epoch, after evaluation, by whoever trains the model (DynTune's
search reports them to Ray Tune). Keys are flat, prefixed by the component.
"""
from . import backbones, dbf, dynamic_head, dynamic_rcnn, dyra, schedules  # noqa: F401  (registration)
