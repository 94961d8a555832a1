"""Contract test: every search space runs a real smoke search end to end and reports its components."""
import json

import pytest

from conftest import run_search_for_test
from search.space import available_spaces

# The metric each space's component reports with every epoch. The spaces without a component run
# elsewhere: baseline in tests/test_search_smoke.py, schedule as the grid search of tests/test_schedulers.py.
COMPONENT_METRIC = {'dbf': 'dbf_trained_fraction', 'dynamic_rcnn': 'drcnn_iou_thr', 'dynamic_head': 'dhead_gflops_avg',
                    'dyra': 'dyra_gamma', 'joint': 'drcnn_iou_thr'}
RUN_ELSEWHERE = {'baseline', 'schedule'}


def test_every_space_runs_a_smoke_search_somewhere():
    assert set(available_spaces()) == set(COMPONENT_METRIC) | RUN_ELSEWHERE  # a new space gets a smoke search


@pytest.mark.slow
@pytest.mark.parametrize('space', sorted(COMPONENT_METRIC))
def test_space_smoke_search(ray_session, tmp_path, space):
    # The reference trial is the base without the component: tests/test_base_config.py runs one.
    spec, summary = run_search_for_test([f'space={space}', 'smoke=true', 'reference=false', 'experiment.name=s'],
                                        tmp_path)
    assert summary['num_trials'] == 2 and summary['num_failed'] == 0, summary['failures']
    assert summary['best'] is not None and (tmp_path / 's' / 'best' / 'best.pth').is_file()
    rows = [json.loads(line) for p in (tmp_path / 's').glob('trial_*/result.json')
            for line in p.read_text().splitlines()]
    key = COMPONENT_METRIC[space]
    assert rows and all(key in row for row in rows), sorted(rows[0])
    # each trial stored its components' declarations, which trials.csv and the report read
    declared = [{m['name'] for d in json.loads(p.read_text()) for m in d['metrics']}
                for p in (tmp_path / 's').glob('trial_*/component_metrics.json')]
    assert len(declared) == 2 and all(key in names for names in declared), declared
    assert key in (tmp_path / 's' / 'trials.csv').read_text().splitlines()[0].split(',')
