"""Evaluate trained checkpoints on the test split, once, after the search.

The search itself never reads the test split: trials are scored and stopped on validation. The
best of many trials is then the one whose validation score was luckiest as well as good, so its
validation score is optimistic; its test score, measured once, is not. This runs mmdet's own test
path (what ``tools/test.py`` does: ``single_gpu_test`` over ``data.test``, then the dataset's COCO
evaluation with pycocotools) in a Ray task with one trial's resources, on any node of the cluster.
"""
from __future__ import annotations

from pathlib import Path


def evaluate_checkpoint(config_file: str, checkpoint: str, ann_file: str, device: str = 'cpu') -> dict[str, float]:
    """COCO bbox metrics of ``checkpoint`` (a model of ``config_file``) on the COCO file ``ann_file``."""
    from mmcv import Config
    from mmcv.runner import load_checkpoint
    from mmdet.apis import single_gpu_test
    from mmdet.datasets import build_dataloader, build_dataset
    from mmdet.models import build_detector
    from mmdet.utils import build_dp

    import dyncomponents  # noqa: F401  (registers the plugins)
    from search.metrics import COCO_METRICS

    cfg = Config.fromfile(config_file)
    cfg.data.test.ann_file = ann_file
    cfg.data.test.test_mode = True
    cfg.model.train_cfg = None
    dataset = build_dataset(cfg.data.test)
    loader = build_dataloader(dataset, samples_per_gpu=1, workers_per_gpu=0, dist=False, shuffle=False)
    model = build_detector(cfg.model, test_cfg=cfg.get('test_cfg'))
    meta = load_checkpoint(model, checkpoint, map_location='cpu').get('meta', {})
    model.CLASSES = meta.get('CLASSES', dataset.CLASSES)
    model = build_dp(model, device, device_ids=[0])
    outputs = single_gpu_test(model, loader)
    metrics = dataset.evaluate(outputs, metric='bbox')
    # mmdet returns no metrics when the model detected nothing: COCO scores that as 0 everywhere.
    return {key: float(metrics.get(key, 0.0)) for key in COCO_METRICS}


def _evaluate_copies(config_text: str, checkpoint_bytes: bytes, ann_file: str, device: str) -> dict[str, float]:
    """:func:`evaluate_checkpoint` on copies of the config and checkpoint written where the task runs.

    The driver's files may be in its own local cache (an experiment in a storage URI), and on a
    cluster the task can land on any node: only the data must be at the same path on every node.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix='dyntune-test-') as folder:
        config, checkpoint = Path(folder) / 'config.py', Path(folder) / 'checkpoint.pth'
        config.write_text(config_text)
        checkpoint.write_bytes(checkpoint_bytes)
        return evaluate_checkpoint(str(config), str(checkpoint), ann_file, device)


def evaluate_on_test(runs: dict[str, tuple[str, str]], ann_file: str, cpus: float, gpus: float) -> dict[str, dict]:
    """Evaluate each ``name -> (config file, checkpoint)`` on ``ann_file``, in parallel Ray tasks.

    Returns name -> metrics, or name -> {'error': reason} for a run whose evaluation failed (the
    search's results stand either way).
    """
    import ray

    device = 'cuda' if gpus > 0 else 'cpu'
    task = ray.remote(num_cpus=cpus, num_gpus=min(gpus, 1.0))(_evaluate_copies)
    pending = {name: task.remote(Path(config).read_text(), ray.put(Path(checkpoint).read_bytes()), ann_file, device)
               for name, (config, checkpoint) in runs.items() if Path(checkpoint).is_file()}
    out = {}
    for name, ref in pending.items():
        try:
            out[name] = ray.get(ref)
        except Exception as err:  # noqa: BLE001  (a failed evaluation is reported, not fatal)
            out[name] = {'error': f'{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ""}'}
    return out
