"""Config paths, merging and LR steps of the trial config builder."""
import pytest

from search.errors import UsageError
from search.mmdet_config import build_trial_config, get_path, merge, set_path


def _config():
    return dict(optimizer=dict(lr=0.01), runner=dict(max_epochs=4),
                custom_hooks=[dict(type='A', x=1), dict(type='B', schedule=dict(rho=2))],
                lr_config=dict(policy='step', step=[3]))


def test_paths_with_selectors():
    cfg = _config()
    set_path(cfg, 'custom_hooks[type=B].schedule.rho', 5)
    set_path(cfg, 'custom_hooks[0].x', 7)
    assert get_path(cfg, 'custom_hooks[type=B].schedule.rho') == 5
    assert cfg['custom_hooks'][0]['x'] == 7


@pytest.mark.parametrize('path, message', [
    ('optimizer.lrr', "'lrr' not found in optimizer"),
    ('custom_hooks[type=C].x', "0 elements of 'custom_hooks' have type 'C'"),
    ('custom_hooks[5].x', 'has 2 elements'),
    ('optimizer[0]', 'is not a list'),
    ('optimizer..lr', 'bad segment'),
])
def test_missing_paths_are_errors(path, message):
    with pytest.raises(UsageError) as err:
        set_path(_config(), path, 1)
    assert message in str(err.value)


def test_merge_dicts_key_by_key_lists_replace_and_delete():
    base = dict(model=dict(type='A', head=dict(x=1, y=2)), hooks=[1, 2])
    out = merge(base, dict(model=dict(head=dict(y=3)), hooks=[9]))
    assert out == dict(model=dict(type='A', head=dict(x=1, y=3)), hooks=[9])
    out = merge(base, dict(model=dict(head=dict(_delete_=True, z=0))))
    assert out['model']['head'] == dict(z=0)
    assert base['model']['head'] == dict(x=1, y=2)  # the base is not modified


def test_trial_config_holds_the_sampled_values_and_leaves_the_base_alone():
    base = _config()
    cfg = build_trial_config(base, {'runner.max_epochs': 8, 'custom_hooks[type=B].schedule.rho': 3})
    assert cfg.runner.max_epochs == 8 and cfg.custom_hooks[1].schedule.rho == 3
    assert base['runner']['max_epochs'] == 4
