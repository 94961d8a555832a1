"""Contract test: every search space runs a real smoke search end to end and reports its components."""
import json

import pytest

from conftest import run_search_for_test
from search.space import available_spaces

# The metric each space's component reports with every epoch (the baseline is covered by test_search_smoke).
COMPONENT_METRIC = {'dbf': 'dbf_trained_fraction', 'dynamic_rcnn': 'drcnn_iou_thr', 'dynamic_head': 'dhead_gflops_avg',
                    'dyra': 'dyra_gamma', 'joint': 'drcnn_iou_thr', 'schedule': 'bbox_mAP'}


@pytest.mark.slow
@pytest.mark.parametrize('space', [s for s in available_spaces() if s != 'baseline'])
def test_space_smoke_search(ray_session, tmp_path, space):
    spec, summary = run_search_for_test([f'space={space}', 'smoke=true', 'experiment.name=s'], tmp_path)
    assert summary['num_trials'] == 2 and summary['num_failed'] == 0, summary['failures']
    assert summary['best'] is not None and (tmp_path / 's' / 'best' / 'best.pth').is_file()
    rows = [json.loads(line) for p in (tmp_path / 's').glob('train_trial_*/result.json')
            for line in p.read_text().splitlines()]
    key = COMPONENT_METRIC.get(space, 'bbox_mAP')
    assert rows and all(key in row for row in rows), sorted(rows[0])
