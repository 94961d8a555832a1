"""The built-in synthetic dataset: COCO validity, mmdet loading, determinism, caching and atomic creation."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from search.data import embedded
from search.data.embedded import CLASSES, default_cache_dir, ensure_embedded_dataset

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_train=6, num_val=3, min_size=128, max_size=160)


@pytest.fixture(scope='module')
def medium_root(tmp_path_factory):
    # Full-size images so that the whole 8-128 px object range can occur.
    return ensure_embedded_dataset(tmp_path_factory.mktemp('cache'), seed=1, num_train=24, num_val=8,
                                   min_size=256, max_size=384)


def _load(root, split):
    with open(root / 'annotations' / f'{split}.json') as f:
        return json.load(f)


def _check_coco_split(root, split, count, min_size, max_size):
    coco = COCO(str(root / 'annotations' / f'{split}.json'))
    assert len(coco.getImgIds()) == count
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    for info in coco.loadImgs(coco.getImgIds()):
        with Image.open(root / 'images' / info['file_name']) as image:
            assert image.size == (info['width'], info['height'])
            assert image.mode == 'RGB'
        assert min_size <= info['width'] <= max_size and min_size <= info['height'] <= max_size
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[info['id']]))
        assert annotations, f'image {info["file_name"]} has no object'
        for ann in annotations:
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= info['width'] and y + h <= info['height']
            assert ann['iscrowd'] == 0 and ann['area'] == w * h
    return coco


def test_layout_and_coco_validity(medium_root):
    assert medium_root.name == 'embedded-v1-s1-24x8-256-384'
    train = _check_coco_split(medium_root, 'train', 24, 256, 384)
    _check_coco_split(medium_root, 'val', 8, 256, 384)
    assert len(list((medium_root / 'images').iterdir())) == 24 + 8
    boxes = np.array([ann['bbox'] for ann in train.dataset['annotations']])
    long_sides = boxes[:, 2:].max(axis=1)
    assert long_sides.min() <= 12, 'small objects are missing'
    assert long_sides.max() / long_sides.min() >= 8, 'object sizes span fewer than 3 octaves'
    assert {ann['category_id'] for ann in train.dataset['annotations']} == {1, 2, 3}
    per_image = np.bincount([ann['image_id'] for ann in train.dataset['annotations']])[1:]
    assert per_image.max() >= 4 and per_image.max() <= 12


def test_images_are_not_flat(medium_root):
    # Cluttered textured backgrounds, not a plain colour: strong local variation everywhere.
    info = _load(medium_root, 'train')['images'][0]
    pixels = np.asarray(Image.open(medium_root / 'images' / info['file_name']), dtype=np.float32)
    assert pixels.std(axis=(0, 1)).min() > 10
    assert np.abs(np.diff(pixels, axis=1)).mean() > 3


def test_mmdet_coco_dataset_loads_and_evaluates(medium_root):
    from mmdet.datasets import CocoDataset

    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', img_scale=(160, 160), keep_ratio=True),
        dict(type='RandomFlip', flip_ratio=0.5),
        dict(type='Normalize', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True),
        dict(type='Pad', size_divisor=32),
        dict(type='DefaultFormatBundle'),
        dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
    ]
    img_prefix = str(medium_root / 'images') + '/'
    train = CocoDataset(ann_file=str(medium_root / 'annotations' / 'train.json'), pipeline=train_pipeline,
                        img_prefix=img_prefix, classes=CLASSES)
    assert len(train) == 24
    sample = train[0]
    gt_bboxes, gt_labels = sample['gt_bboxes'].data, sample['gt_labels'].data
    assert gt_bboxes.ndim == 2 and gt_bboxes.shape[1] == 4 and gt_bboxes.shape[0] >= 1
    assert gt_bboxes.shape[0] == gt_labels.shape[0]
    assert int(gt_labels.max()) < len(CLASSES)
    assert sample['img'].data.shape[1:] == (160, 160)

    val = CocoDataset(ann_file=str(medium_root / 'annotations' / 'val.json'), pipeline=[],
                      img_prefix=img_prefix, classes=CLASSES, test_mode=True)
    # The ground truth given back as detections must score a perfect mAP: ids, classes and boxes agree.
    results = []
    for index in range(len(val)):
        ann = val.get_ann_info(index)
        results.append([np.hstack([ann['bboxes'][ann['labels'] == c], np.ones((int((ann['labels'] == c).sum()), 1))])
                        .astype(np.float32) for c in range(len(CLASSES))])
    metrics = val.evaluate(results, metric='bbox')
    assert metrics['bbox_mAP'] == pytest.approx(1.0)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first = ensure_embedded_dataset(tmp_path / 'a', seed=3, **SMALL)
    second = ensure_embedded_dataset(tmp_path / 'b', seed=3, **SMALL)
    other = ensure_embedded_dataset(tmp_path / 'c', seed=4, **SMALL)
    for split in ('train', 'val'):
        name = Path('annotations') / f'{split}.json'
        assert (first / name).read_bytes() == (second / name).read_bytes()
        assert (first / name).read_bytes() != (other / name).read_bytes()
    image = Path('images') / 'train_000001.jpg'
    assert (first / image).read_bytes() == (second / image).read_bytes()
    assert (first / image).read_bytes() != (other / image).read_bytes()


def test_second_call_reuses_the_cache_and_arguments_never_collide(tmp_path, monkeypatch):
    root = ensure_embedded_dataset(tmp_path, seed=0, **SMALL)
    stamp = (root / 'annotations' / 'train.json').stat().st_mtime_ns
    with monkeypatch.context() as patch:  # a cached dataset is returned without waiting for the lock or writing
        patch.setattr(embedded, '_exclusive_lock', lambda path: pytest.fail('a cached call took the lock'))
        patch.setattr(embedded, '_write_dataset', lambda *args: pytest.fail('a cached call generated again'))
        assert ensure_embedded_dataset(tmp_path, seed=0, **SMALL) == root
    assert (root / 'annotations' / 'train.json').stat().st_mtime_ns == stamp
    other = ensure_embedded_dataset(tmp_path, seed=0, **{**SMALL, 'num_val': 4})
    assert other != root and len(_load(other, 'val')['images']) == 4
    # Only finished datasets and lock files remain: no temporary folders.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted([root.name, other.name])


def test_concurrent_processes_both_get_a_valid_dataset(tmp_path):
    code = ('import sys; from search.data.embedded import ensure_embedded_dataset; '
            'print(ensure_embedded_dataset(sys.argv[1], seed=5, num_train=10, num_val=4, min_size=128, max_size=160))')
    procs = [subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    roots = {Path(out.strip()) for out, _ in outputs}
    assert len(roots) == 1
    root = roots.pop()
    _check_coco_split(root, 'train', 10, 128, 160)
    _check_coco_split(root, 'val', 4, 128, 160)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [root.name]


def test_tiny_sizes_work(tmp_path):
    # How long they take is measured by bench/bench_embedded_data.py, not asserted here.
    root = ensure_embedded_dataset(tmp_path, num_train=16, num_val=8, min_size=128, max_size=160)
    _check_coco_split(root, 'train', 16, 128, 160)
    smallest = ensure_embedded_dataset(tmp_path, num_train=1, num_val=1, min_size=64, max_size=64)
    _check_coco_split(smallest, 'train', 1, 64, 64)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_train=0), 'num_train must be an integer >= 1'),
    (dict(num_val=-1), 'num_val must be an integer >= 1'),
    (dict(seed=-2), 'seed must be an integer >= 0'),
    (dict(min_size=32), 'min_size must be an integer in [64, 512]'),
    (dict(max_size=640), 'max_size must be an integer in [64, 512]'),
    (dict(min_size=300, max_size=200), 'min_size must be <= max_size'),
])
def test_bad_arguments_raise_value_error(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')):
        ensure_embedded_dataset(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_cache_folder_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv('DYNTUNE_CACHE', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert default_cache_dir() == tmp_path / 'xdg' / 'dyntune'
    monkeypatch.setenv('DYNTUNE_CACHE', str(tmp_path / 'own'))
    assert default_cache_dir() == tmp_path / 'own'
    root = ensure_embedded_dataset(seed=2, num_train=1, num_val=1, min_size=64, max_size=64)
    assert root.parent == tmp_path / 'own'
    monkeypatch.delenv('DYNTUNE_CACHE')
    monkeypatch.delenv('XDG_CACHE_HOME')
    assert default_cache_dir() == Path.home() / '.cache' / 'dyntune'


def test_command_line_prints_the_path(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'search.data.embedded', '--seed', '7', '--out', str(tmp_path),
                          '--num-train', '2', '--num-val', '1', '--min-size', '64', '--max-size', '96'],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()) == tmp_path / 'embedded-v1-s7-2x1-64-96'
    assert (Path(out.strip()) / 'annotations' / 'val.json').is_file()
