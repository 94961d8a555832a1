"""Live monitoring of a search: the Ray dashboard and live Ray metrics of the trials.

- :func:`dashboard_options` decides whether and where Ray starts its dashboard (loopback unless asked
  otherwise) and :func:`dashboard_banner` writes the lines ``run.py`` prints: the address, how to sign
  in with Ray's token, and a warning when the dashboard listens beyond this machine.
- :func:`publish_trial_metrics` sets ``ray.util.metrics`` gauges from inside a trial after each
  epoch (``ray_dyntune_trial_epoch``, ``ray_dyntune_trial_bbox_mAP``,
  ``ray_dyntune_trial_compute_seconds``, tagged ``trial_id``); monitoring never fails a trial.

Trial actors named after their trial: ``search.trainable.named_trainable``; TensorBoard logging:
``search.hooks.tensorboard_hook``. See docs/monitoring.md.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

LOOPBACK = '127.0.0.1'
# Gauge name (Ray prefixes "ray_") -> the key of the per-epoch metrics reported by TuneReportHook.
GAUGES = {'dyntune_trial_epoch': 'epoch', 'dyntune_trial_bbox_mAP': 'bbox_mAP',
          'dyntune_trial_compute_seconds': 'compute_seconds'}
_GAUGE_DOCS = {'dyntune_trial_epoch': 'Epochs this trial has completed',
               'dyntune_trial_bbox_mAP': 'COCO bbox mAP of the trial after its latest epoch',
               'dyntune_trial_compute_seconds': 'Training seconds this trial has spent (evaluation excluded)'}
_gauges: dict | None = None
_gauges_broken = False


def dashboard_options(enabled: bool, host: str) -> dict:
    """Return the dashboard keywords of ``ray.init``: on only when asked for and ray[default] is installed.

    Args:
        enabled (bool): the ``dashboard`` switch of the config.
        host (str): the address the dashboard listens on (``ray.dashboard_host``).
    """
    return dict(include_dashboard=bool(enabled) and dashboard_installed(), dashboard_host=str(host))


def dashboard_installed() -> bool:
    """Whether the dashboard's packages (``pip install "ray[default]"``) are importable."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401
    except ImportError:
        return False
    return True


def token_file() -> Path:
    """Where Ray reads its authentication token from (``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``)."""
    return Path(os.environ.get('RAY_AUTH_TOKEN_PATH') or Path.home() / '.ray' / 'auth_token')


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (reachable from this machine only)."""
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def dashboard_banner(url: str | None, host: str) -> list[str]:
    """The lines printed when the dashboard runs at ``url`` (``host:port``), bound to ``host``."""
    if not url:
        return []
    lines = [f'Ray dashboard: http://{url}',
             f'  sign in: paste the token from {token_file()} (or the output of `ray get-auth-token`) into the '
             f'"Authentication Token Required" prompt the page shows; API clients send "Authorization: Bearer <token>"']
    if not is_loopback(host):
        lines.append(f'WARNING: ray.dashboard_host={host} exposes the Ray dashboard and its job-submission API '
                     f'(port {url.rsplit(":", 1)[-1]}) beyond this machine; only the token protects them')
    return lines


def publish_trial_metrics(metrics: dict, trial_id: str) -> bool:
    """Set the DynTune gauges of trial ``trial_id`` from one epoch's ``metrics``; return whether it worked.

    Ray exports gauges through its metrics agent (Prometheus format on each node's metrics export port,
    and the dashboard's Metrics page when Prometheus/Grafana are set up). Without that agent (minimal
    Ray) or on any error, this logs one warning per process and returns False: never fails a trial.
    """
    global _gauges, _gauges_broken
    if _gauges_broken:
        return False
    try:
        if _gauges is None:
            from ray.util.metrics import Gauge

            _gauges = {name: Gauge(name, description=_GAUGE_DOCS[name], tag_keys=('trial_id',)) for name in GAUGES}
        for name, key in GAUGES.items():
            if key in metrics:
                _gauges[name].set(float(metrics[key]), tags={'trial_id': str(trial_id)})
    except Exception as err:  # monitoring is optional; the trial's training is not
        _gauges_broken = True
        logger.warning('DynTune: live Ray metrics are off for this trial (%s: %s)', type(err).__name__, err)
        return False
    return True
