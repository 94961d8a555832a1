"""Before the trials of a search on a joined cluster start, every node checks that it reads the search's inputs.

A trial runs on whichever node has room, and it reads the dataset, ``load_from`` and the base config
on that node's own disk. A node without them would fail every trial it gets, after the search began.
:func:`check_nodes` runs one Ray task on each alive node (pinned there with
``NodeAffinitySchedulingStrategy``) that tries to read every input; the first node that cannot is one
line naming the node and the path (exit 2, search/run.py). How the data reaches every node:
docs/cluster.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from search.errors import UsageError
from search.storage import is_uri

NODE_CHECK_TIMEOUT_S = 120  # a node that runs no task in this time is reported, not waited for


def input_paths(raw: dict, trial_config: dict) -> dict[str, str]:
    """What every trial reads, by the option that names it (in the order they are checked).

    ``data.root`` (where the data config has one), each split's ``ann_file`` and ``img_prefix`` of the
    trials' mmdet config, ``load_from``, and the ``base`` config file (not for an ``mmdet::`` zoo name).
    """
    paths = {}
    root = (raw.get('data') or {}).get('root')
    if root:
        paths['data.root'] = str(root)
    for split, dataset in sorted((trial_config.get('data') or {}).items()):
        if not isinstance(dataset, dict):
            continue
        for key in ('ann_file', 'img_prefix'):
            if dataset.get(key):
                paths.setdefault(f'data.{split}.{key}', str(dataset[key]))
    if trial_config.get('load_from') and not is_uri(trial_config['load_from']):
        paths['load_from'] = str(trial_config['load_from'])
    base = str(raw.get('base') or '')
    if base and not base.startswith('mmdet::') and Path(base).suffix == '.py':
        paths['base'] = str(Path(base).expanduser().resolve())
    return {name: path for name, path in paths.items() if path and path != '.'}


def first_unreadable(paths: dict[str, str]) -> tuple[str, str] | None:
    """(option, path) of the first input this machine cannot read, or None. A folder must be listable."""
    for name, path in paths.items():
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, 'rb') as handle:
                    handle.read(1)
        except OSError:
            return name, path
    return None


def check_nodes(paths: dict[str, str]) -> None:
    """Run :func:`first_unreadable` once on every alive node of the connected Ray cluster.

    Raises:
        UsageError: a node cannot read an input (or ran no check in ``NODE_CHECK_TIMEOUT_S``); the
            message names the node (address and id) and the path.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not paths:
        return
    task = ray.remote(num_cpus=0, max_retries=0)(first_unreadable)  # num_cpus=0: runs beside busy trials
    nodes = sorted((n for n in ray.nodes() if n.get('Alive')), key=lambda n: n['NodeID'])
    pending = [(node, task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node['NodeID'], soft=False))
                .remote(paths)) for node in nodes]
    for node, ref in pending:
        where = f"node {node.get('NodeManagerAddress', '?')} (id {node['NodeID'][:12]})"
        try:
            missing = ray.get(ref, timeout=NODE_CHECK_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise UsageError(f'{where} ran no input check in {NODE_CHECK_TIMEOUT_S} s: is it alive and '
                             'does it have this Python environment?') from None
        if missing is not None:
            name, path = missing
            raise UsageError(f'{name} {path} is not readable on {where}: every node needs the same data and '
                             'files at the same paths (docs/cluster.md)')
