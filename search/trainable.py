"""The Ray Tune trainable: one trial = one real mmdet 2.x training run.

``train_trial(config, trial_spec)``: the trial's sampled parameters (``config``, path -> value) are
written into the shared mmdet config, which is saved as ``trial_config.py`` in the trial folder and
trained with mmdet's own ``train_detector``; ``TuneReportHook`` reports after every epoch. When Tune
hands the trial a checkpoint (a retry, a resumed search, a PBT exploit) training resumes from it,
random generators included (``RngStateHook``): the continuation is the one an uninterrupted trial
from that checkpoint trains, loss for loss. ``named_trainable`` wraps a trial function as the Tune
trainable the driver runs.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from search.files import TRIAL_CONFIG
from search.spec import TrialSpec
from search.storage import trial_folder



def train_trial(config: dict, trial_spec: TrialSpec) -> None:
    """A search trial: ``config`` maps the space's paths to this trial's sampled values (or marks the reference)."""
    train_config(trial_spec.config_for(config), trial_spec)


def train_finalist(config: dict, trial_spec: TrialSpec, finalists: list[dict]) -> None:
    """A ``finalize`` re-training: configuration ``finalists[config['finalist']]`` with seed ``config['seed']``."""
    cfg = trial_spec.config_for(finalists[config['finalist']])
    cfg.seed = int(config['seed'])
    train_config(cfg, trial_spec)


def train_config(cfg, trial_spec: TrialSpec) -> None:
    """Train the mmdet config ``cfg`` as this Tune trial: its resources, folder, checkpoint and reports."""
    import torch
    from ray import tune

    resources = tune.get_context().get_trial_resources().required_resources
    # ResourceChangingScheduler may restart a trial with more CPUs than it started with.
    torch.set_num_threads(max(1, int(resources.get('CPU', trial_spec.cpus_per_trial))))
    gpu_share = float(resources.get('GPU', 0.0))
    if 0 < gpu_share < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu_share)  # packed trials must not crowd each other out
    trial_dir = trial_folder()  # uploaded to the trial's folder in the experiment's storage by Tune
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
    from search.hooks import REPORT_PRIORITY, tensorboard_hook

    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.copy()
    cfg.work_dir = str(work_dir)
    cfg.checkpoint_config = None  # TuneReportHook checkpoints every epoch into Tune's storage
    # RngStateHook first, before the space's hooks of the same priority: a restored trial's epoch
    # draws the same random numbers as the stopped trial's would have (bit-exact resume).
    cfg.custom_hooks = [dict(type='RngStateHook', priority='HIGHEST'), *cfg.get('custom_hooks', []),
                        dict(type='TrialLearningRateHook', lr=cfg.optimizer.lr, priority='HIGHEST'),
                        dict(type='FiniteLossHook', priority='VERY_HIGH'),
                        dict(type='EpochCostHook', priority='VERY_HIGH'),
                        dict(type='TuneReportHook', priority=REPORT_PRIORITY)]
    tensorboard = tensorboard_hook(work_dir / 'tf_logs', cfg.get('log_config', {}).get('interval', 10))
    if tensorboard:  # search-only, like the hooks above: the dumped trial_config.py does not carry them
        cfg.custom_hooks.append(tensorboard)
    resume_copy = None
    if checkpoint is not None:
        # Outside the trial folder: Tune uploads that folder, and this copy is already in storage.
        resume_copy = Path(tempfile.mkdtemp(prefix='dyntune-resume-')) / 'resume_from.pth'
        with checkpoint.as_directory() as folder:
            shutil.copyfile(Path(folder) / CHECKPOINT_FILE, resume_copy)
        cfg.resume_from = str(resume_copy)
    skip_epoch_sleeps()
    set_random_seed(cfg.seed, deterministic=False)
    model = build_detector(cfg.model, train_cfg=cfg.get('train_cfg'), test_cfg=cfg.get('test_cfg'))
    model.init_weights()
    datasets = [build_dataset(cfg.data.train)]
    model.CLASSES = datasets[0].CLASSES
    try:
        train_detector(model, datasets, cfg, distributed=False, validate=True,
                       timestamp=time.strftime('%Y%m%d_%H%M%S'), meta=dict(seed=cfg.seed))
    finally:
        if resume_copy is not None:
            shutil.rmtree(resume_copy.parent, ignore_errors=True)


def skip_epoch_sleeps() -> None:
    """Drop the sleeps of mmcv's ``EpochBasedRunner`` in this trial's process.

    It sleeps 2 s at the start of every epoch and 1 s at the end of ``run``, against deadlocks of
    distributed data loaders at epoch transitions. A trial trains in one process (``distributed=False``
    above), so they guard nothing there; in a 2-epoch smoke trial they were 5 s of waiting.
    """
    from types import SimpleNamespace

    from mmcv.runner import epoch_based_runner

    epoch_based_runner.time = SimpleNamespace(sleep=lambda seconds: None)  # sleep is all that module uses of time


def named_trainable(train_fn, resources: dict, **params):
    """Return ``train_fn`` as a Tune trainable class whose actors are named after their trial.

    Tune creates trial actors without a Ray actor name, and a function trainable's ``__repr__`` is the
    function name, so every trial shows as ``train_trial``. Ray shows an actor's ``__repr__`` in the
    dashboard's actor table ("Repr") and in log prefixes; this class returns Tune's trial name,
    ``<function name>_<trial id>``. Trial folders keep their names (Tune takes them from ``_name``).

    Args:
        train_fn (callable): ``train_fn(config, **params)``, a Tune function trainable.
        resources (dict): ``tune.with_resources`` request, e.g. ``{'cpu': 1, 'gpu': 0}``.
        **params: large constant arguments passed through ``tune.with_parameters``.
    """
    from ray import tune
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(tune.with_resources(tune.with_parameters(train_fn, **params), resources))

    class DynTuneTrial(base):
        def __repr__(self):
            return f'{self._name}_{self.trial_id}'

    DynTuneTrial.__name__ = DynTuneTrial.__qualname__ = base._name
    return DynTuneTrial
