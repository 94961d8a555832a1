"""A search across a real two-node Ray cluster on one machine (ray.cluster_utils.Cluster)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]

# Runs in its own process: the test session already has a Ray runtime of its own.
CLUSTER_SCRIPT = r'''
import json, subprocess, sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args=dict(num_cpus=1, gcs_server_port=int(sys.argv[1]), include_dashboard=False,
                                      node_ip_address="127.0.0.1"))
cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
cluster.wait_for_nodes()
try:
    result = subprocess.run([sys.executable, sys.argv[2], "space=baseline", "smoke=true", "scheduler=fifo", "reference=false",
                             f"ray.address={cluster.address}", f"experiment.dir={sys.argv[3]}",
                             "experiment.name=c", "ray.verbose=0"], capture_output=True, text=True, timeout=600)
    print(json.dumps(dict(rc=result.returncode, err=result.stderr[-3000:])))
finally:
    cluster.shutdown()
'''


@pytest.mark.slow
def test_search_runs_trials_on_both_nodes(tmp_path):
    script = tmp_path / 'cluster.py'
    script.write_text(CLUSTER_SCRIPT)
    # The cluster listens on loopback only; without this Ray rewrites a 127.0.0.1 address to the
    # machine's own IP before connecting (ray._private.services.resolve_ip_for_localhost).
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER='0')
    done = subprocess.run([sys.executable, str(script), str(free_port()), str(REPO / 'search' / 'run.py'),
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['rc'] == 0, report['err']
    folder = tmp_path / 'c'
    rows = [json.loads(line) for p in folder.glob('trial_*/result.json') for line in p.read_text().splitlines()]
    assert len({r['node_id'] for r in rows}) == 2  # one trial on the head, one on the second node
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['num_trials'] == 2 and summary['num_failed'] == 0
    assert (folder / 'trials.csv').is_file() and (folder / 'best' / 'best.pth').is_file()
