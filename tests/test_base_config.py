"""Your own MMDetection project: any mmdet 2.x config as the base, in one way for presets and files alike.

Unit tests compose the config and build the spec as search/run.py does (no training); the slow tests
run real searches from a model-zoo config on a few BCCD images, with the reference trial, the test
split and mmdet's own tools/train.py on the export.
"""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_search_for_test
from search.config import compose_config
from search.errors import UsageError
from search.mmdet_config import (build_trial_config, get_path, load_base, replace_datasets, resolve_base,
                                 set_num_classes)
from search.spec import build_spec

ZOO_RETINANET = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'
ZOO_FASTER_RCNN = 'mmdet::faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py'
FROM_SCRATCH = 'cfg.model.backbone.init_cfg=null'  # the zoo configs name torchvision:// weights


@pytest.fixture(scope='module')
def bccd(tmp_path_factory, shared_dataset):
    """8 train, 4 val and 4 test images of BCCD (3 classes), as a COCO folder."""
    from search.data.subset import write_subset

    return write_subset(shared_dataset('bccd'), tmp_path_factory.mktemp('bccd'), {'train': 8, 'val': 4, 'test': 4})


def spec_for(overrides, tmp_path, dry_run=False):
    return build_spec(compose_config([*overrides, f'experiment.dir={tmp_path / "exp"}']), dry_run=dry_run)


def one_line_error(overrides, tmp_path) -> str:
    with pytest.raises(UsageError) as err:
        spec_for(overrides, tmp_path)
    assert '\n' not in str(err.value)
    assert not (tmp_path / 'exp').exists()
    return str(err.value)


# -- presets and model-zoo configs -------------------------------------------------------------------

@pytest.mark.parametrize('name', ['retinanet', 'faster_rcnn', 'fcos'])
def test_presets_are_ordinary_mmdet_configs(name):
    from mmcv import Config
    from mmdet.models import build_detector

    import dyncomponents  # noqa: F401

    cfg = Config.fromfile(str(REPO / 'configs' / f'{name}.py'))
    assert build_detector(cfg.model) is not None and cfg.runner.max_epochs == 4


def test_a_zoo_config_is_the_base_and_only_what_was_asked_changes(bccd, tmp_path):
    spec = spec_for([f'base={ZOO_RETINANET}', 'space=dbf', 'data=coco', f'data.root={bccd}', FROM_SCRATCH], tmp_path)
    zoo = load_base(resolve_base(ZOO_RETINANET))
    trials = spec.trial.base_config
    # the zoo's model, apart from the classes of the data and the weights the command line changed
    expected = copy.deepcopy(zoo["model"])
    expected['bbox_head']['num_classes'] = 3
    expected['backbone']['init_cfg'] = None
    assert trials['model'] == expected
    # no train.* given: the zoo's recipe stands (optimizer, schedule, pipeline, batch)
    assert trials['optimizer'] == zoo['optimizer'] and trials['lr_config'] == zoo['lr_config']
    assert trials['data']['train']['pipeline'] == zoo['data']['train']['pipeline']
    assert trials['data']['samples_per_gpu'] == zoo['data']['samples_per_gpu']
    # the data: the user's files and classes; the test split picked up from annotations/test.json
    assert trials['data']['train']['ann_file'] == str(bccd / 'annotations' / 'train.json')
    assert trials['data']['train']['classes'] == ['Platelets', 'RBC', 'WBC']
    assert spec.test_ann == str(bccd / 'annotations' / 'test.json') == trials['data']['test']['ann_file']
    # the space: DBF added to the zoo's own hooks; lr a factor of the zoo's rate scaled to batch 2 (0.01 x 2/16)
    assert [h['type'] for h in trials['custom_hooks']] == ['NumClassCheckHook', 'DynamicBackboneFreezingHook']
    assert (spec.params['optimizer.lr'].low, spec.params['optimizer.lr'].high) == (0.000375, 0.00375)
    assert (spec.params['runner.max_epochs'].low, spec.params['runner.max_epochs'].high) == (9, 18)
    # the reference: the zoo config as it is, DBF off, the full budget, the rate at factor 1
    reference = spec.trial.reference_config
    assert [h['type'] for h in reference['custom_hooks']] == ['NumClassCheckHook']
    assert reference['runner']['max_epochs'] == 18 and reference['optimizer']['lr'] == 0.00125
    assert reference['model'] == trials['model']


def test_train_options_change_the_recipe_only_when_given(bccd, tmp_path):
    spec = spec_for([f'base={ZOO_RETINANET}', 'space=baseline', 'data=coco', f'data.root={bccd}', FROM_SCRATCH,
                     'train.img_scale=[320,240]', 'train.lr_steps=[0.5]', 'train.batch_size=4', 'max_epochs=3'],
                    tmp_path)
    config = spec.trial.base_config
    assert get_path(config, 'data.train.pipeline[type=Resize].img_scale') == (320, 240)
    assert get_path(config, 'data.test.pipeline[type=MultiScaleFlipAug].img_scale') == (320, 240)
    assert config['lr_config']['policy'] == 'BudgetStep' and config['lr_config']['step_fractions'] == [0.5]
    assert config['lr_config']['warmup_iters'] == 500  # the zoo's warm-up stays
    assert config['runner']['max_epochs'] == 3 and spec.max_epochs == 3
    # batch 4 of the zoo's 16: factor 1 is 0.01 x 4 / 16
    assert spec.params['optimizer.lr'].low == pytest.approx(0.3 * 0.0025)


def test_a_base_that_scales_its_own_rate_is_not_scaled_twice(bccd, tmp_path):
    spec = spec_for([f'base={ZOO_RETINANET}', 'space=baseline', 'data=coco', f'data.root={bccd}', FROM_SCRATCH,
                     'cfg.auto_scale_lr.enable=true'], tmp_path)
    assert spec.params['optimizer.lr'].low == pytest.approx(0.3 * 0.01)  # mmdet's train_detector scales it


def test_a_user_config_with_base_inheritance(tmp_path, bccd):
    """A project folder: my_model.py inherits from a _base_ file of the user's and from the model zoo."""
    import mmdet

    zoo = Path(mmdet.__file__).parent / '.mim' / 'configs' / '_base_'
    project = tmp_path / 'project'
    project.mkdir()
    (project / 'data.py').write_text(f"""
_base_ = ['{zoo}/datasets/coco_detection.py']
data_root = '{bccd}/'
classes = ('Platelets', 'RBC', 'WBC')
data = dict(samples_per_gpu=2, workers_per_gpu=0,
            train=dict(classes=classes, ann_file=data_root + 'annotations/train.json', img_prefix=data_root + 'images/'),
            val=dict(classes=classes, ann_file=data_root + 'annotations/val.json', img_prefix=data_root + 'images/'),
            test=dict(classes=classes, ann_file=data_root + 'annotations/test.json', img_prefix=data_root + 'images/'))
""")
    (project / 'my_model.py').write_text(f"""
_base_ = ['{zoo}/models/retinanet_r50_fpn.py', './data.py', '{zoo}/schedules/schedule_1x.py',
          '{zoo}/default_runtime.py']
model = dict(backbone=dict(depth=18, init_cfg=None), neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
             bbox_head=dict(num_classes=3, in_channels=64, feat_channels=64, stacked_convs=1))
optimizer = dict(lr=0.005)
custom_hooks = [dict(type='NumClassCheckHook'), dict(type='EMAHook', momentum=0.0002, priority=49)]
""")
    spec = spec_for([f'base={project / "my_model.py"}', 'space=dbf'], tmp_path, dry_run=True)
    config = spec.trial.base_config
    # data=base: the config's own datasets (no data= given), with their test split
    assert config['data']['train']['ann_file'] == str(bccd / 'annotations' / 'train.json')
    assert spec.test_ann == str(bccd / 'annotations' / 'test.json')
    assert config['model']['neck']['out_channels'] == 64 and config['model']['bbox_head']['stacked_convs'] == 1
    assert [h['type'] for h in config['custom_hooks']] == ['NumClassCheckHook', 'EMAHook', 'DynamicBackboneFreezingHook']
    # factor 1 of the user's lr 0.005 at their batch 2 of mmdet's base batch 16
    assert spec.trial.reference_config['optimizer']['lr'] == pytest.approx(0.005 * 2 / 16)


def test_datasets_inside_a_wrapper_are_replaced_and_every_head_gets_the_classes():
    config = load_base(resolve_base('mmdet::cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.py'))
    config['data']['train'] = dict(type='RepeatDataset', times=3, dataset=config['data']['train'])
    replace_datasets(config, classes=('a', 'b'), img_prefix='/d/images/', train_ann='/d/train.json',
                     val_ann='/d/val.json', test_ann=None)
    assert config['data']['train']['times'] == 3
    assert config['data']['train']['dataset']['ann_file'] == '/d/train.json'
    assert config['data']['test']['ann_file'] == '/d/val.json'  # no test split: test is val
    assert [h['num_classes'] for h in config['model']['roi_head']['bbox_head']] == [2, 2, 2]
    config['data']['val'] = dict(type='ConcatDataset', datasets=[config['data']['val']] * 2)
    with pytest.raises(UsageError, match='combines several datasets'):
        replace_datasets(config, classes=('a',), img_prefix='/d/', train_ann='/t', val_ann='/v', test_ann=None)


def test_set_num_classes_reaches_single_stage_heads_only_where_they_have_one():
    model = dict(bbox_head=dict(type='RetinaHead', num_classes=80), roi_head=None)
    set_num_classes(model, 5)
    assert model['bbox_head']['num_classes'] == 5


# -- what a space needs of the base, and bad input ----------------------------------------------------

def test_a_space_that_does_not_fit_names_the_detector_and_the_spaces_that_do(bccd, tmp_path):
    message = one_line_error([f'base={ZOO_RETINANET}', 'space=dynamic_rcnn', 'data=coco', f'data.root={bccd}',
                              FROM_SCRATCH], tmp_path)
    assert message.startswith('space dynamic_rcnn does not fit the base config (RetinaNet (RetinaHead))')
    assert 'model.roi_head.type (missing)' in message and 'spaces that fit it: baseline, dbf, dyra' in message


def test_weights_by_url_that_are_not_cached_stop_before_ray(bccd, tmp_path):
    message = one_line_error([f'base={ZOO_RETINANET}', 'space=dbf', 'data=coco', f'data.root={bccd}'], tmp_path)
    assert 'model.backbone.init_cfg.checkpoint names weights by URL (torchvision://resnet18)' in message
    assert 'cfg.model.backbone.init_cfg.checkpoint=/path/to/weights.pth' in message


def test_weights_by_url_from_the_command_line_exit_2_with_one_line(bccd, tmp_path, capsys):
    from search.run import main

    assert main([f'base={ZOO_RETINANET}', 'space=dbf', 'data=coco', f'data.root={bccd}',
                 f'experiment.dir={tmp_path / "exp"}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('dyntune: error:') and 'torchvision://resnet18' in err[0], err
    assert not (tmp_path / 'exp').exists()


def test_load_from_a_local_checkpoint(bccd, tmp_path):
    checkpoint = tmp_path / 'coco.pth'
    checkpoint.write_bytes(b'not read before training')
    spec = spec_for([f'base={ZOO_RETINANET}', 'space=baseline', 'data=coco', f'data.root={bccd}', FROM_SCRATCH,
                     f'load_from={checkpoint}'], tmp_path)
    assert spec.trial.base_config['load_from'] == str(checkpoint) == spec.trial.reference_config['load_from']


# -- real searches --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def zoo_search(ray_session, bccd, tmp_path_factory):
    """A DBF search from mmdet's ResNet-18 RetinaNet on 8 BCCD images, with the reference, one finalist
    re-trained, and the test split."""
    tmp = tmp_path_factory.mktemp('zoo')
    spec, summary = run_search_for_test([f'base={ZOO_RETINANET}', 'space=dbf', 'data=coco', f'data.root={bccd}',
                                         FROM_SCRATCH, 'smoke=true', 'train.img_scale=[128,128]',
                                         'finalize.top_k=1', 'finalize.seeds=1', 'experiment.name=zoo'], tmp)
    return spec, summary, tmp / 'zoo'


@pytest.mark.slow
def test_every_trial_trains_the_zoo_model_with_what_the_space_sampled(zoo_search):
    from mmcv import Config

    spec, summary, folder = zoo_search
    zoo = load_base(resolve_base(ZOO_RETINANET))['model']
    configs = [Config.fromfile(str(p)) for p in folder.glob('trial_*/trial_config.py')]
    assert len(configs) == 3  # two searched trials and the reference
    for cfg in configs:
        assert cfg.model.neck.out_channels == zoo['neck']['out_channels'] == 256
        assert cfg.model.bbox_head.stacked_convs == zoo['bbox_head']['stacked_convs']
        assert cfg.model.bbox_head.num_classes == 3 and cfg.lr_config.policy == 'step'
    hooked = [c for c in configs if any(h.type == 'DynamicBackboneFreezingHook' for h in c.custom_hooks)]
    assert len(hooked) == 2  # the reference trains the zoo config without DBF
    records = json.loads((folder / 'summary.json').read_text())
    for cfg in hooked:
        assert 0.2 <= cfg.custom_hooks[-1].schedule.period <= 0.6
    assert records['num_trials'] == 2 and records['num_failed'] == 0


@pytest.mark.slow
def test_the_search_reports_the_gain_over_the_reference_on_validation_and_test(zoo_search):
    spec, summary, folder = zoo_search
    reference, best, test = summary['reference'], summary['best'], summary['test']
    assert reference['status'] == 'completed' and reference['epoch'] is not None
    assert test['ann_file'] == spec.test_ann
    assert test['finalist 0'] == test['best']  # best/ is the finalist's run, evaluated once each
    for name in ('best', 'reference', 'finalist 0'):
        assert set(test[name]) == {'bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l'}
    assert summary['gain']['validation'] == pytest.approx(best['bbox_mAP'] - reference['bbox_mAP'])
    assert summary['gain']['test'] == pytest.approx(test['best']['bbox_mAP'] - test['reference']['bbox_mAP'])
    assert json.loads((folder / 'summary.json').read_text())['gain'] == summary['gain']
    report = (folder / 'report.html').read_text()
    assert 'Your config against the best' in report and 'test (once, after the search)' in report
    rows = (folder / 'trials.csv').read_text().splitlines()
    assert sum(',True,' in row for row in rows[1:]) == 1  # one reference row


@pytest.mark.slow
def test_mmdet_tools_train_trains_the_export_of_a_zoo_based_search(zoo_search, tmp_path):
    import mmdet

    _, _, folder = zoo_search
    train_py = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(train_py), str(folder / 'best' / 'best_config.py'),
                           '--work-dir', str(tmp_path / 'work'), '--cfg-options', 'runner.max_epochs=1'],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()


@pytest.mark.slow
def test_dynamic_rcnn_switches_on_in_a_zoo_faster_rcnn(ray_session, bccd, tmp_path):
    from mmcv import Config

    spec, summary = run_search_for_test([
        f'base={ZOO_FASTER_RCNN}', 'space=dynamic_rcnn', 'data=coco', f'data.root={bccd}', FROM_SCRATCH,
        # a smaller backbone keeps the test short; any key of the base can change like this
        'cfg.model.backbone.depth=18', 'cfg.model.neck.in_channels=[64,128,256,512]',
        'smoke=true', 'num_samples=1', 'max_epochs=1', 'reference=false', 'train.img_scale=[128,128]',
        'experiment.name=drcnn'], tmp_path)
    assert summary['num_failed'] == 0 and summary['best'] is not None
    cfg = Config.fromfile(str(next((tmp_path / 'drcnn').glob('*/trial_config.py'))))
    zoo = load_base(resolve_base(ZOO_FASTER_RCNN))['model']['roi_head']
    assert cfg.model.roi_head.type == 'DynamicRCNNRoIHead'
    assert cfg.model.roi_head.bbox_roi_extractor == zoo['bbox_roi_extractor']
    assert cfg.model.roi_head.bbox_head.loss_bbox.type == 'SmoothL1Loss'
    assert cfg.model.backbone.depth == 18


@pytest.mark.slow
def test_the_gain_benchmark_reads_a_search_as_its_summary_says(zoo_search, bccd, monkeypatch):
    from search.data.coco_check import median_object_size

    monkeypatch.syspath_prepend(str(REPO / 'bench'))
    from bench_gain import outcome

    _, summary, folder = zoo_search
    figures = outcome(folder)
    assert figures['reference']['validation'] == summary['reference']['bbox_mAP']
    assert figures['reference']['test'] == summary['test']['reference']['bbox_mAP']
    assert figures['reference']['compute_s'] > 0 and figures['best']['compute_s'] > 0
    assert figures['best']['validation'] == summary['best']['bbox_mAP']
    assert figures['best']['test'] == summary['test']['best']['bbox_mAP']
    assert figures['best']['params'] == summary['best']['params'] and figures['gain'] == summary['gain']
    assert figures['img_scale'] == (128, 128)  # train.img_scale on the command line, not the zoo's 1333x800
    assert figures['median_object_px'] == round(median_object_size(bccd / 'annotations' / 'train.json', (128, 128)), 1)
