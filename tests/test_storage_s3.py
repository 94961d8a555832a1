"""A search on a two-node Ray cluster whose only shared place is an S3 bucket (moto's standalone server).

Each node gets its own temporary folder, so a trial on the second node writes on that node's disk
only; everything the driver, export.py, report.py and resume read must come through the bucket. The
search is interrupted after its first checkpoint, the cluster and every local folder of the run are
removed, a new cluster (the head node replaced) resumes it from the bucket alone, and after removing
the local folders again export.py and report.py rebuild the results from the bucket alone.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, loopback_cluster_env

REPO = Path(__file__).resolve().parents[1]
BUCKET = 'dyntune-test'

# Runs in its own process: the test session may have a Ray runtime of its own. argv: port, run.py, head temp
# folder, worker temp folder, mode (interrupt | finish), the search's overrides as JSON.
CLUSTER_SCRIPT = r'''
import json, signal, subprocess, sys, time
import boto3
from ray.cluster_utils import Cluster

port, run_py, head_tmp, worker_tmp, mode, overrides = sys.argv[1:7]
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args=dict(num_cpus=1, gcs_server_port=int(port), include_dashboard=False,
                                      node_ip_address="127.0.0.1", temp_dir=head_tmp))
try:
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", temp_dir=worker_tmp)
    cluster.wait_for_nodes()
    args = [sys.executable, run_py, *json.loads(overrides), f"ray.address={cluster.address}"]
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if mode == "interrupt":  # once a trial checkpointed an epoch into the bucket
        s3 = boto3.client("s3")
        deadline = time.time() + 600
        while driver.poll() is None and time.time() < deadline:
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="%s").get("Contents", [])]
            if any(k.endswith("/checkpoint.pth") for k in keys):
                driver.send_signal(signal.SIGINT)
                break
            time.sleep(0.5)
    out, err = driver.communicate(timeout=900)
    print(json.dumps(dict(rc=driver.returncode, out=out[-3000:], err=err[-3000:], head=cluster.head_node.node_id,
                          workers=[node.node_id for node in cluster.worker_nodes])))
finally:
    cluster.shutdown()
''' % BUCKET


@pytest.fixture
def s3_server(tmp_path):
    """moto's standalone S3 server on loopback, a bucket in it, and the environment that reaches it."""
    pytest.importorskip('moto')
    port = free_port()
    server = subprocess.Popen([sys.executable, '-m', 'moto.server', '-H', '127.0.0.1', '-p', str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = loopback_cluster_env(AWS_ACCESS_KEY_ID='testing', AWS_SECRET_ACCESS_KEY='testing', AWS_DEFAULT_REGION='us-east-1',
                               AWS_ENDPOINT_URL=f'http://127.0.0.1:{port}', DYNTUNE_CACHE=str(tmp_path / 'cache'))
    try:
        import boto3

        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=1):
                    break
            except OSError:
                assert time.time() < deadline, 'moto server did not start'
                time.sleep(0.2)
        client = boto3.client('s3', endpoint_url=env['AWS_ENDPOINT_URL'], aws_access_key_id='testing',
                              aws_secret_access_key='testing', region_name='us-east-1')
        client.create_bucket(Bucket=BUCKET)
        yield client, env
    finally:
        server.terminate()
        server.wait(timeout=30)


def _node_folders(attempt: int) -> list[Path]:
    """The two nodes' own temporary folders of one cluster. Short names: Ray's socket paths must stay under
    the 107 characters of AF_UNIX."""
    return [Path(f'/tmp/dt{attempt}{role}{os.getpid()}') for role in ('h', 'w')]


def _cluster_run(tmp_path, env, mode, overrides, attempt):
    """Run the search on a fresh two-node cluster (own temp folders); return (report, the local folders it used)."""
    script = tmp_path / 'cluster.py'
    script.write_text(CLUSTER_SCRIPT)
    head, worker = _node_folders(attempt)
    done = subprocess.run([sys.executable, str(script), str(free_port()), str(REPO / 'search' / 'run.py'),
                           str(head), str(worker), mode, json.dumps(overrides)],
                          cwd=REPO, capture_output=True, text=True, timeout=1500, env=env)
    assert done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), [head, worker, Path(env['DYNTUNE_CACHE'])]


def _remove(folders):
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        assert not folder.exists()


def _objects(client, prefix):
    return {o['Key'][len(prefix):]: o for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get('Contents', [])}


def _text(client, key):
    return client.get_object(Bucket=BUCKET, Key=key)['Body'].read().decode()


@pytest.mark.slow
def test_a_search_in_s3_on_two_nodes_resumes_and_exports_from_the_bucket_alone(tmp_path, s3_server):
    client, env = s3_server
    try:
        _search_resume_export(client, env, tmp_path)
    finally:
        _remove(_node_folders(1) + _node_folders(2))  # also when it failed: no Ray folders left behind


def _search_resume_export(client, env, tmp_path):
    uri, prefix = f's3://{BUCKET}/runs', 'runs/s/'
    overrides = ['space=baseline', 'smoke=true', 'scheduler=fifo', 'reference=false', 'dashboard=false', 'ray.verbose=0',
                 f'experiment.dir={uri}', 'experiment.name=s']
    report, local = _cluster_run(tmp_path, env, 'interrupt', overrides, 1)
    workers = set(report['workers'])
    assert report['rc'] == 130, report
    last = report['err'].strip().splitlines()[-1]
    assert last.startswith('dyntune: interrupted by SIGINT: ') and last.endswith(
        f'resume with: python search/run.py experiment.dir={uri} experiment.name=s resume=true'), last
    partial = json.loads(_text(client, prefix + 'summary.json'))
    assert partial['partial'] is True and partial['partial_reason'] == 'interrupted by SIGINT'
    _remove(local)  # the head node is gone: nothing of the first run is left on any disk

    report, local = _cluster_run(tmp_path, env, 'finish', [f'experiment.dir={uri}', 'experiment.name=s', 'resume=true',
                                                           'ray.verbose=0'], 2)
    cached = sorted(Path(env['DYNTUNE_CACHE']).rglob('checkpoint.pth'))
    _remove(local)
    assert len(cached) == 1, cached  # the best trial's, for best/best.pth: the others' stay in the bucket
    workers |= set(report['workers'])
    assert report['rc'] == 0, report
    assert f'-> {uri}/s/best' in report['out']

    objects = _objects(client, prefix)
    trials = sorted({key.split('/')[0] for key in objects if key.startswith('trial_')})
    assert len(trials) == 2, sorted(objects)
    rows = [json.loads(line) for t in trials for line in _text(client, f'{prefix}{t}/result.json').splitlines()]
    assert {r['node_id'] for r in rows} & workers  # epochs trained on a worker node, whose disk is gone
    assert sorted(r['epoch'] for r in rows) == [1, 1, 2, 2]  # continued after the resume, not restarted
    for trial in trials:  # what each trial wrote on its own node's disk reached the bucket
        mine = [key for key in objects if key.startswith(trial + '/')]
        assert f'{trial}/trial_config.py' in mine and f'{trial}/component_metrics.json' in mine, mine
        assert any(k.endswith('.log.json') for k in mine) and any('events.out.tfevents' in k for k in mine), mine
        assert any(k.endswith('/checkpoint.pth') for k in mine), mine

    for name in ('trials.csv', 'summary.json', 'report.html', 'best/best.pth', 'best/best_config.py'):
        client.delete_object(Bucket=BUCKET, Key=prefix + name)
    for tool in ('export.py', 'report.py'):
        done = subprocess.run([sys.executable, str(REPO / 'search' / tool), f'{uri}/s'], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    objects = _objects(client, prefix)
    summary = json.loads(_text(client, prefix + 'summary.json'))
    assert summary['partial'] is False and summary['num_trials'] == 2 and summary['num_failed'] == 0
    assert summary['experiment'] == f'{uri}/s'
    assert len(_text(client, prefix + 'trials.csv').strip().splitlines()) == 3
    assert objects['best/best.pth']['Size'] > 100_000
    assert 'best/best_config.py' in objects and 'Learning curves' in _text(client, prefix + 'report.html')
    assert any(key.startswith('report/') and key.endswith('.png') for key in objects)
