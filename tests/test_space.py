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


def test_choice_of_lists_comes_back_as_lists():
    sampler = to_tune(Distribution('choice', ((0, 2), (0, 5))))
    assert sampler.sample() in ([0, 2], [0, 5])


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
