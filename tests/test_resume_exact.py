"""A trial restored from a checkpoint continues exactly as if it had not been stopped (bit-exact resume).

Every case runs ``search.trainable.train_mmdet``, the code each search trial runs, inside a real
Ray Tune trial, on the CPU, with smoke-sized data (16 images, 8-9 iterations an epoch):

- ``straight``: 2 epochs, never stopped; its per-iteration losses, images and flips are the reference.
- ``crash``: the same training raises in epoch 2 on its first attempt; Tune retries it from its
  epoch-1 checkpoint (``FailureConfig(max_failures=1)``), as it does a failed search trial.
- ``resume``: ``train_mmdet(cfg, work_dir, checkpoint=straight's epoch-1 checkpoint)``, what a resumed
  search does with a trial that was running.
- ``exploit`` twice: a PBT exploit, another trial's checkpoint with a mutated learning rate.
"""
import json
import sys
from pathlib import Path

import pytest
import torch
from mmcv.runner import Hook

CASES_FROM_SCRATCH = ['straight', 'crash']
CASES_FROM_CHECKPOINT = ['resume', 'exploit_a', 'exploit_b']
EXPLOIT_LR = 0.002


class _Trace(Hook):
    """Record each iteration's loss (full precision), images and flips; optionally fail once in epoch 2."""

    def __init__(self, path, fail_marker=None):
        self.path = Path(path)
        self.fail_marker = Path(fail_marker) if fail_marker else None

    def after_train_iter(self, runner):
        metas = runner.data_batch['img_metas'].data[0]
        row = dict(epoch=runner.epoch + 1, iter=runner.inner_iter + 1, loss=runner.outputs['log_vars']['loss'],
                   images=[[m['ori_filename'], bool(m['flip'])] for m in metas])
        with open(self.path, 'a') as handle:
            handle.write(json.dumps(row) + '\n')
        if self.fail_marker and runner.epoch == 1 and runner.inner_iter == 2 and not self.fail_marker.exists():
            self.fail_marker.touch()
            raise RuntimeError('injected failure in epoch 2 (first attempt only)')

    def after_run(self, runner):
        torch.save(runner.model.state_dict(), self.path.with_suffix('.weights.pth'))


def _trainable(config, cfg_dict, out, donor=None):
    from mmcv import Config
    from mmcv.runner import HOOKS
    from ray import tune

    from search.trainable import train_mmdet

    HOOKS.register_module(name='_Trace', module=_Trace, force=True)
    case = config['case']
    cfg = Config(cfg_dict)
    if case.startswith('exploit'):
        cfg.optimizer.lr = EXPLOIT_LR
    checkpoint = tune.Checkpoint(donor) if donor else tune.get_checkpoint()
    attempt = 'restored' if checkpoint is not None else 'fresh'
    cfg.custom_hooks = [*cfg.custom_hooks, dict(
        type='_Trace', path=str(Path(out) / f'{case}-{attempt}.jsonl'),
        fail_marker=str(Path(out) / 'crashed') if case == 'crash' else None, priority='LOWEST')]
    train_mmdet(cfg, Path(tune.get_context().get_trial_dir()) / 'mmdet', checkpoint=checkpoint)


def _fit(param_cases, out, **kwargs):
    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable in Ray's workers
    trainable = tune.with_resources(tune.with_parameters(_trainable, out=str(out), **kwargs), {'cpu': 1})
    return tune.Tuner(trainable, param_space={'case': tune.grid_search(param_cases)},
                      run_config=tune.RunConfig(storage_path=str(out / 'ray'), verbose=0,
                                                failure_config=tune.FailureConfig(max_failures=1))).fit()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _epoch(rows, epoch):
    return [r for r in rows if r['epoch'] == epoch]


def test_rng_state_survives_a_weights_only_checkpoint_and_replays_every_generator(tmp_path):
    import random

    import numpy as np

    from search.hooks import rng_state, set_rng_state

    def draws():  # np.random.randn also uses NumPy's cached second Gaussian
        return random.random(), np.random.rand(), np.random.randn(), np.random.randn(), torch.rand(2).tolist()

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leave a cached Gaussian in the state
    torch.save({'meta': {'state': rng_state()}}, tmp_path / 'c.pth')
    expected = draws()
    set_rng_state(torch.load(tmp_path / 'c.pth', weights_only=True)['meta']['state'])  # mmcv's resume loads so
    assert draws() == expected


@pytest.mark.slow
def test_resumed_retried_and_exploiting_trials_continue_bit_exactly(ray_session, tmp_path):
    from search.config import compose_config
    from search.mmdet_config import build_trial_config
    from search.spec import build_spec

    spec = build_spec(compose_config(['space=baseline', 'smoke=true', f'experiment.dir={tmp_path}']))
    cfg = build_trial_config(spec.trial.base_config, {'optimizer.lr': 0.01})
    cfg_dict = cfg._cfg_dict.to_dict()

    grid = _fit(CASES_FROM_SCRATCH, tmp_path, cfg_dict=cfg_dict)
    assert not grid.errors, grid.errors
    straight = next(r for r in grid if r.config['case'] == 'straight')
    donor = next(c for c, m in straight.best_checkpoints if m['epoch'] == 1)
    grid = _fit(CASES_FROM_CHECKPOINT, tmp_path, cfg_dict=cfg_dict, donor=donor.path)
    assert not grid.errors, grid.errors

    reference = _rows(tmp_path / 'straight-fresh.jsonl')
    expected = _epoch(reference, 2)
    per_epoch = len(_epoch(reference, 1))
    assert per_epoch >= 8 and len(expected) == per_epoch and len(reference) == 2 * per_epoch
    weights = torch.load(tmp_path / 'straight-fresh.weights.pth', weights_only=True)

    def same_weights(name):
        other = torch.load(tmp_path / f'{name}.weights.pth', weights_only=True)
        return all(torch.equal(weights[k], other[k]) for k in weights)

    # (b) The retried trial failed at iteration 3 of epoch 2 and restarted from its epoch-1 checkpoint.
    first = _rows(tmp_path / 'crash-fresh.jsonl')
    assert first[:per_epoch] == reference[:per_epoch] and len(_epoch(first, 2)) == 3
    retried = _rows(tmp_path / 'crash-restored.jsonl')
    assert retried == expected  # every loss, image and flip, exactly equal floats
    assert same_weights('crash-restored')
    # (a) A resumed trial: the epoch-1 checkpoint handed to train_mmdet.
    assert _rows(tmp_path / 'resume-restored.jsonl') == expected
    assert same_weights('resume-restored')
    # (c) A PBT exploit: the donor's data order and augmentations; the first loss is computed before the
    # mutated learning rate takes a step, so it is the donor's too; and it is the same every time.
    exploit = _rows(tmp_path / 'exploit_a-restored.jsonl')
    assert [r['images'] for r in exploit] == [r['images'] for r in expected]
    assert exploit[0]['loss'] == expected[0]['loss'] and exploit[1:] != expected[1:]
    assert _rows(tmp_path / 'exploit_b-restored.jsonl') == exploit
