"""dyncomponents.protocol: the components' declared metrics, and the search reading them without naming any."""
import re
from pathlib import Path

import pytest

from dyncomponents import protocol
from dyncomponents.protocol import (ComponentMetrics, MetricSpec, Plot, ProtocolError, collect_epoch_metrics,
                                    declarations_in, declare, declared_components, declared_metrics, settled_epoch)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry(monkeypatch):
    """A copy of the declarations, so a test's own components do not outlive it."""
    monkeypatch.setattr(protocol, '_DECLARED', list(declared_components()))


def test_every_component_declares_its_metrics_with_unit_and_meaning():
    components = declared_components()
    assert len(components) >= 4
    names = [m.name for m in declared_metrics()]
    assert len(names) == len(set(names))
    for declaration in components:
        assert declaration.metrics and all(m.unit and m.meaning for m in declaration.metrics)
        assert ComponentMetrics.from_dict(declaration.to_dict()) == declaration  # what a trial stores reads back


def test_a_metric_name_is_owned_by_one_component(registry):
    taken = declared_metrics()[0].name
    with pytest.raises(ProtocolError, match=f'{taken} \\(also '):
        declare('Another component', [MetricSpec(taken, 's', 'clash')])
    declare('Another component', [MetricSpec('another_seconds', 's', 'fine')])
    declare('Another component', [MetricSpec('another_seconds', 's', 'a reloaded module re-declares')])
    assert [d.component for d in protocol._DECLARED].count('Another component') == 1


@pytest.mark.parametrize('plot, match', [
    (dict(metrics=('x_a',), style='pie'), 'style'),
    (dict(metrics=()), 'draws metrics'),
    (dict(metrics=('x_a', 'x_b'), style='band', band=('x_a', 'x_b')), 'one metric'),
    (dict(metrics=('x_a',), reference='x_b'), 'band plots'),
    (dict(metrics=('x_a',), style='band', band=('x_b',)), 'lower, upper'),
])
def test_a_plot_must_be_drawable(plot, match):
    with pytest.raises(ProtocolError, match=match):
        Plot(**plot)


def test_a_plot_must_draw_declared_metrics():
    metrics = (MetricSpec('x_a', '', 'a'), MetricSpec('x_b', '', 'b'))
    ComponentMetrics('X', metrics, [Plot(['x_a'], style='band', band=['x_a', 'x_b'])])  # lists, as JSON gives
    with pytest.raises(ProtocolError, match=r"undeclared metrics \['x_c'\]"):
        ComponentMetrics('X', metrics, (Plot(('x_a',), style='band', spread='x_c'),))


class _Reporter:
    METRICS = ComponentMetrics('Reporter', (MetricSpec('rep_value', 'count', 'a value'),))

    def __init__(self, values):
        self.values = values

    def epoch_metrics(self):
        return self.values

    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        return max_epochs // 2


class _Undeclared:
    """Reports without declaring: not a component under the protocol, so never polled."""

    def epoch_metrics(self):
        raise AssertionError('polled')


class _Schedule:
    def last_phase_change_epoch(self, max_epochs, iters_per_epoch):
        return 3


def test_collect_polls_declared_components_and_rejects_undeclared_keys():
    sources = [_Undeclared(), _Reporter({'rep_value': 2}), object(), _Reporter({})]
    metrics = collect_epoch_metrics(sources)
    assert metrics == {'rep_value': 2.0} and isinstance(metrics['rep_value'], float)
    assert declarations_in(sources) == [_Reporter.METRICS]
    with pytest.raises(ProtocolError, match=r"_Reporter reported \['rep_typo'\]"):
        collect_epoch_metrics([_Reporter({'rep_value': 1, 'rep_typo': 1})])


def test_settled_epoch_is_the_latest_phase_change_of_any_source():
    assert settled_epoch([_Reporter({}), _Schedule(), object()], max_epochs=10, iters_per_epoch=5) == 5
    assert settled_epoch([_Schedule()], max_epochs=10, iters_per_epoch=5) == 3
    assert settled_epoch([object()], max_epochs=10, iters_per_epoch=5) == 0


def test_the_search_names_no_component_metric():
    # A new component must need no edit in search/: its metrics reach trials.csv and the report
    # through its declaration only.
    sources = {p: p.read_text() for p in (REPO / 'search').rglob('*.py')}
    for metric in declared_metrics():
        used = [str(p.relative_to(REPO)) for p, text in sources.items() if re.search(rf'\b{metric.name}\b', text)]
        assert not used, f'{metric.name} is named in {used}'


def test_metric_names_cover_coco_the_search_and_every_component():
    from search.metrics import COCO_METRICS, COST_METRICS, metric_names

    names = metric_names()
    assert len(names) == len(set(names))
    assert {*COCO_METRICS, *COST_METRICS, 'epoch', 'schedule_settled_epoch'} <= set(names)
    assert {m.name for m in declared_metrics()} <= set(names)
