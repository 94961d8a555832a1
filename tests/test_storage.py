"""Units of search/storage.py and search/nodes.py: experiment folders in a URI, their local copy, the node input check.

pyarrow's in-memory ``mock://`` filesystem stands for a bucket here (no server); tests/test_storage_s3.py
runs a whole search against a real S3-protocol server.
"""
import json
import os

import pytest

from search.endings import resume_command
from search.errors import UsageError
from search.nodes import first_unreadable, input_paths
from search.storage import ExperimentStore, is_stored_file, join_uri, parent_and_name, source_of


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    monkeypatch.setenv('DYNTUNE_CACHE', str(tmp_path / 'cache'))
    return ExperimentStore.from_uri('mock:///bucket/runs/exp')


def test_uris_join_split_and_print_without_credentials(tmp_path):
    uri = 's3://b/runs?endpoint_override=127.0.0.1:9000&scheme=http&secret_key=SECRET&access_key=AK'
    joined = join_uri(uri, 'exp')
    assert joined.startswith('s3://b/runs/exp?endpoint_override=')
    assert parent_and_name(joined) == (uri, 'exp')
    assert parent_and_name(str(tmp_path / 'exp')) == (str(tmp_path), 'exp')
    assert join_uri(tmp_path, 'exp') == str(tmp_path / 'exp')
    shown = ExperimentStore(None, 'b/runs/exp', joined).display
    assert 'SECRET' not in shown and 'AK' not in shown and 'endpoint_override=127.0.0.1:9000' in shown


def test_a_uri_no_filesystem_opens_is_a_usage_error():
    with pytest.raises(UsageError, match=r'^experiment.dir nosuch://b/p is not a storage URI pyarrow can open: '):
        ExperimentStore.from_uri('nosuch://b/p')


@pytest.mark.slow  # the S3 client retries the refused connection for about 20 s before it gives up
def test_a_storage_that_cannot_be_reached_is_one_line_exit_2_before_anything_runs(tmp_path, monkeypatch, capsys):
    from conftest import free_port
    from search.run import main

    # an S3 endpoint on a loopback port nobody listens on: the driver's first look at the experiment fails
    monkeypatch.setenv('AWS_ENDPOINT_URL', f'http://127.0.0.1:{free_port()}')
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', 'x')
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', 'y')
    monkeypatch.setenv('DYNTUNE_CACHE', str(tmp_path / 'cache'))  # the built-in dataset is written there
    assert main(['experiment.dir=s3://nobucket/runs', 'experiment.name=e', 'smoke=true', 'dashboard=false']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('dyntune: error: experiment.dir s3://nobucket/runs/e cannot be reached: '), err


def test_files_round_trip_through_the_storage(bucket):
    assert bucket.remote and not bucket.exists()
    bucket.write_text('search_config.yaml', 'metric: bbox_mAP\n')
    assert bucket.exists() and bucket.is_file('search_config.yaml') and not bucket.is_file('nothing.json')
    assert bucket.read_text('search_config.yaml') == 'metric: bbox_mAP\n'
    handle = bucket.file('deferred_stops.json')
    assert not handle.is_file()
    handle.write_text('{"a": 2}\n')
    assert json.loads(handle.read_text()) == {'a': 2} and str(handle) == 'mock:///bucket/runs/exp/deferred_stops.json'
    assert bucket.tune_storage() == dict(storage_path='bucket/runs', storage_filesystem=bucket.fs)


def test_pull_mirrors_the_storage_and_push_replaces_what_the_tools_wrote(bucket, tmp_path):
    bucket.write_text('trial_1/result.json', '{"epoch": 1}\n')
    bucket.write_text('trial_1/checkpoint_000000/checkpoint.pth', 'weights')
    bucket.write_text('report/old.png', 'png')
    local = bucket.pull()
    assert local.is_relative_to(tmp_path / 'cache') and local.name == 'exp'
    assert bucket.fetch(local / 'trial_1' / 'checkpoint_000000' / 'checkpoint.pth').read_text() == 'weights'

    bucket.write_text('trial_1/result.json', '{"epoch": 1}\n{"epoch": 2}\n')
    bucket.fs.delete_dir('bucket/runs/exp/trial_1/checkpoint_000000')  # Tune dropped it (num_to_keep)
    bucket.write_text('trial_1/checkpoint_000001/checkpoint.pth', 'weights2')
    bucket.pull()
    assert len((local / 'trial_1' / 'result.json').read_text().splitlines()) == 2
    assert not (local / 'trial_1' / 'checkpoint_000000').joinpath('checkpoint.pth').exists()
    assert bucket.fetch(local / 'trial_1' / 'checkpoint_000001' / 'checkpoint.pth').read_text() == 'weights2'

    (local / 'report' / 'old.png').unlink()
    (local / 'report' / 'new.png').write_text('png2')
    (local / 'summary.json').write_text('{}')
    bucket.push('report', 'summary.json', 'best')  # best/ does not exist here: skipped
    assert bucket.is_file('report/new.png') and not bucket.is_file('report/old.png')
    assert bucket.read_text('summary.json') == '{}' and not bucket.exists('best')
    # A resume command printed for the local copy names the URI it came from.
    assert source_of(local) == 'mock:///bucket/runs/exp'
    assert resume_command(local) == 'python search/run.py experiment.dir=mock:///bucket/runs experiment.name=exp resume=true'



def test_checkpoints_stay_in_the_storage_until_a_tool_fetches_one(bucket):
    """The tools read the best trial's and the reference's checkpoint, not every one Tune keeps."""
    bucket.write_text('trial_1/result.json', '{"epoch": 1}\n')
    bucket.write_text('trial_1/checkpoint_000000/checkpoint.pth', 'weights')
    local = bucket.pull()
    checkpoint = local / 'trial_1' / 'checkpoint_000000' / 'checkpoint.pth'
    assert not checkpoint.exists() and is_stored_file(checkpoint)  # the results see it is kept
    assert bucket.fetch(checkpoint) == checkpoint and checkpoint.read_text() == 'weights'
    bucket.pull()
    assert checkpoint.read_text() == 'weights' and not list(local.rglob('*.in-storage'))  # fetched: stays here

    bucket.fs.delete_dir('bucket/runs/exp/trial_1/checkpoint_000000')  # Tune dropped it (num_to_keep)
    bucket.write_text('trial_1/checkpoint_000001/checkpoint.pth', 'weights2')
    bucket.pull()
    kept = local / 'trial_1' / 'checkpoint_000001' / 'checkpoint.pth'
    assert not is_stored_file(checkpoint) and is_stored_file(kept) and not kept.exists()


def test_a_local_folder_is_its_own_view(tmp_path):
    store = ExperimentStore.from_uri(tmp_path / 'exp')
    assert not store.remote and store.local == tmp_path / 'exp' and store.pull() == tmp_path / 'exp'
    store.write_text('a/b.json', '{}')
    assert (tmp_path / 'exp' / 'a' / 'b.json').read_text() == '{}' and not list(tmp_path.rglob('*.partial'))
    store.push('a')  # nothing to upload
    assert store.fetch(tmp_path / 'exp' / 'a' / 'b.json') == tmp_path / 'exp' / 'a' / 'b.json'
    assert store.tune_storage() == dict(storage_path=str(tmp_path))
    assert source_of(tmp_path / 'exp') == str(tmp_path / 'exp')


def test_the_schedule_aware_rule_records_its_deferrals_in_the_storage(bucket):
    from ray.tune.schedulers import TrialScheduler

    from search.results import read_deferred_stops
    from search.schedule_aware import ScheduleAwareScheduler

    class AlwaysStop:
        def on_trial_result(self, controller, trial, result):
            return TrialScheduler.STOP

    class Trial:
        trial_id = 't1'

    scheduler = ScheduleAwareScheduler(AlwaysStop(), record=bucket.file('deferred_stops.json'))
    decision = scheduler.on_trial_result(None, Trial(), {'epoch': 1, 'schedule_settled_epoch': 3})
    assert decision == TrialScheduler.CONTINUE
    assert read_deferred_stops(bucket.file('deferred_stops.json')) == {'t1': 1}


def test_the_inputs_every_node_checks_and_the_first_it_cannot_read(tmp_path):
    data = tmp_path / 'data'
    (data / 'images').mkdir(parents=True)
    (data / 'train.json').write_text('{}')
    base = tmp_path / 'mine.py'
    base.write_text('')
    raw = {'data': {'root': str(data)}, 'base': str(base)}
    trial = {'data': {'train': {'ann_file': str(data / 'train.json'), 'img_prefix': str(data / 'images')},
                      'val': {'ann_file': str(data / 'val.json'), 'img_prefix': str(data / 'images')},
                      'samples_per_gpu': 2},
             'load_from': 's3://weights/x.pth'}
    paths = input_paths(raw, trial)
    assert list(paths) == ['data.root', 'data.train.ann_file', 'data.train.img_prefix', 'data.val.ann_file',
                           'data.val.img_prefix', 'base']  # a URI load_from is read through its filesystem
    assert first_unreadable(paths) == ('data.val.ann_file', str(data / 'val.json'))
    (data / 'val.json').write_text('{}')
    assert first_unreadable(paths) is None
    if os.geteuid() != 0:  # root reads any file
        (data / 'images').chmod(0)
        assert first_unreadable(paths) == ('data.train.img_prefix', str(data / 'images'))
        (data / 'images').chmod(0o755)
    assert input_paths({'base': 'mmdet::retinanet/x.py', 'data': {'root': None}}, {'load_from': str(base)}) == \
        {'load_from': str(base)}
