"""A node of the cluster without the dataset stops the search before any trial: exit 2, one line naming the node.

The second node runs in its own mount namespace (``unshare``) in which the dataset's folder is hidden
under an empty tmpfs: the same machine, but that node really cannot read ``data.root``.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, loopback_cluster_env

REPO = Path(__file__).resolve().parents[1]

# The second node, started inside the mount namespace (as Cluster.add_node starts one). argv: GCS address.
NODE_SCRIPT = r'''
import signal, sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams

params = RayParams(num_cpus=1, num_gpus=0, object_store_memory=150 * 1024 * 1024, min_worker_port=0,
                   max_worker_port=0, node_ip_address="127.0.0.1", gcs_address=sys.argv[1],
                   include_log_monitor=False, node_manager_port=0)
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)


def stop(signum, frame):
    node.kill_all_processes(check_alive=False, allow_graceful=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
print(node.unique_id, flush=True)
while True:
    time.sleep(1)
'''

# argv: port, run.py, the folder to hide on the second node, the node script, the search's overrides as JSON.
CLUSTER_SCRIPT = r'''
import json, os, signal, subprocess, sys, time
import ray
from ray.cluster_utils import Cluster

port, run_py, hidden, node_py, overrides = sys.argv[1:6]
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args=dict(num_cpus=1, gcs_server_port=int(port), include_dashboard=False,
                                      node_ip_address="127.0.0.1"))
worker = None
try:
    worker = subprocess.Popen(["unshare", "-rm", "sh", "-c",
                               f"mount -t tmpfs none {hidden} && exec {sys.executable} {node_py} {cluster.gcs_address}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        deadline = time.time() + 120
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if worker.poll() is not None or time.time() > deadline:
                raise SystemExit("the second node did not join: " + (worker.stdout.read() if worker.poll() is not None else ""))
            time.sleep(0.5)
    finally:
        ray.shutdown()
    driver = subprocess.run([sys.executable, run_py, *json.loads(overrides), f"ray.address={cluster.address}"],
                            capture_output=True, text=True, timeout=600)
    print(json.dumps(dict(rc=driver.returncode, err=driver.stderr, head=cluster.head_node.unique_id)))
finally:
    if worker is not None and worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # the node script stops its node's processes
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
    cluster.shutdown()
'''


def _can_unshare(folder: Path) -> bool:
    if not shutil.which('unshare'):
        return False
    probe = subprocess.run(['unshare', '-rm', 'sh', '-c', f'mount -t tmpfs none {folder}'], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_a_node_without_data_root_is_exit_2_and_one_line_naming_it(tmp_path):
    from search.data.embedded import ensure_embedded_dataset

    hidden = tmp_path / 'hidden'
    hidden.mkdir()
    if not _can_unshare(hidden):
        pytest.skip('no unprivileged mount namespaces here (unshare -rm)')
    data = hidden / 'data'
    shutil.copytree(ensure_embedded_dataset(tmp_path / 'gen', num_train=4, num_val=2, min_size=64, max_size=96), data)
    script, node_script = tmp_path / 'cluster.py', tmp_path / 'node.py'
    script.write_text(CLUSTER_SCRIPT)
    node_script.write_text(NODE_SCRIPT)
    overrides = ['space=baseline', 'smoke=true', 'scheduler=fifo', 'reference=false', 'dashboard=false',
                 'data=coco', f'data.root={data}', f'experiment.dir={tmp_path}', 'experiment.name=x']
    env = loopback_cluster_env()
    done = subprocess.run([sys.executable, str(script), str(free_port()), str(REPO / 'search' / 'run.py'), str(hidden),
                           str(node_script), json.dumps(overrides)], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert done.stdout.strip(), done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['rc'] == 2, report
    lines = report['err'].splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f'dyntune: error: data.root {data} is not readable on node 127.0.0.1 (id '), lines[0]
    node = lines[0].split('(id ')[1].split(')')[0]
    assert not report['head'].startswith(node)  # the second node, not the head (which has the data)
    assert not (tmp_path / 'x').exists()  # stopped before the experiment folder was made
