"""Check a COCO-format detection dataset before any training starts.

Every problem is a one-line :class:`UsageError` that names the file, the offending record and the
fix; a dataset that passes builds in mmdet's ``CocoDataset`` without surprises.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from search.errors import UsageError, is_number as _is_number

IMAGE_KEYS = ('id', 'file_name', 'width', 'height')
ANNOTATION_KEYS = ('id', 'image_id', 'category_id', 'bbox')


@dataclass(frozen=True)
class DatasetInfo:
    """What the search needs to know of a checked dataset."""

    classes: tuple[str, ...]
    num_train: int
    num_val: int
    train_ann: str
    val_ann: str
    img_prefix: str


def check_dataset(root, train_ann: str, val_ann: str, img_prefix: str, decode_images: bool = True) -> DatasetInfo:
    """Check ``root``'s train and val annotation files and images; return their :class:`DatasetInfo`."""
    for key, value in (('data.root', root), ('data.train_ann', train_ann), ('data.val_ann', val_ann),
                       ('data.img_prefix', img_prefix)):
        if not isinstance(value, (str, Path)) or not str(value):
            raise UsageError(f'{key} must be a path, got {_short(value)}')
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f'dataset folder {root} does not exist: set data.root=PATH to a folder with '
                         f'{img_prefix} and {train_ann}')
    images = (root / img_prefix).resolve()
    if not images.is_dir():
        raise UsageError(f'image folder {images} does not exist: set data.img_prefix (relative to data.root)')
    train_file, val_file = (root / train_ann).resolve(), (root / val_ann).resolve()
    train_classes, num_train = check_annotation_file(train_file, images, decode_images)
    val_classes, num_val = check_annotation_file(val_file, images, decode_images)
    if train_classes != val_classes:
        raise UsageError(f'{val_file}: categories {list(val_classes)} differ from {train_file}: '
                         f'{list(train_classes)}; both splits need the same categories')
    return DatasetInfo(classes=train_classes, num_train=num_train, num_val=num_val,
                       train_ann=str(train_file), val_ann=str(val_file), img_prefix=str(images) + '/')


def check_annotation_file(path: Path, images_dir: Path, decode_images: bool = True) -> tuple[tuple[str, ...], int]:
    """Check one COCO JSON file; return (class names in category-id order, number of images)."""
    if not path.is_file():
        raise UsageError(f'annotation file {path} does not exist: set data.train_ann / data.val_ann')
    try:
        coco = json.loads(path.read_text())
    # ValueError also covers bad UTF-8 and integers too long to convert; RecursionError, nesting too deep.
    except (ValueError, RecursionError) as err:
        raise UsageError(f'{path} is not valid JSON ({err}); export the annotations as COCO JSON') from None
    if not isinstance(coco, dict):
        raise UsageError(f'{path}: a COCO file is a JSON object with images, annotations and categories')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            raise UsageError(f"{path}: missing or non-list key '{key}' (COCO needs images, annotations, categories)")
    categories = _check_categories(path, coco['categories'])
    sizes = _check_images(path, coco['images'], images_dir, decode_images)
    _check_annotations(path, coco['annotations'], sizes, set(categories))
    return tuple(categories[c] for c in sorted(categories)), len(sizes)


def _check_categories(path: Path, categories: list) -> dict[int, str]:
    if not categories:
        raise UsageError(f'{path}: no categories; a detection dataset needs at least one class')
    out: dict[int, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_int(cat.get('id')) or not isinstance(cat.get('name'), str):
            raise UsageError(f'{path}: categories[{i}] needs an integer id and a string name, got {_short(cat)}')
        if cat['id'] in out:
            raise UsageError(f"{path}: category id {cat['id']} appears twice")
        out[cat['id']] = cat['name']
    if len(set(out.values())) != len(out):
        raise UsageError(f'{path}: category names repeat; each class needs its own name')
    return out


def _check_images(path: Path, images: list, images_dir: Path, decode: bool) -> dict[int, tuple[float, float]]:
    if not images:
        raise UsageError(f'{path}: the dataset is empty (no images)')
    sizes: dict[int, tuple[float, float]] = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict) or any(k not in img for k in IMAGE_KEYS):
            raise UsageError(f'{path}: images[{i}] needs keys {list(IMAGE_KEYS)}, got {_short(img)}')
        if not _is_int(img['id']) or not isinstance(img['file_name'], str) or not img['file_name']:
            raise UsageError(f'{path}: images[{i}] needs an integer id and a file_name string, got {_short(img)}')
        if not (_is_number(img['width']) and _is_number(img['height']) and img['width'] > 0 and img['height'] > 0):
            raise UsageError(f"{path}: image {img['id']} has width/height {img['width']}x{img['height']}; need > 0")
        if img['id'] in sizes:
            raise UsageError(f"{path}: image id {img['id']} appears twice")
        file = images_dir / img['file_name']
        if not _is_file(file):
            raise UsageError(f"{path}: image {img['id']} file {file} does not exist; check data.img_prefix")
        if decode:
            _check_decodes(path, img, file)
        sizes[img['id']] = (float(img['width']), float(img['height']))
    return sizes


def _check_decodes(path: Path, img: dict, file: Path) -> None:
    from PIL import Image

    try:
        with Image.open(file) as handle:
            handle.verify()
            width, height = handle.size
    except Exception as err:  # a corrupt file can fail inside any of PIL's decoders, with any error type
        raise UsageError(f"{path}: image {img['id']} file {file} does not decode ({type(err).__name__})") from None
    if (width, height) != (img['width'], img['height']):
        raise UsageError(f"{path}: image {img['id']} is {width}x{height} on disk but {img['width']}x{img['height']} "
                         'in the JSON; fix width/height')


def _check_annotations(path: Path, annotations: list, sizes: dict, category_ids: set) -> None:
    seen: set[int] = set()
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or any(k not in ann for k in ANNOTATION_KEYS):
            raise UsageError(f'{path}: annotations[{i}] needs keys {list(ANNOTATION_KEYS)}, got {_short(ann)}')
        if not all(_is_int(ann[k]) for k in ('id', 'image_id', 'category_id')):
            raise UsageError(f'{path}: annotations[{i}] needs integer id, image_id and category_id, got {_short(ann)}')
        if ann['id'] in seen:
            raise UsageError(f"{path}: annotation id {ann['id']} appears twice; annotation ids must be unique")
        seen.add(ann['id'])
        if ann['image_id'] not in sizes:
            raise UsageError(f"{path}: annotation {ann['id']} refers to unknown image_id {ann['image_id']}")
        if ann['category_id'] not in category_ids:
            raise UsageError(f"{path}: annotation {ann['id']} has unknown category_id {ann['category_id']}; "
                             f'known: {sorted(category_ids)}')
        bbox = ann['bbox']
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise UsageError(f"{path}: annotation {ann['id']} bbox must be [x, y, width, height] numbers, got {_short(bbox)}")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            raise UsageError(f"{path}: annotation {ann['id']} has a zero-size box {bbox}; remove it or fix its size")
        width, height = sizes[ann['image_id']]
        tol = 1.0  # annotation tools round to whole pixels
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            raise UsageError(f"{path}: annotation {ann['id']} box {bbox} lies outside its {width:g}x{height:g} image "
                             f"{ann['image_id']}; clip or remove it")
        # mmdet's CocoDataset reads 'area' (and silently skips boxes whose area is not positive);
        # COCO evaluation sorts boxes into small/medium/large by it.
        area = ann.get('area')
        if not (_is_number(area) and area > 0):
            raise UsageError(f"{path}: annotation {ann['id']} needs an 'area' number > 0, got {_short(area)}; "
                             'set it to the box width * height')
        if ann.get('iscrowd', 0) not in (0, 1):
            raise UsageError(f"{path}: annotation {ann['id']} has iscrowd={_short(ann['iscrowd'])}; use 0 or 1")
    if not seen:
        raise UsageError(f'{path}: no annotations; a detector needs labelled boxes to train and evaluate')


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_file(file: Path) -> bool:
    try:
        return file.is_file()
    except OSError:  # e.g. a file_name longer than the file system allows
        return False


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'
