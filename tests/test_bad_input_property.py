"""Hypothesis throws generated malformed COCO files, space files, distributions and configs at the loaders.

Every input is either accepted (it happened to be valid) or rejected with a one-line UsageError;
any other exception is a loader bug. Over 1,000 examples in all; no Ray, no training, no subprocess.
"""
import copy
import io
import itertools
import json
import math

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from PIL import Image

import search.space
from search.config import compose_config
from search.data.coco_check import check_dataset
from search.errors import UsageError
from search.space import KINDS, Distribution, load_space, parse_distribution
from search.spec import build_spec


def fuzz(examples):
    # No example database: it would be a folder in the repository.
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


EDGE_NUMBERS = st.sampled_from([0, -1, 1, 0.5, 47.9, 48, 63, 64, 65, 1e308, -1e308, 10 ** 30, 10 ** 400, 2 ** 63,
                                float('nan'), float('inf'), float('-inf')])
TEXT = st.text(max_size=12) | st.sampled_from(['', 'a.png', 'b.png', 'junk.png', 'c.png', '../images/a.png', '/',
                                               'x' * 300, 'a.png\n', '1', 'null', '${x}', 'é\u202e\x00',
                                               'rot6.jpg', 'cut.jpg'])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | EDGE_NUMBERS | TEXT
GARBAGE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                       max_leaves=8)


def one_line_error(call):
    """Run ``call``; return its result, or None when it raised a one-line UsageError (anything else fails)."""
    try:
        return call()
    except UsageError as err:
        message = str(err)
        assert message and '\n' not in message and '\r' not in message, repr(message)
        return None


# -- mutating a valid JSON-like document -----------------------------------------------------------

def _paths(node, path=()):
    """Every path (tuple of keys and indices) in a JSON-like tree, the root first."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, path + (key,))


def _at(node, path):
    for key in path:
        node = node[key]
    return node


@st.composite
def mutated(draw, valid, values):
    """``valid`` after 1-3 mutations: a node replaced, deleted, duplicated, or garbage added to a container."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        node = _at(doc, path)
        operation = draw(st.sampled_from(['replace', 'replace', 'delete', 'duplicate', 'add']))
        if operation == 'replace' or (not path and operation in ('delete', 'duplicate')):
            value = draw(values)
            if not path:
                doc = value
                continue
            _at(doc, path[:-1])[path[-1]] = value
        elif operation == 'delete':
            del _at(doc, path[:-1])[path[-1]]
        elif operation == 'duplicate':
            parent = _at(doc, path[:-1])
            if isinstance(parent, list):
                parent.append(copy.deepcopy(node))
        elif isinstance(node, list):
            node.append(draw(values))
        elif isinstance(node, dict):
            node[draw(TEXT)] = draw(values)
    return doc


# -- COCO files ------------------------------------------------------------------------------------

VALID_COCO = dict(
    images=[dict(id=1, file_name='a.png', width=64, height=48), dict(id=2, file_name='b.png', width=64, height=48)],
    annotations=[dict(id=1, image_id=1, category_id=1, bbox=[2, 3, 20, 10], area=200.0, iscrowd=0),
                 dict(id=2, image_id=2, category_id=2, bbox=[30, 20, 30, 25], area=750.0, iscrowd=0)],
    categories=[dict(id=1, name='plane'), dict(id=2, name='tank')])


@pytest.fixture(scope='module', autouse=True)
def own_cache(tmp_path_factory):
    """The dataset check caches decoded sizes under $DYNTUNE_CACHE: a folder of this module's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('DYNTUNE_CACHE', str(tmp_path_factory.mktemp('cache')))
        yield


def jpeg_bytes(width: int, height: int, orientation: int | None = None) -> bytes:
    """A JPEG stored at width x height, with an EXIF orientation tag when given."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:max(1, height // 3), :max(1, width // 3)] = 255
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, 'JPEG', exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    """Two real 64x48 PNGs, one file of garbage bytes, a 64x48 JPEG with EXIF orientation 6 (training
    sees 48x64), a JPEG cut to 80% of its length, and a valid val.json."""
    root = tmp_path_factory.mktemp('coco')
    (root / 'images').mkdir()
    (root / 'annotations').mkdir()
    for name in ('a.png', 'b.png'):
        Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(root / 'images' / name)
    (root / 'images' / 'junk.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)))
    (root / 'images' / 'rot6.jpg').write_bytes(jpeg_bytes(64, 48, orientation=6))
    whole = jpeg_bytes(64, 48)
    (root / 'images' / 'cut.jpg').write_bytes(whole[:len(whole) * 8 // 10])
    (root / 'annotations' / 'val.json').write_text(json.dumps(VALID_COCO))
    return root


@st.composite
def coco_file(draw):
    """The bytes of a malformed train.json: mutated, then sometimes cut short or replaced by text."""
    text = json.dumps(draw(mutated(VALID_COCO, GARBAGE | EDGE_NUMBERS | TEXT))).encode()
    damage = draw(st.sampled_from(['none', 'none', 'none', 'cut', 'text']))
    if damage == 'cut':
        return text[:draw(st.integers(0, len(text)))]
    if damage == 'text':
        return draw(st.text(max_size=40)).encode('utf-8', 'surrogatepass') + draw(st.binary(max_size=4))
    return text


@fuzz(600)
@given(content=coco_file())
def test_malformed_coco_gives_only_usage_errors(content, coco_root):
    (coco_root / 'annotations' / 'train.json').write_bytes(content)
    info = one_line_error(lambda: check_dataset(coco_root, 'annotations/train.json', 'annotations/val.json', 'images/'))
    if info is not None:  # accepted: it must describe the file it read
        coco = json.loads(content)
        assert info.classes == ('plane', 'tank') and info.num_train == len(coco['images']) >= 1
        assert all(a['image_id'] in {i['id'] for i in coco['images']} for a in coco['annotations'])
        # Only files training loads, at the size training loads them.
        assert not {i['file_name'] for i in coco['images']} & {'junk.png', 'cut.jpg'}
        assert all((i['width'], i['height']) == (48, 64) for i in coco['images'] if i['file_name'] == 'rot6.jpg')


_UNIQUE = itertools.count()


@fuzz(120)
@given(width=st.integers(8, 48), height=st.integers(8, 48), orientation=st.none() | st.integers(1, 8),
       json_gives=st.sampled_from(['decoded', 'stored']), cut=st.none() | st.floats(0.0, 0.98))
def test_exif_and_truncated_jpegs_pass_only_as_training_loads_them(width, height, orientation, json_gives, cut,
                                                                   coco_root):
    """Accepted exactly when the file decodes whole and the JSON gives the size training decodes.

    Cut by 2% or more, a JPEG never decodes with the pinned OpenCV (test_coco_check.py); a file
    missing only its end marker can, to the whole image, and is not generated here.
    """
    content = jpeg_bytes(width, height, orientation)
    if cut is not None:
        content = content[:int(len(content) * cut)]
    name = f'gen{next(_UNIQUE)}.jpg'  # a new file each time: no cache entry of an earlier example applies
    (coco_root / 'images' / name).write_bytes(content)
    decoded = (height, width) if orientation is not None and orientation >= 5 else (width, height)
    size = decoded if json_gives == 'decoded' else (width, height)
    train = copy.deepcopy(VALID_COCO)
    train['images'][1] = dict(id=2, file_name=name, width=size[0], height=size[1])
    train['annotations'][1]['bbox'], train['annotations'][1]['area'] = [1, 1, 6, 6], 36.0
    (coco_root / 'annotations' / 'train.json').write_text(json.dumps(train))
    info = one_line_error(lambda: check_dataset(coco_root, 'annotations/train.json', 'annotations/val.json', 'images/'))
    assert (info is not None) == (cut is None and size == decoded)


# -- distributions and space files -----------------------------------------------------------------

RANGE_ARGS = st.lists(EDGE_NUMBERS | st.integers(-5, 5) | st.floats(-2, 2) | SCALARS, max_size=4)
DISTRIBUTIONS = (st.dictionaries(st.sampled_from(KINDS) | TEXT, RANGE_ARGS | GARBAGE, min_size=1, max_size=2)
                 | GARBAGE)


def assert_valid(dist: Distribution):
    """What an accepted distribution promises to Ray Tune."""
    assert dist.kind in KINDS
    if dist.kind == 'choice':
        assert len(dist.args) >= 1
        return
    low, high = dist.args
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    assert low < high
    if dist.kind == 'loguniform':
        assert low > 0
    if dist.kind == 'int':
        assert isinstance(low, int) and isinstance(high, int)


@fuzz(250)
@given(spec=DISTRIBUTIONS, key=TEXT)
def test_malformed_distribution_gives_only_usage_errors(spec, key):
    dist = one_line_error(lambda: parse_distribution(key, spec))
    if dist is not None:
        assert_valid(dist)


VALID_SPACE = {
    'description': 'fuzzed',
    'overrides': ['base=fcos'],
    'mmdet': {'custom_hooks': [{'type': 'DynamicBackboneFreezingHook', 'schedule': {'type': 'StepFreezeSchedule'}}]},
    'params': {'optimizer.lr': {'loguniform': [0.001, 0.1]}, 'runner.max_epochs': {'int': [2, 4]},
               'custom_hooks[type=DynamicBackboneFreezingHook].schedule.rho': {'choice': [1, 2]}},
}


@pytest.fixture(scope='module')
def spaces_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('spaces')


@st.composite
def space_file(draw):
    if draw(st.integers(0, 5)) == 0:  # not even YAML of a mapping
        return draw(st.text(max_size=60)).encode('utf-8', 'surrogatepass') + draw(st.binary(max_size=3))
    space = draw(mutated(VALID_SPACE, GARBAGE | DISTRIBUTIONS | EDGE_NUMBERS))
    return yaml.safe_dump(space, allow_unicode=True).encode()


@fuzz(150)
@given(content=space_file())
def test_malformed_space_file_gives_only_usage_errors(content, spaces_dir):
    (spaces_dir / 'fuzz.yaml').write_bytes(content)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search.space, 'SPACES_DIR', spaces_dir)
        space = one_line_error(lambda: load_space('fuzz'))
    if space is not None:
        assert all(isinstance(o, str) and '=' in o for o in space.overrides) and isinstance(space.mmdet, dict)
        for dist in space.params.values():
            assert_valid(dist)


# -- configs ---------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def composed(coco_root, tmp_path_factory):
    """A valid composed config on the tiny dataset, and its experiment.dir."""
    experiments = tmp_path_factory.mktemp('experiments')
    (coco_root / 'annotations' / 'train.json').write_text(json.dumps(VALID_COCO))
    cfg = compose_config(['data=coco', f'data.root={coco_root}', f'experiment.dir={experiments}'])
    return OmegaConf.to_container(cfg), experiments


def _without_model_internals(config):
    """The config minus a backbone group's mmdet block (checked by the dry run, not here)."""
    out = copy.deepcopy(config)
    if isinstance(out.get('backbone'), dict):
        out['backbone'] = {k: v for k, v in out['backbone'].items() if k != 'mmdet'}
    return out


# Keep the mutated config away from the embedded dataset: generating it takes minutes.
OMEGACONF_VALUES = (st.none() | st.booleans() | st.integers(-10 ** 6, 10 ** 6) | st.floats() | EDGE_NUMBERS
                    | st.text(max_size=12).filter(lambda s: 'embedded' not in s and '$' not in s))
CONFIG_VALUES = st.recursive(OMEGACONF_VALUES, lambda inner: st.lists(inner, max_size=3), max_leaves=5)


@fuzz(150)
@given(data=st.data())
def test_malformed_config_gives_only_usage_errors(data, composed, coco_root):
    (coco_root / 'annotations' / 'train.json').write_text(json.dumps(VALID_COCO))
    valid, experiments = composed
    config = data.draw(mutated(_without_model_internals(valid), CONFIG_VALUES))
    if not isinstance(config, dict):
        return
    if isinstance(config.get('backbone'), dict) and isinstance(valid.get('backbone'), dict):
        config['backbone']['mmdet'] = copy.deepcopy(valid['backbone']['mmdet'])
    try:
        cfg = OmegaConf.create(config)
    except Exception:  # OmegaConf itself refuses the value; a user could not have written it
        return
    one_line_error(lambda: build_spec(cfg, dry_run=False))
    assert list(experiments.iterdir()) == []


KEYS = ['num_samples', 'max_epochs', 'train.lr', 'train.img_scale', 'train.lr_steps', 'gpus_per_trial', 'resume',
        'experiment.name', 'data.train_ann', 'mode', 'objectives', 'seed', 'space', 'model', 'backbone',
        'scheduler', 'search_alg', 'nokey', 'train', '+train.extra', '~train.lr', 'base', 'cfg.optimizer.lr',
        'cfg.model.type', 'cfg.nokey', 'reference', 'load_from', 'smoke', 'data.test_ann', 'metric', 'warm_start']
OVERRIDE_VALUES = (st.sampled_from(['0', '-1', '1e999', '1' + '0' * 400, 'null', '[]', '[1,', '{a: 1}', "'x'",
                                    '${oops}', 'nope', 'auto', 'true', '"', ',,', '=', '2', '0.5', '[0.5,2]'])
                   | st.sampled_from(['fcos', 'faster_rcnn', 'resnet18', 'pbt', 'pb2', 'hyperband', 'grid', 'optuna',
                                      'nsga2', 'bohb', 'dbf', 'dyra', 'dynamic_rcnn', 'coco'])
                   | st.text(max_size=8).filter(lambda s: 'embedded' not in s))


@fuzz(80)  # composing takes Hydra tens of milliseconds, so fewer examples; they aim at the grammar's edges
@given(extra=st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=6), OVERRIDE_VALUES), min_size=1, max_size=3),
       bare=st.sampled_from([''] * 5 + ['smoke', '=1', 'a==b', '~', '+=']))
def test_malformed_overrides_give_only_usage_errors(extra, bare, composed, coco_root):
    (coco_root / 'annotations' / 'train.json').write_text(json.dumps(VALID_COCO))
    _, experiments = composed
    overrides = ['data=coco', f'data.root={coco_root}', f'experiment.dir={experiments}']
    overrides += [f'{key}={value}' for key, value in extra] + ([bare] if bare else [])
    cfg = one_line_error(lambda: compose_config(overrides))
    if cfg is not None and cfg.data.name == 'coco':
        one_line_error(lambda: build_spec(cfg, dry_run=False))
    assert list(experiments.iterdir()) == []



@fuzz(30)  # each example composes and builds a whole spec (about a second)
@given(num_samples=OVERRIDE_VALUES | st.integers(-3, 6), max_epochs=OVERRIDE_VALUES | st.integers(-3, 6),
       order=st.booleans())
def test_smoke_never_overwrites_what_the_user_typed(num_samples, max_epochs, order, composed, coco_root):
    """smoke=true is a preset underneath the user's overrides: their values are validated and, if valid, used."""
    (coco_root / 'annotations' / 'train.json').write_text(json.dumps(VALID_COCO))
    _, experiments = composed
    typed = [f'num_samples={num_samples}', f'max_epochs={max_epochs}']
    overrides = ['data=coco', f'data.root={coco_root}', f'experiment.dir={experiments}',
                 *(['smoke=true', *typed] if order else [*typed, 'smoke=true'])]
    cfg = one_line_error(lambda: compose_config(overrides))
    spec = None if cfg is None else one_line_error(lambda: build_spec(cfg, dry_run=False))
    if spec is not None:
        # a typed max_epochs=null means what it always means: the base's own epochs (configs/_base_/cpu_runtime.py's 4)
        epochs = 4 if str(max_epochs) == 'null' else int(str(max_epochs))
        assert (spec.num_samples, spec.max_epochs) == (int(str(num_samples)), epochs)
    assert list(experiments.iterdir()) == []
