"""DynTune's MMDetection 2.x plugins.

Importing this package registers every component in mmdet's/mmcv's registries, so a
config switches them on with::

    custom_imports = dict(imports=['dyncomponents'], allow_failed_imports=False)

Components know nothing of Ray or Hydra: each one works in a plain mmdet config
trained with mmdet's own ``tools/train.py``.

The protocol between the components and whoever trains them (DynTune's search, a
plain mmdet run) is :mod:`dyncomponents.protocol`, standard library only:

- **What each reports.** A hook or ``nn.Module`` that reports metrics declares them
  in a class attribute ``METRICS = declare(component, [MetricSpec(name, unit,
  meaning), ...], plots=[Plot(...), ...])`` next to its code, and returns them from
  ``epoch_metrics() -> dict[str, float]``, polled once per epoch after evaluation.
  Names are flat and unique across components (prefixed by the component); a key
  that is not declared is an error.
- **Reading never clears.** ``epoch_metrics()`` describes the latest epoch and
  changes nothing; statistics gathered over forward passes restart when the module
  is put into training mode (mmcv's runner does it at every epoch's start).
- **How to plot it.** Each ``Plot`` names the metrics drawn together and the style
  (``lines``, ``steps``, ``band`` with its edges or spread and a dotted reference,
  ``timeline``), the y label (default: name and unit) and a caption; a metric that no
  plot names is drawn as a line per epoch.
- **When it has settled.** ``last_phase_change_epoch(max_epochs, iters_per_epoch)``:
  completed epochs after which every phase of its schedule has happened once.

``protocol.declared_components()`` lists every declaration; ``protocol.declarations_in``,
``protocol.collect_epoch_metrics`` and ``protocol.settled_epoch`` apply the contract to a
runner's hooks and modules. The peak-memory meter the components and the search share is
:mod:`dyncomponents.memory`.
Declared here: ``DynamicBackboneFreezingHook``, ``DynamicRCNNRoIHead``,
``DynamicFCOSHead`` and ``DynamicResizer`` (the DyRA detectors' resizer).
"""
from . import protocol  # noqa: F401  (first: the components declare their metrics with it)
from . import backbones, dbf, dynamic_head, dynamic_rcnn, dyra, schedules  # noqa: F401  (registration)
