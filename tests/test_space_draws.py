"""No built-in space spends most of its draws on configurations that switch its component off.

Switching the component off is what the reference trial is for (search/reference.py). Each built-in
space is drawn 2000 times on its preferred preset, with the default dataset's iterations per epoch
(data=embedded: 300 images, batch 2); a draw is "off" when its component would train exactly like the
detector without it. The rules below say when that is, per component, from the trial's mmdet config.
"""
import math
import random

import pytest

from search.mmdet_config import build_trial_config, factor_base, load_base, merge_space, resolve_base
from search.space import available_spaces, load_space

DRAWS = 2000
ITERS_PER_EPOCH = 150  # data=embedded's 300 training images at the presets' batch of 2


def _draw(dist, rng):
    if dist.kind == 'choice':
        value = rng.choice(dist.args)
        return [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, tuple) else value
    if dist.kind == 'uniform':
        return rng.uniform(dist.low, dist.high)
    if dist.kind == 'loguniform':
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    return rng.randint(dist.low, dist.high)


def _off_components(cfg) -> dict[str, bool]:
    """Component name -> whether this trial config trains as if the component were absent."""
    from dyncomponents.dbf.schedules import build_freeze_schedule

    out = {}
    epochs = cfg.runner.max_epochs
    for hook in cfg.get('custom_hooks', []):
        if hook['type'] == 'DynamicBackboneFreezingHook':
            trained = build_freeze_schedule(hook['schedule']).trained_epochs(epochs, ITERS_PER_EPOCH)
            out['dbf'] = all(t == 1.0 for t in trained)  # never frozen: plain fine-tuning
    model = cfg.model
    if model.get('roi_head', {}).get('type') == 'DynamicRCNNRoIHead':
        interval = round(model.train_cfg.rcnn.dynamic_rcnn.update_iter_interval)
        out['dynamic_rcnn'] = interval > epochs * ITERS_PER_EPOCH  # the thresholds never move
    if model.get('bbox_head', {}).get('type') == 'DynamicFCOSHead':
        out['dynamic_head'] = model.bbox_head.budget_lambda == 0  # no FLOPs budget
    if str(model.type).startswith('DyRA'):
        out['dyra'] = False  # the resizer always picks the scale
    return out


@pytest.mark.parametrize('name', available_spaces())
def test_a_built_in_space_rarely_switches_its_component_off(name):
    space = load_space(name)
    preset = next((o.split('=', 1)[1] for o in space.overrides if o.startswith('base=')), 'retinanet')
    config = merge_space(load_base(resolve_base(preset)), space)
    params = {path: dist.scaled(factor_base(config, path)) if dist.factor else dist
              for path, dist in space.params.items()}
    rng = random.Random(0)
    off_counts, components = {}, set()
    for _ in range(DRAWS):
        cfg = build_trial_config(config, {path: _draw(dist, rng) for path, dist in params.items()})
        for component, off in _off_components(cfg).items():
            components.add(component)
            off_counts[component] = off_counts.get(component, 0) + off
    shares = {c: off_counts[c] / DRAWS for c in components}
    print(f'space {name}: share of draws with the component off {shares}')
    assert all(share <= 0.1 for share in shares.values()), shares
    if name in ('dbf', 'joint', 'dynamic_rcnn', 'dynamic_head', 'dyra'):
        assert components, f'space {name} switched on no component'


def test_the_old_dbf_ranges_were_mostly_plain_fine_tuning():
    """The rule above can fail: the ranges dbf.yaml had before (period 0.1-0.5 without min_rho, budgets
    3-6) froze nothing in about two thirds of the draws."""
    from dyncomponents.dbf.schedules import BudgetStepFreezeSchedule

    rng = random.Random(0)
    off = 0
    for _ in range(DRAWS):
        epochs = rng.randint(3, 6)
        schedule = BudgetStepFreezeSchedule(period=rng.uniform(0.1, 0.5), phase=rng.uniform(0, 0.95),
                                            duty=rng.uniform(0, 0.75), warmup=rng.uniform(0, 0.3))
        off += all(t == 1.0 for t in schedule.trained_epochs(epochs, ITERS_PER_EPOCH))
    assert off / DRAWS > 0.5
