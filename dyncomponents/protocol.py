"""The contract between the components and whoever trains them: what each reports, how to plot it, when it settles.

Standard library only, so the declarations are plain data that a trainer, a report or a test can read.

**Metrics.** A component (a hook or an ``nn.Module`` of the model) that reports metrics has a class
attribute ``METRICS``, a :class:`ComponentMetrics` made with :func:`declare`, and a method
``epoch_metrics() -> dict[str, float]``:

- every key it returns is one of its declared :class:`MetricSpec` names (a :class:`ProtocolError`
  otherwise), and names are unique across components (by convention, prefixed by the component);
- it is polled once per epoch, after the evaluation that follows the epoch's training;
- **reading never clears**: ``epoch_metrics()`` changes nothing, so two calls return the same values.
  Values describe the component's latest epoch. A component that accumulates statistics over
  forward passes starts a new window when its module is put into training mode (``module.train()``,
  which mmcv's runner calls at the start of every training epoch): a window holds one epoch's
  training forwards and the evaluation forwards after them. A hook starts its window in
  ``before_train_epoch``. A value that is the component's current state (a threshold, a cumulative
  fraction) is simply that state.

**Plots.** ``ComponentMetrics.plots`` say how a report best draws the metrics against the epoch
(:class:`Plot`); a declared metric that no plot names is drawn as a plain line per epoch.

**Settling.** A component, schedule or LR hook whose behaviour changes in phases has
``last_phase_change_epoch(max_epochs, iters_per_epoch) -> int``: the number of completed epochs
after which it has gone through each of its distinct phases once (0 when it has none). A search
should not judge a trial before that epoch (DynTune's schedule-aware early stopping).

:func:`declarations_in`, :func:`collect_epoch_metrics` and :func:`settled_epoch` apply this contract
to a runner's hooks and modules; :func:`declared_components` lists every declaration of the installed
components. A declaration as plain data (:meth:`ComponentMetrics.to_dict`, JSON) is what a trainer
stores for readers that should not import the components (DynTune's ``component_metrics.json``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

PLOT_STYLES = ('lines', 'steps', 'band', 'timeline')


class ProtocolError(ValueError):
    """A component breaks the contract: an undeclared or duplicate metric, a plot of an unknown metric."""


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric.

    Args:
        name (str): the flat key in ``epoch_metrics()``, e.g. ``'dbf_trained'``.
        unit (str): what one unit is, e.g. ``'s'``, ``'MiB'``, ``'GFLOPs'``, ``'fraction'``, ``'count'``.
        meaning (str): one sentence: what the value measures, and over which window.
    """

    name: str
    unit: str
    meaning: str


@dataclass(frozen=True)
class Plot:
    """How to draw some of a component's metrics against the epoch, one line per trial.

    Args:
        metrics (tuple[str, ...]): with ``style='lines'`` or ``'steps'``, one panel per metric; with
            ``'band'``, the one metric drawn as the centre line; with ``'timeline'``, the one metric,
            in [0, 1], drawn as a trials x epochs heat map.
        style (str): ``'lines'`` (markers joined by lines: a value measured each epoch), ``'steps'``
            (held until the next epoch: a value that changes only at discrete updates), ``'band'``
            or ``'timeline'``. Default: ``'lines'``.
        title (str): the figure's title. Default: the metrics' names.
        ylabel (str): the y axis label. Default: the first metric's name and unit.
        band (tuple[str, str]): ``'band'`` only: the metrics of the band's lower and upper edge.
        spread (str): ``'band'`` only: a metric drawn as a band of +-1 of it around the centre (a std).
        reference (str): ``'band'`` only: a metric drawn dotted in the trial's colour, for comparison.
        caption (str): a sentence under the figure saying how to read it.
    """

    metrics: tuple[str, ...]
    style: str = 'lines'
    title: str = ''
    ylabel: str = ''
    band: tuple[str, ...] = ()
    spread: str = ''
    reference: str = ''
    caption: str = ''

    def __post_init__(self):
        # lists from a config or from JSON: tuples keep the declaration hashable
        object.__setattr__(self, 'metrics', tuple(self.metrics))
        object.__setattr__(self, 'band', tuple(self.band))
        if self.style not in PLOT_STYLES:
            raise ProtocolError(f'plot style must be one of {PLOT_STYLES}, got {self.style!r}')
        if not self.metrics or (self.style in ('band', 'timeline') and len(self.metrics) != 1):
            raise ProtocolError(f'a {self.style} plot draws {"one metric" if self.style in ("band", "timeline") else "metrics"}, '
                                f'got {self.metrics}')
        if (self.band or self.spread or self.reference) and self.style != 'band':
            raise ProtocolError('band, spread and reference belong to band plots')
        if self.band and (len(self.band) != 2 or self.spread):
            raise ProtocolError(f'a band is (lower, upper) or a spread, not both: got band={self.band}, spread={self.spread!r}')

    def names(self) -> tuple[str, ...]:
        """Every metric this plot draws."""
        return tuple(self.metrics) + tuple(self.band) + tuple(n for n in (self.spread, self.reference) if n)


@dataclass(frozen=True)
class ComponentMetrics:
    """What one component reports (``metrics``) and how to draw it (``plots``); see the module docstring.

    Args:
        component (str): the component's name for people, e.g. ``'Dynamic Backbone Freezing'``.
        metrics (tuple[MetricSpec, ...]): every key its ``epoch_metrics()`` may return.
        plots (tuple[Plot, ...]): figures of some of those metrics, in the order to show them.
    """

    component: str
    metrics: tuple[MetricSpec, ...]
    plots: tuple[Plot, ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, 'metrics', tuple(self.metrics))
        object.__setattr__(self, 'plots', tuple(self.plots))
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ProtocolError(f'{self.component}: a metric is declared twice in {names}')
        for plot in self.plots:
            unknown = [n for n in plot.names() if n not in names]
            if unknown:
                raise ProtocolError(f'{self.component}: a plot draws undeclared metrics {unknown}')

    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def to_dict(self) -> dict:
        """Plain JSON-able data; :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ComponentMetrics:
        return cls(component=data['component'], metrics=tuple(MetricSpec(**m) for m in data['metrics']),
                   plots=tuple(Plot(**p) for p in data.get('plots', ())))


_DECLARED: list[ComponentMetrics] = []


def declare(component: str, metrics, plots=()) -> ComponentMetrics:
    """Declare a component's metrics and plots (for its ``METRICS`` class attribute) and register them.

    Raises:
        ProtocolError: a metric name another component already declared, or an invalid plot.
    """
    declaration = ComponentMetrics(component, metrics, plots)
    others = [d for d in _DECLARED if d.component != component]  # a reloaded module re-declares its own
    taken = {name: d.component for d in others for name in d.names()}
    clashes = [f'{n} (also {taken[n]})' for n in declaration.names() if n in taken]
    if clashes:
        raise ProtocolError(f'{component}: metric names must be unique across components: {", ".join(clashes)}')
    mine = [i for i, d in enumerate(_DECLARED) if d.component == component]
    if mine:
        _DECLARED[mine[0]] = declaration
    else:
        _DECLARED.append(declaration)
    return declaration


def declared_components() -> tuple[ComponentMetrics, ...]:
    """The declarations of every component of the installed ``dyncomponents`` (imports it to register them)."""
    import dyncomponents  # noqa: F401  (importing the package declares every component)

    return tuple(_DECLARED)


def declared_metrics() -> tuple[MetricSpec, ...]:
    """Every metric any installed component may report."""
    return tuple(m for d in declared_components() for m in d.metrics)


def declaration_of(source) -> ComponentMetrics | None:
    """``source``'s ``METRICS`` declaration, or None when it reports nothing under this protocol."""
    declaration = getattr(type(source), 'METRICS', None)
    return declaration if isinstance(declaration, ComponentMetrics) else None


def declarations_in(sources) -> list[ComponentMetrics]:
    """The declarations of the components among ``sources`` (hooks and modules), each once, in order."""
    return list(dict.fromkeys(d for d in map(declaration_of, sources) if d is not None))


def collect_epoch_metrics(sources) -> dict[str, float]:
    """Poll ``epoch_metrics()`` of every declared component among ``sources`` (hooks and modules).

    Returns:
        dict[str, float]: every metric they report, as floats.

    Raises:
        ProtocolError: a component returned a key it did not declare.
    """
    metrics = {}
    for source in sources:
        declaration = declaration_of(source)
        if declaration is None:
            continue
        values = source.epoch_metrics()
        undeclared = sorted(set(values) - set(declaration.names()))
        if undeclared:
            raise ProtocolError(f'{type(source).__name__} reported {undeclared}, which its METRICS do not declare')
        metrics.update({k: float(v) for k, v in values.items()})
    return metrics


def settled_epoch(sources, max_epochs: int, iters_per_epoch: int) -> int:
    """The latest ``last_phase_change_epoch`` among ``sources`` (0 when none has phases)."""
    return max((int(s.last_phase_change_epoch(max_epochs, iters_per_epoch)) for s in sources
                if callable(getattr(s, 'last_phase_change_epoch', None))), default=0)
