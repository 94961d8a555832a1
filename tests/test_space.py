"""Space files and distributions: parsing, range checks, conversion to Ray Tune."""
import pytest

from search.errors import UsageError
from search.space import Distribution, available_spaces, load_space, parse_distribution, to_tune


@pytest.mark.parametrize('spec, expected', [
    ({'choice': [1, 2, 3]}, Distribution('choice', (1, 2, 3))),
    ({'choice': [[0, 2], [0, 5]]}, Distribution('choice', ((0, 2), (0, 5)))),
    ({'uniform': [0.1, 0.5]}, Distribution('uniform', (0.1, 0.5))),
    ({'loguniform': [1e-3, 1e-1]}, Distribution('loguniform', (1e-3, 1e-1))),
    ({'int': [2, 8]}, Distribution('int', (2, 8))),
])
def test_parse_valid(spec, expected):
    assert parse_distribution('k', spec) == expected


@pytest.mark.parametrize('spec, message', [
    ({'uniform': [0.5, 0.1]}, 'low < high'),
    ({'uniform': [0.5, 0.5]}, 'low < high'),
    ({'loguniform': [0, 1]}, 'low > 0'),
    ({'int': [1.5, 3]}, 'whole-number'),
    ({'normal': [0, 1]}, 'unknown distribution'),
    ({'choice': []}, 'non-empty'),
    ({'uniform': [0, 'a']}, '[low, high] numbers'),
    ({'uniform': [0, float('inf')]}, '[low, high] numbers'),
    ([1, 2], 'must be one of'),
    ({'uniform': [0, 1], 'int': [0, 1]}, 'must be one of'),
])
def test_parse_invalid_names_the_rule(spec, message):
    with pytest.raises(UsageError, match=None) as err:
        parse_distribution('optimizer.lr', spec)
    assert message in str(err.value) and 'optimizer.lr' in str(err.value)


def test_int_range_includes_both_ends():
    sampler = to_tune(Distribution('int', (2, 3)))
    values = {sampler.sample() for _ in range(200)}
    assert values == {2, 3}


def test_grid_needs_choices():
    assert to_tune(Distribution('choice', (1, 2)), grid=True) == {'grid_search': [1, 2]}
    with pytest.raises(UsageError, match='grid'):
        to_tune(Distribution('uniform', (0.0, 1.0)), grid=True)


def test_choice_of_lists_is_sampled_as_json_and_decodes_back_to_lists():
    # Optuna's categorical distributions hold only scalars: search algorithms see the lists' JSON text.
    dist = Distribution('choice', ((0, 2), (0, 5)))
    sample = to_tune(dist).sample()
    assert sample in ('[0, 2]', '[0, 5]') and dist.decode(sample) in ([0, 2], [0, 5])
    assert Distribution('choice', (1, 2)).decode(2) == 2


@pytest.mark.parametrize('spec, base, expected', [
    ({'loguniform_factor': [0.3, 3]}, 0.004, Distribution('loguniform', (0.0012, 0.012))),
    ({'uniform_factor': [0.5, 2]}, 10, Distribution('uniform', (5.0, 20.0))),
    ({'int_factor': [0.75, 1.5]}, 4, Distribution('int', (3, 6))),
    ({'int_factor': [0.9, 1.1]}, 4, Distribution('choice', (4,))),  # rounds to one budget
    ({'choice_factor': [0.5, 2]}, 0.01, Distribution('choice', (0.005, 0.02))),
])
def test_factor_distributions_scale_by_the_base_value(spec, base, expected):
    dist = parse_distribution('k', spec)
    assert dist.factor and dist.scaled(base) == expected
    with pytest.raises(ValueError, match='scaled'):
        to_tune(dist)


@pytest.mark.parametrize('spec, message', [
    ({'loguniform_factor': [0, 3]}, 'needs low > 0'),
    ({'uniform_factor': [-1, 3]}, 'needs low > 0'),
    ({'choice_factor': [0.5, 'x']}, 'needs factors > 0'),
    ({'normal_factor': [1, 2]}, "unknown distribution 'normal_factor'"),
])
def test_bad_factor_distributions(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_distribution('optimizer.lr', spec)


def test_a_space_extends_another_and_changes_only_what_differs(tmp_path):
    (tmp_path / 'parent.yaml').write_text(
        'description: parent\nrequires: {model.backbone.type: "*"}\n'
        'mmdet: {optimizer: {lr: 0.1}, runner: {max_epochs: 3}}\n'
        'params:\n  optimizer.lr: {loguniform_factor: [0.5, 2]}\n  runner.max_epochs: {int: [2, 4]}\n')
    (tmp_path / 'child.yaml').write_text(
        'extends: parent.yaml\nmmdet: {runner: {max_epochs: 5}}\n'
        'params:\n  optimizer.lr: {loguniform: [0.01, 0.1]}\n  runner.max_epochs: null\n')
    space = load_space(str(tmp_path / 'child.yaml'))
    assert space.name == 'child' and space.description == 'parent'
    assert space.params == {'optimizer.lr': Distribution('loguniform', (0.01, 0.1))}
    assert space.mmdet == {'optimizer': {'lr': 0.1}, 'runner': {'max_epochs': 5}}
    assert space.requires == {'model.backbone.type': '*'}


def test_a_space_cannot_extend_itself(tmp_path):
    (tmp_path / 'a.yaml').write_text('extends: b.yaml\n')
    (tmp_path / 'b.yaml').write_text('extends: a.yaml\n')
    with pytest.raises(UsageError, match='extends itself'):
        load_space(str(tmp_path / 'a.yaml'))


def test_the_bench_space_is_dbf_with_a_longer_budget():
    from pathlib import Path

    bench = load_space(str(Path(__file__).resolve().parents[1] / 'bench' / 'spaces' / 'dbf_long.yaml'))
    dbf = load_space('dbf')
    assert bench.params['runner.max_epochs'] == Distribution('int', (8, 12))
    assert bench.params['optimizer.lr'] == Distribution('loguniform', (0.003, 0.03))
    assert {k: v for k, v in bench.params.items() if 'schedule' in k} == {k: v for k, v in dbf.params.items() if 'schedule' in k}
    assert bench.mmdet == dbf.mmdet and bench.requires == dbf.requires


@pytest.mark.parametrize('requires, message', [
    ('{model.type: RetinaNet}', "requires 'model.type' must be"),
    ('{model.type: [1, 2]}', "requires 'model.type' must be"),
    ('[model.type]', "'requires' must map config paths"),
])
def test_bad_requires(tmp_path, requires, message):
    (tmp_path / 's.yaml').write_text(f'description: x\nrequires: {requires}\n')
    with pytest.raises(UsageError, match=message):
        load_space(str(tmp_path / 's.yaml'))


def test_unknown_space_lists_the_available_ones():
    with pytest.raises(UsageError) as err:
        load_space('no_such_space')
    for name in available_spaces():
        assert name in str(err.value)


@pytest.mark.parametrize('name', available_spaces())
def test_every_space_file_loads(name):
    space = load_space(name)
    assert space.description, f'spaces/{name}.yaml needs a description'
    assert space.params, f'spaces/{name}.yaml samples nothing'


def test_a_space_file_outside_the_repo_loads_by_path(tmp_path, monkeypatch):
    (tmp_path / 'mine.yaml').write_text('description: my own\nparams:\n  optimizer.lr: {choice: [0.01, 0.02]}\n')
    monkeypatch.chdir(tmp_path)
    space = load_space('mine.yaml')
    assert space.name == 'mine' and space.params == {'optimizer.lr': Distribution('choice', (0.01, 0.02))}


def test_a_missing_space_file_is_one_usage_error(tmp_path):
    with pytest.raises(UsageError, match='does not exist'):
        load_space(str(tmp_path / 'nothing.yml'))


def test_loading_every_space_imports_no_ray():
    # The module docstring's contract: only to_tune needs Ray, so spaces are checked before Ray starts.
    import subprocess
    import sys

    from conftest import REPO

    code = ('import sys; from search.space import available_spaces, load_space; '
            '[load_space(name) for name in available_spaces()]; print("ray" in sys.modules)')
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == 'False'
