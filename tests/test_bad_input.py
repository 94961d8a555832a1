"""Every bad input is one UsageError naming the problem and the fix, before Ray or training, writing nothing.

In-process tests compose the config and build the spec as ``search/run.py`` does; a few run the
real command line. tests/test_cli.py holds the first CLI cases (unknown names, num_samples=0, ...);
these add space files, COCO files, scheduler options, the GPU and the experiment folder.
"""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import search.space
from search.config import compose_config
from search.data.coco_check import check_dataset
from search.errors import UsageError
from search.spec import build_spec

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a GPU')


def tiny_coco() -> dict:
    """Two 64x48 images, two classes, three boxes: a valid COCO file to break one thing at a time."""
    return dict(
        images=[dict(id=1, file_name='a.png', width=64, height=48), dict(id=2, file_name='b.png', width=64, height=48)],
        annotations=[dict(id=1, image_id=1, category_id=1, bbox=[2, 3, 20, 10], area=200.0, iscrowd=0),
                     dict(id=2, image_id=1, category_id=2, bbox=[30, 20, 30, 25], area=750.0, iscrowd=0),
                     dict(id=3, image_id=2, category_id=1, bbox=[0, 0, 64, 48], area=3072.0, iscrowd=0)],
        categories=[dict(id=1, name='plane'), dict(id=2, name='tank')])


def write_dataset(root: Path, train=None, val=None) -> Path:
    """A dataset folder with real PNGs, ``train``/``val`` COCO dicts (valid ones by default) or raw text."""
    (root / 'images').mkdir(parents=True, exist_ok=True)
    (root / 'annotations').mkdir(exist_ok=True)
    for name in ('a.png', 'b.png'):
        Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(root / 'images' / name)
    for split, coco in (('train', train), ('val', val)):
        coco = tiny_coco() if coco is None else coco
        text = coco if isinstance(coco, (str, bytes)) else json.dumps(coco)
        file = root / 'annotations' / f'{split}.json'
        file.write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def check(root: Path):
    return check_dataset(root, 'annotations/train.json', 'annotations/val.json', 'images/')


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The dataset check caches decoded image sizes under $DYNTUNE_CACHE: keep it in the test's folder."""
    monkeypatch.setenv('DYNTUNE_CACHE', str(tmp_path / 'cache'))


@pytest.fixture
def exp_dir(tmp_path):
    """The experiment.dir of a test; it must stay empty after any bad input."""
    path = tmp_path / 'experiments'
    path.mkdir()
    yield path
    assert list(path.iterdir()) == [], 'bad input left files in experiment.dir'


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / 'data')


def spec_error(overrides, exp_dir, dry_run=False) -> str:
    """The one-line message of the UsageError that composing and validating ``overrides`` raises."""
    with pytest.raises(UsageError) as err:
        build_spec(compose_config([*overrides, f'experiment.dir={exp_dir}']), dry_run=dry_run)
    message = str(err.value)
    assert '\n' not in message and message
    return message


def test_the_tiny_dataset_is_valid(dataset):
    info = check(dataset)
    assert info.classes == ('plane', 'tank') and (info.num_train, info.num_val) == (2, 2)


# -- unknown names ---------------------------------------------------------------------------------

@pytest.mark.parametrize('override, message', [
    ('backbone=resnet1', "unknown backbone 'resnet1': choose one of effnet_lite0, resnet18, resnet50"),
    ('data=voc', "unknown data 'voc': choose one of base, coco, embedded"),
    ('model=faster_rcnn', 'model= is now base=: write base=retinanet|faster_rcnn|fcos'),
    ('base=nope', "unknown base 'nope': choose one of faster_rcnn, fcos, retinanet, a path to an mmdet config"),
    ('base=mmdet::retinanet/no_such.py', "no config 'retinanet/no_such.py' in mmdet's model zoo"),
    ('base=/no/such/config.py', 'base config /no/such/config.py does not exist'),
])
def test_unknown_group_option_lists_the_choices(override, message, exp_dir):
    assert message in spec_error([override], exp_dir)


def test_unknown_search_alg_option_is_rejected(exp_dir, dataset):
    message = spec_error(['data=coco', f'data.root={dataset}', 'search_alg=optuna', '+search_alg.n_startup=3'], exp_dir)
    assert "search_alg optuna has no option(s) ['n_startup']; allowed: ['n_startup_trials']" in message


# -- space files -----------------------------------------------------------------------------------

@pytest.fixture
def spaces(tmp_path, monkeypatch):
    """An empty spaces folder; write NAME.yaml into it and use space=NAME."""
    folder = tmp_path / 'spaces'
    folder.mkdir()
    monkeypatch.setattr(search.space, 'SPACES_DIR', folder)
    return folder


@pytest.mark.parametrize('params, message', [
    ('optimizer.lr: {uniform: [0.1, 0.01]}', "parameter 'optimizer.lr': uniform needs low < high, got low=0.1 high=0.01"),
    ('optimizer.lr: {loguniform: [0.0, 0.1]}', 'loguniform needs low > 0, got low=0.0'),
    ('optimizer.lr: {loguniform: [-1, 0.1]}', 'loguniform needs low > 0, got low=-1'),
    ('runner.max_epochs: {int: [2, 4.5]}', 'int needs whole-number bounds'),
    ('runner.max_epochs: {int: [3, 3]}', 'int needs low < high'),
    ('optimizer.lr: {uniform: [0.1, .nan]}', 'uniform needs [low, high] numbers'),
    ('optimizer.lr: {uniform: [0, 1' + '0' * 400 + ']}', 'uniform needs [low, high] numbers'),
    ('optimizer.lr: {gauss: [0.1, 0.2]}', "unknown distribution 'gauss'"),
    ('optimizer.lr: 0.01', 'must be one of {choice: ..., uniform: ..., loguniform: ..., int: ...}'),
])
def test_invalid_range_in_a_space_file_names_file_parameter_and_rule(params, message, spaces, exp_dir):
    (spaces / 'bad.yaml').write_text(f'description: bad\nparams:\n  {params}\n')
    text = spec_error(['space=bad'], exp_dir)
    assert message in text and str(spaces / 'bad.yaml') in text


@pytest.mark.parametrize('content, message', [
    ('params: [1, 2', 'is not valid YAML'),
    (b'description: \xff\xfe\n', 'is not valid YAML'),
    ('- a\n- b\n', 'must be a mapping'),
    ('descripton: typo\n', "unknown keys ['descripton']"),
    ('overrides: model=fcos\n', "'overrides' must be a list of key=value strings"),
    ('mmdet: [1]\n', "'mmdet' must be a mapping"),
    ('params: [optimizer.lr]\n', "'params' must map config paths to distributions"),
])
def test_malformed_space_file(content, message, spaces, exp_dir):
    file = spaces / 'bad.yaml'
    file.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert message in spec_error(['space=bad'], exp_dir)


def test_space_overriding_an_unknown_base(spaces, exp_dir):
    (spaces / 'bad.yaml').write_text('description: x\noverrides: [base=yolo]\nparams: {optimizer.lr: {choice: [0.01]}}\n')
    assert "unknown base 'yolo': choose one of faster_rcnn, fcos, retinanet" in spec_error(['space=bad'], exp_dir)


@pytest.mark.parametrize('epochs', ['[0, 4]', '[-3, 2]'])
def test_space_sampling_no_or_negative_epochs(epochs, spaces, exp_dir, dataset):
    (spaces / 'bad.yaml').write_text(f'description: x\nparams:\n  runner.max_epochs: {{int: {epochs}}}\n')
    message = spec_error(['space=bad', 'data=coco', f'data.root={dataset}'], exp_dir)
    assert 'runner.max_epochs must be >= 1 epoch' in message


@pytest.mark.parametrize('override, message', [
    ('max_epochs=0', 'max_epochs must be a whole number >= 1, got 0'),
    ('num_samples=-1', 'num_samples must be a whole number >= 1, got -1'),
    ('num_samples=2.5', 'num_samples must be a whole number >= 1, got 2.5'),
    ('train.momentum=1.5', 'train.momentum must be in [0, 1), got 1.5'),
    ('train.lr_steps=[0.5,1.5]', 'train.lr_steps must be a list of fractions of the budget in (0, 1]'),
    ('train.img_scale=[16,16]', 'train.img_scale must be [long, short] whole numbers >= 32'),
    ('cpus_per_trial=0', 'cpus_per_trial must be a number > 0'),
    ('mode=maximum', "mode must be max or min, got 'maximum'"),
    ('data.root=[a,b]', 'data.root must be a path'),
    ('search_budget_s=0', 'search_budget_s must be a number > 0, got 0'),
    ('search_budget_s=soon', "search_budget_s must be a number > 0, got 'soon'"),
    ('space=no/such/space.yaml', 'space file'),
])
def test_invalid_number_in_the_config(override, message, exp_dir, dataset):
    assert message in spec_error(['data=coco', f'data.root={dataset}', override], exp_dir)


@pytest.mark.parametrize('overrides, message', [
    (['~seed=0'], 'seed is missing from the config: set it with seed=VALUE instead of deleting it'),
    (['train=null'], 'train must be a section (key: value mapping), got None'),
    (['backbone=resnet18', 'backbone.out_channels=null'], 'backbone.out_channels must list the channels of the outputs'),
    (['backbone=effnet_lite0', 'backbone.img_norm=5'], 'backbone.img_norm must be null (ImageNet) or {mean: [..], std: [..]'),
    (['cfg.model.no_such_key=1'], "cfg.model.no_such_key: 'no_such_key' not found in model"),
    (['cfg.optimizer.lr=0.1', 'space=baseline'], 'cfg.optimizer.lr sets a parameter that space baseline samples'),
    (['cfg.=1'], "'cfg.=1': write cfg.PATH=VALUE"),
    (['cfg.model.type=[1'], "'cfg.model.type=[1': the value does not parse"),
    (['load_from=/no/such.pth'], 'load_from /no/such.pth does not exist'),
    (['ray.verbose=9'], 'ray.verbose must be 0, 1, 2 or 3, got 9'),
    (['ray.dashboard=maybe'], 'ray.dashboard must be true or false'),
    (['+ray.adress=auto'], "ray has no option(s) ['adress']"),
    (['reference=yes'], 'reference must be true or false'),
    (['metric=not_a_metric'], "unknown metric 'not_a_metric' (metric, objectives): the trials report bbox_mAP, "),
    (['objectives=[bbox_mAP,compute]'], "unknown metric 'compute' (metric, objectives)"),
    (['experiment.name='], "experiment.name '' is not a folder name: give one, or leave it out"),
    # smoke=true is a preset underneath the user's own overrides: what the user typed is validated
    (['smoke=true', 'num_samples=0'], 'num_samples must be a whole number >= 1, got 0'),
    (['smoke=true', 'num_samples=abc'], "num_samples must be a whole number >= 1, got 'abc'"),
    (['smoke=true', 'max_epochs=-1'], 'max_epochs must be a whole number >= 1, got -1'),
    (['objectives=[[a],b]'], 'objectives must be a list of two or more distinct metric names'),
    (['=1'], "'=1' is not an override: write key=value"),
    (['data=embedded', 'data.num_train=abc'], "data.num_train must be a whole number >= 1, got 'abc'"),
])
def test_missing_or_misshapen_config_keys(overrides, message, exp_dir, dataset):
    assert message in spec_error(['data=coco', f'data.root={dataset}', *overrides], exp_dir)


DBF_SPACE = """description: DBF with a duty range past 1
mmdet:
  custom_hooks:
    - {type: DynamicBackboneFreezingHook, schedule: {type: BudgetStepFreezeSchedule, period: 0.25, duty: 0.0}}
params:
  custom_hooks[type=DynamicBackboneFreezingHook].schedule.duty: {uniform: [0.0, 1.5]}
"""


def test_smoke_is_a_preset_the_users_overrides_win_over(exp_dir, dataset):
    def spec(*overrides):
        return build_spec(compose_config(['data=coco', f'data.root={dataset}', *overrides,
                                          f'experiment.dir={exp_dir}']), dry_run=False)

    smoke = spec('smoke=true')
    assert (smoke.num_samples, smoke.max_epochs) == (2, 2)
    assert smoke.trial.base_config['data']['train']['pipeline'][2]['img_scale'] == (160, 160)
    mine = spec('smoke=true', 'num_samples=4', 'max_epochs=3', 'train.img_scale=[192,192]')
    assert (mine.num_samples, mine.max_epochs) == (4, 3)
    assert mine.trial.base_config['data']['train']['pipeline'][2]['img_scale'] == (192, 192)
    assert spec('smoke=true', 'search_alg=grid', 'space=schedule').num_samples == 1  # a grid is several trials already


def test_dbf_duty_outside_0_1_fails_in_the_dry_run(spaces, exp_dir, dataset):
    (spaces / 'dbf_bad.yaml').write_text(DBF_SPACE)
    message = spec_error(['space=dbf_bad', 'data=coco', f'data.root={dataset}'], exp_dir, dry_run=True)
    assert 'duty must be a number in [0, 1], got 1.5' in message and 'narrow' in message


@pytest.mark.parametrize('scheduler, option, message', [
    ('pbt', 'quantile_fraction=1.5', 'scheduler.quantile_fraction must be a probability in [0, 0.5], got 1.5'),
    ('pbt', 'resample_probability=-0.1', 'scheduler.resample_probability must be a probability in [0, 1.0], got -0.1'),
    ('pb2', 'quantile_fraction=0.9', 'scheduler.quantile_fraction must be a probability in [0, 0.5], got 0.9'),
    ('asha', 'reduction_factor=1', 'scheduler.reduction_factor must be a number > 1, got 1'),
    ('asha', 'grace_period=0', 'scheduler.grace_period must be a whole number >= 1, got 0'),
    ('asha', '+scheduler.grace=2', "scheduler asha has no option(s) ['grace']"),
])
def test_scheduler_options_out_of_range(scheduler, option, message, exp_dir, dataset):
    option = option if option.startswith('+') else f'scheduler.{option}'
    assert message in spec_error(['space=dbf', 'data=coco', f'data.root={dataset}', f'scheduler={scheduler}', option],
                                 exp_dir)


# -- datasets --------------------------------------------------------------------------------------

def _break(change):
    coco = tiny_coco()
    change(coco)
    return coco


def _set(path, value):
    """A change that sets coco[path[0]][path[1]]...[path[-1]] = value."""
    def change(coco):
        node = coco
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def _delete(path):
    def change(coco):
        node = coco
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return change


BAD_COCO = {
    'not json': ('{"images": [', 'is not valid JSON'),
    'bad utf-8': (b'{"images": "\xff"}', 'is not valid JSON'),
    'integer too long': ('{"images": 1' + '0' * 5000 + '}', 'is not valid JSON'),
    'not an object': ('[1, 2]', 'a COCO file is a JSON object with images, annotations and categories'),
    'missing images': (_break(_delete(['images'])), "missing or non-list key 'images'"),
    'annotations not a list': (_break(_set(['annotations'], {})), "missing or non-list key 'annotations'"),
    'no images': (_break(_set(['images'], [])), 'the dataset is empty (no images)'),
    'no annotations': (_break(_set(['annotations'], [])), 'no annotations; a detector needs labelled boxes'),
    'no categories': (_break(_set(['categories'], [])), 'no categories; a detection dataset needs at least one'),
    'image without width': (_break(_delete(['images', 0, 'width'])), "images[0] has no 'width'; each needs 'id', 'file_name', 'width', 'height'"),
    'image id a string': (_break(_set(['images', 0, 'id'], '1')), 'images[0] needs an integer id and a file_name'),
    'image of zero width': (_break(_set(['images', 1, 'width'], 0)), 'image 2 has width/height 0x48; need > 0'),
    'image width NaN': (_break(_set(['images', 1, 'height'], float('nan'))), 'image 2 has width/height 64xnan'),
    'duplicate image id': (_break(_set(['images', 1, 'id'], 1)), 'image id 1 appears twice'),
    'image file missing': (_break(_set(['images', 1, 'file_name'], 'c.png')), 'does not exist; check data.img_prefix'),
    'file name too long': (_break(_set(['images', 1, 'file_name'], 'x' * 300)), 'does not exist'),
    'size mismatch': (_break(_set(['images', 1, 'width'], 65)), 'is 64x48 (width x height) as training loads it but 65x48 in the JSON; set width/height to 64x48'),
    'category without name': (_break(_delete(['categories', 1, 'name'])), 'categories[1] needs an integer id and a string name'),
    'duplicate category id': (_break(_set(['categories', 1, 'id'], 1)), 'category id 1 appears twice'),
    'duplicate category name': (_break(_set(['categories', 1, 'name'], 'plane')), 'category names repeat'),
    'annotation without bbox': (_break(_delete(['annotations', 2, 'bbox'])), "annotations[2] has no 'bbox'; each needs 'id', 'image_id', 'category_id', 'bbox'"),
    'annotation not an object': (_break(_set(['annotations', 2], [1, 2])), "annotations[2] must be an object with keys 'id', 'image_id'"),
    'image_id a list': (_break(_set(['annotations', 0, 'image_id'], [1])), 'annotations[0] needs integer id, image_id and category_id'),
    'duplicate annotation id': (_break(_set(['annotations', 1, 'id'], 1)), 'annotation id 1 appears twice'),
    'unknown image': (_break(_set(['annotations', 1, 'image_id'], 7)), 'annotation 2 refers to unknown image_id 7'),
    'unknown category': (_break(_set(['annotations', 1, 'category_id'], 3)), 'annotation 2 has unknown category_id 3; known: [1, 2]'),
    'bbox of three': (_break(_set(['annotations', 0, 'bbox'], [1, 2, 3])), 'bbox must be [x, y, width, height] numbers'),
    'bbox with a string': (_break(_set(['annotations', 0, 'bbox'], [1, 2, '3', 4])), 'bbox must be [x, y, width, height]'),
    'bbox with inf': (_break(_set(['annotations', 0, 'bbox'], [1, 2, float('inf'), 4])), 'bbox must be [x, y, width, height]'),
    'zero-size box': (_break(_set(['annotations', 0, 'bbox'], [1, 2, 0, 4])), 'annotation 1 has a zero-size box [1, 2, 0, 4]'),
    'negative height': (_break(_set(['annotations', 0, 'bbox'], [1, 2, 3, -4])), 'has a zero-size box'),
    'box past the right edge': (_break(_set(['annotations', 1, 'bbox'], [40, 20, 30, 25])), 'box [40, 20, 30, 25] lies outside its 64x48 image 1'),
    'box above the image': (_break(_set(['annotations', 1, 'bbox'], [4, -9, 3, 5])), 'lies outside its 64x48 image'),
    'no area': (_break(_delete(['annotations', 0, 'area'])), "annotation 1 needs an 'area' number > 0, got None"),
    'zero area': (_break(_set(['annotations', 0, 'area'], 0)), "needs an 'area' number > 0, got 0"),
    'iscrowd a string': (_break(_set(['annotations', 0, 'iscrowd'], 'no')), "iscrowd='no'; use 0 or 1"),
}


@pytest.mark.parametrize('case', sorted(BAD_COCO))
def test_malformed_coco_names_file_and_record(case, tmp_path):
    content, message = BAD_COCO[case]
    root = write_dataset(tmp_path / 'data', train=content)
    with pytest.raises(UsageError) as err:
        check(root)
    text = str(err.value)
    assert message in text and '\n' not in text
    assert str(root / 'annotations' / 'train.json') in text


def test_image_that_does_not_decode(tmp_path):
    root = write_dataset(tmp_path / 'data')
    (root / 'images' / 'b.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4)
    with pytest.raises(UsageError, match=r'image 2 file .*b\.png does not decode'):
        check(root)


def test_truncated_image_does_not_decode(tmp_path):
    root = write_dataset(tmp_path / 'data')
    png = (root / 'images' / 'a.png').read_bytes()
    (root / 'images' / 'a.png').write_bytes(png[:len(png) // 2])
    with pytest.raises(UsageError, match='image 1 file .* does not decode'):
        check(root)


def test_train_and_val_categories_must_match(tmp_path):
    val = _break(_set(['categories', 1, 'name'], 'vehicle'))
    root = write_dataset(tmp_path / 'data', val=val)
    with pytest.raises(UsageError, match=r"categories \['plane', 'vehicle'\] differ from .*train.json: "
                                         r"\['plane', 'tank'\]; all splits need the same categories"):
        check(root)


@pytest.mark.parametrize('override, message', [
    ('data.root={missing}', 'dataset folder {missing} does not exist: set data.root=PATH'),
    ('data.img_prefix=pictures/', 'pictures does not exist: set data.img_prefix'),
    ('data.val_ann=annotations/test.json', 'test.json does not exist: set data.val_ann (relative to data.root)'),
])
def test_missing_dataset_paths(override, message, exp_dir, dataset, tmp_path):
    missing = tmp_path / 'nowhere'
    text = spec_error(['data=coco', f'data.root={dataset}', override.format(missing=missing)], exp_dir)
    assert message.format(missing=missing) in text


def test_a_bad_coco_file_is_caught_by_the_spec(exp_dir, tmp_path):
    root = write_dataset(tmp_path / 'data', train=_break(_set(['annotations', 0, 'category_id'], 9)))
    assert 'unknown category_id 9' in spec_error(['data=coco', f'data.root={root}'], exp_dir)


# -- machine and experiment folder -----------------------------------------------------------------

@NO_GPU
@pytest.mark.parametrize('gpus', ['1', 'auto', '0.5'])
def test_gpu_asked_for_on_a_machine_without_one(gpus, exp_dir, dataset):
    message = spec_error(['data=coco', f'data.root={dataset}', f'gpus_per_trial={gpus}'], exp_dir)
    assert f'gpus_per_trial={gpus} but this machine has no usable GPU: use gpus_per_trial=0' in message


def test_negative_gpus(exp_dir, dataset):
    assert 'gpus_per_trial must be a number >= 0' in spec_error(['data=coco', f'data.root={dataset}',
                                                                 'gpus_per_trial=-1'], exp_dir)


def test_existing_experiment_without_resume_is_left_alone(tmp_path, dataset):
    exp_dir = tmp_path / 'experiments'
    (exp_dir / 'taken').mkdir(parents=True)
    (exp_dir / 'taken' / 'marker').write_text('old results')
    with pytest.raises(UsageError, match='already exists: add resume=true to continue it, or pick another'):
        build_spec(compose_config(['data=coco', f'data.root={dataset}', f'experiment.dir={exp_dir}',
                                   'experiment.name=taken']), dry_run=False)
    assert [p.name for p in (exp_dir / 'taken').iterdir()] == ['marker']


@pytest.mark.parametrize('name', ['missing', 'null'])
def test_resume_of_a_missing_experiment(name, exp_dir, dataset):
    message = spec_error(['data=coco', f'data.root={dataset}', 'resume=true', f'experiment.name={name}'], exp_dir)
    assert 'resume=true but' in message and 'give the experiment.dir and experiment.name' in message


@pytest.mark.parametrize('name', ['a/b', '..'])
def test_experiment_name_must_be_a_folder_name(name, exp_dir, dataset):
    message = spec_error(['data=coco', f'data.root={dataset}', f'experiment.name={name}'], exp_dir)
    assert 'must be a plain folder name' in message


# -- search/run.py's main, as the command line calls it (in this process: tests/test_cli.py says why) ------

@pytest.mark.parametrize('args, message', [
    (['data=coco', 'data.root={bad_data}'], 'annotation 3 has a zero-size box'),
    (['data=coco', 'data.root={cut_data}'], '1 of 2 images fail to load the way training loads them'),
    (['data=coco', 'data.root={data}', 'gpus_per_trial=auto'], 'gpus_per_trial=auto but this machine has no usable GPU'),
    (['data=coco', 'data.root={data}', 'resume=true', 'experiment.name=gone'], 'resume=true but'),
    (['data=coco', 'data.root={data}', 'scheduler=pbt', 'scheduler.quantile_fraction=2'],
     'scheduler.quantile_fraction must be a probability in [0, 0.5], got 2'),
])
def test_cli_prints_one_line_and_exits_2(args, message, exp_dir, tmp_path, capsys):
    from search.run import main

    if 'gpus_per_trial=auto' in args and torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    data = write_dataset(tmp_path / 'data')
    bad_data = write_dataset(tmp_path / 'bad', train=_break(_set(['annotations', 2, 'bbox'], [5, 5, 0, 0])))
    cut_data = write_dataset(tmp_path / 'cut')
    png = (cut_data / 'images' / 'b.png').read_bytes()
    (cut_data / 'images' / 'b.png').write_bytes(png[:len(png) * 8 // 10])
    code = main([*[a.format(data=data, bad_data=bad_data, cut_data=cut_data) for a in args], f'experiment.dir={exp_dir}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith('dyntune: error:') and message in err[0], err
