"""The Ray Tune trainable: one trial = one real mmdet 2.x training run.

``train_trial(config, trial_spec)``: the trial's sampled parameters (``config``, path -> value) are
written into the shared mmdet config, which is saved as ``trial_config.py`` in the trial folder and
trained with mmdet's own ``train_detector``; ``TuneReportHook`` reports after every epoch. When Tune
hands the trial a checkpoint (a retry, a resumed search, a PBT exploit) training resumes from it.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from search.files import TRIAL_CONFIG
from search.spec import TrialSpec



def train_trial(config: dict, trial_spec: TrialSpec) -> None:
    """A search trial: ``config`` maps the space's paths to this trial's sampled values."""
    train_params({path: config[path] for path in trial_spec.param_paths}, trial_spec)


def train_finalist(config: dict, trial_spec: TrialSpec, finalists: list[dict]) -> None:
    """A ``finalize`` re-training: configuration ``finalists[config['finalist']]`` with seed ``config['seed']``."""
    train_params({**finalists[config['finalist']], 'seed': config['seed']}, trial_spec)


def train_params(params: dict, trial_spec: TrialSpec) -> None:
    import torch
    from ray import tune

    from search.mmdet_config import build_trial_config

    resources = tune.get_context().get_trial_resources().required_resources
    # ResourceChangingScheduler may restart a trial with more CPUs than it started with.
    torch.set_num_threads(max(1, int(resources.get('CPU', trial_spec.cpus_per_trial))))
    gpu_share = float(resources.get('GPU', 0.0))
    if 0 < gpu_share < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu_share)  # packed trials must not crowd each other out
    cfg = build_trial_config(trial_spec.base_config, params)
    trial_dir = Path(tune.get_context().get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(str(trial_dir / TRIAL_CONFIG))
    train_mmdet(cfg, work_dir=trial_dir / 'mmdet', checkpoint=tune.get_checkpoint())


def train_mmdet(cfg, work_dir: Path, checkpoint=None) -> None:
    """Train ``cfg`` with mmdet's ``train_detector``, reporting each epoch to Tune, resuming from ``checkpoint``."""
    from mmdet.apis import set_random_seed, train_detector
    from mmdet.datasets import build_dataset
    from mmdet.models import build_detector

    import dyncomponents  # noqa: F401  (registers the plugins)
    import search.hooks  # noqa: F401  (registers the search's hooks)
    from search.files import CHECKPOINT_FILE
    from search.hooks import REPORT_PRIORITY
    from search.monitoring import tensorboard_hook

    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.copy()
    cfg.work_dir = str(work_dir)
    cfg.checkpoint_config = None  # TuneReportHook checkpoints every epoch into Tune's storage
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type='TrialLearningRateHook', lr=cfg.optimizer.lr, priority='HIGHEST'),
        dict(type='FiniteLossHook', priority='VERY_HIGH'),
        dict(type='EpochCostHook', priority='VERY_HIGH'),
        dict(type='TuneReportHook', priority=REPORT_PRIORITY),
    ]
    tensorboard = tensorboard_hook(work_dir / 'tf_logs', cfg.get('log_config', {}).get('interval', 10))
    if tensorboard:  # search-only, like the hooks above: the dumped trial_config.py does not carry them
        cfg.custom_hooks.append(tensorboard)
    if checkpoint is not None:
        local = work_dir / 'resume_from.pth'
        with checkpoint.as_directory() as folder:
            shutil.copyfile(Path(folder) / CHECKPOINT_FILE, local)
        cfg.resume_from = str(local)
    set_random_seed(cfg.seed, deterministic=False)
    model = build_detector(cfg.model, train_cfg=cfg.get('train_cfg'), test_cfg=cfg.get('test_cfg'))
    model.init_weights()
    datasets = [build_dataset(cfg.data.train)]
    model.CLASSES = datasets[0].CLASSES
    train_detector(model, datasets, cfg, distributed=False, validate=True,
                   timestamp=time.strftime('%Y%m%d_%H%M%S'), meta=dict(seed=cfg.seed))
