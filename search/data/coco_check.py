"""Check a COCO-format detection dataset before any training starts.

Every problem is a one-line :class:`UsageError` that names the file, the offending record and the
fix; a dataset that passes builds in mmdet's ``CocoDataset`` without surprises. Each image is
decoded by the function training decodes it with (:mod:`search.data.decoded_images`), so sizes
are compared with what training sees (EXIF orientation applied) and a file training could not load
stops the search here; the sizes of files that decoded are cached, so a second check of unchanged
files decodes nothing.

:func:`median_object_size` and :func:`object_size_warning` tell, from a checked annotation file,
how large the objects are after mmdet's keep-ratio ``Resize``.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from search.errors import UsageError, is_number as _is_number

IMAGE_KEYS = ('id', 'file_name', 'width', 'height')
ANNOTATION_KEYS = ('id', 'image_id', 'category_id', 'bbox')
DEFAULT_TEST_ANN = 'annotations/test.json'
# How many bad files one message names; it counts all of them.
NAMED_FILES = 3
# Below this median object size (px, after the resize) a warning suggests a larger img_scale ...
SMALL_OBJECT_PX = 8.0
# ... that brings the median to about this size.
TARGET_OBJECT_PX = 16.0


@dataclass(frozen=True)
class DatasetInfo:
    """What the search needs to know of a checked dataset (annotation paths absolute)."""

    classes: tuple[str, ...]
    num_train: int
    num_val: int
    train_ann: str
    val_ann: str
    img_prefix: str
    test_ann: str | None = None
    num_test: int = 0


def check_dataset(root, train_ann: str, val_ann: str, img_prefix: str, test_ann: str | None = None,
                  decode_images: bool = True) -> DatasetInfo:
    """Check ``root``'s train, val and (optional) test annotation files and images.

    ``test_ann`` None means ``annotations/test.json`` when that file exists (and is not the train
    or val file), else no test split; a ``test_ann`` given must exist. All splits share the image
    folder ``img_prefix`` and need the same categories. With ``decode_images`` every image is
    decoded as training decodes it (through the cache of :mod:`search.data.decoded_images`).
    """
    for key, value in (('data.root', root), ('data.train_ann', train_ann), ('data.val_ann', val_ann),
                       ('data.img_prefix', img_prefix), ('data.test_ann', test_ann)):
        if value is None and key == 'data.test_ann':
            continue
        if not isinstance(value, (str, Path)) or not str(value):
            raise UsageError(f'{key} must be a path, got {_short(value)}')
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f'dataset folder {root} does not exist: set data.root=PATH to a folder with '
                         f'{img_prefix} and {train_ann}')
    images = (root / img_prefix).resolve()
    if not images.is_dir():
        raise UsageError(f'image folder {images} does not exist: set data.img_prefix (relative to data.root)')
    splits = {'train': (root / train_ann).resolve(), 'val': (root / val_ann).resolve()}
    for split, file in splits.items():
        if not file.is_file():
            raise UsageError(f'annotation file {file} does not exist: set data.{split}_ann (relative to data.root)')
    if test_ann is not None:
        splits['test'] = (root / test_ann).resolve()
        if not splits['test'].is_file():
            raise UsageError(f"test annotation file {splits['test']} does not exist: set data.test_ann (relative to "
                             f'data.root) to a COCO file, or leave it unset')
    elif (root / DEFAULT_TEST_ANN).is_file() and (root / DEFAULT_TEST_ANN).resolve() not in splits.values():
        splits['test'] = (root / DEFAULT_TEST_ANN).resolve()
    cache = _decode_cache(images) if decode_images else None
    checked = {split: check_annotation_file(file, images, decode_images, cache=cache) for split, file in splits.items()}
    classes = checked['train'][0]
    for split in ('val', 'test'):
        if split in checked and checked[split][0] != classes:
            raise UsageError(f'{splits[split]}: categories {list(checked[split][0])} differ from {splits["train"]}: '
                             f'{list(classes)}; all splits need the same categories')
    return DatasetInfo(classes=classes, num_train=checked['train'][1], num_val=checked['val'][1],
                       train_ann=str(splits['train']), val_ann=str(splits['val']), img_prefix=str(images) + '/',
                       test_ann=str(splits['test']) if 'test' in splits else None,
                       num_test=checked['test'][1] if 'test' in checked else 0)


def check_annotation_file(path: Path, images_dir: Path, decode_images: bool = True,
                          cache=None) -> tuple[tuple[str, ...], int]:
    """Check one COCO JSON file and its images; return (class names in category-id order, number of images).

    Usable on its own for any annotation file and image folder (e.g. the datasets of a user's mmdet
    config). ``cache`` is a :class:`search.data.decoded_images.DecodeCache` shared by several calls;
    None opens the one of ``images_dir``.
    """
    path, images_dir = Path(path), Path(images_dir)
    if not path.is_file():
        raise UsageError(f'annotation file {path} does not exist')
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
    sizes = _check_image_records(path, coco['images'])
    files = _check_files_exist(path, coco['images'], images_dir)
    if decode_images:
        _check_decoded_sizes(path, coco['images'], files, cache if cache is not None else _decode_cache(images_dir))
    _check_annotations(path, coco['annotations'], sizes, set(categories))
    return tuple(categories[c] for c in sorted(categories)), len(sizes)


def median_object_size(ann_file: Path, img_scale: tuple[int, int]) -> float | None:
    """The median of sqrt(w * h) over the boxes of ``ann_file`` after mmdet's keep-ratio resize.

    Each image is resized as ``Resize(img_scale=img_scale, keep_ratio=True)`` does
    (``mmcv.rescale_size``: scale factor min(max(img_scale) / max(h, w), min(img_scale) / min(h, w))),
    and each box with the image's own width and height factors. Crowd boxes (iscrowd=1) are left out,
    as training ignores them. None when the file has no other box. The file must have passed
    :func:`check_annotation_file`.
    """
    from search.data.decoded_images import _mmcv

    rescale_size = _mmcv().rescale_size
    coco = json.loads(Path(ann_file).read_text())
    scale = tuple(int(v) for v in img_scale)
    factors = {}
    for img in coco['images']:
        width, height = img['width'], img['height']
        new_width, new_height = rescale_size((width, height), scale)
        factors[img['id']] = (new_width / width, new_height / height)
    sizes = []
    for ann in coco['annotations']:
        if ann.get('iscrowd', 0):
            continue
        w_scale, h_scale = factors[ann['image_id']]
        sizes.append(math.sqrt(ann['bbox'][2] * w_scale * ann['bbox'][3] * h_scale))
    return statistics.median(sizes) if sizes else None


def object_size_warning(ann_file: Path, img_scale: tuple[int, int]) -> str | None:
    """One warning line when the median object is below 8 px after resizing to ``img_scale``, else None.

    The line gives the median and an ``img_scale`` of the same aspect that brings it to about 16 px.
    """
    median = median_object_size(ann_file, img_scale)
    if median is None or median >= SMALL_OBJECT_PX:
        return None
    factor = TARGET_OBJECT_PX / median
    larger = tuple(int(round(v * factor)) for v in img_scale)
    return (f'{ann_file}: the median object is {median:.1f} px (sqrt of box width x height) after resizing to '
            f'img_scale={tuple(img_scale)}, below {SMALL_OBJECT_PX:g} px (the stride of an FPN\'s finest level); '
            f'img_scale={larger} makes it about {TARGET_OBJECT_PX:g} px')


def _decode_cache(images_dir: Path):
    from search.data.decoded_images import DecodeCache

    return DecodeCache.for_folder(images_dir)


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


def _check_image_records(path: Path, images: list) -> dict[int, tuple[float, float]]:
    """Check each image record's keys and values; return {image id: (width, height)} of the JSON."""
    if not images:
        raise UsageError(f'{path}: the dataset is empty (no images)')
    sizes: dict[int, tuple[float, float]] = {}
    for i, img in enumerate(images):
        _require_keys(path, f'images[{i}]', img, IMAGE_KEYS)
        if not _is_int(img['id']) or not isinstance(img['file_name'], str) or not img['file_name']:
            raise UsageError(f'{path}: images[{i}] needs an integer id and a file_name string, got {_short(img)}')
        if not (_is_number(img['width']) and _is_number(img['height']) and img['width'] > 0 and img['height'] > 0):
            raise UsageError(f"{path}: image {img['id']} has width/height {img['width']}x{img['height']}; need > 0")
        if img['id'] in sizes:
            raise UsageError(f"{path}: image id {img['id']} appears twice")
        sizes[img['id']] = (float(img['width']), float(img['height']))
    return sizes


def _check_files_exist(path: Path, images: list, images_dir: Path) -> list[Path]:
    """The image files of ``images`` (checked records), in order; all missing ones named in one error."""
    files = [images_dir / img['file_name'] for img in images]
    missing = [(img, file) for img, file in zip(images, files) if not _is_file(file)]
    if len(missing) == 1:
        img, file = missing[0]
        raise UsageError(f"{path}: image {img['id']} file {file} does not exist; check data.img_prefix")
    if missing:
        raise UsageError(f'{path}: {len(missing)} of {len(images)} image files do not exist: '
                         f'{_name_files(missing, "")}; check data.img_prefix')
    return files


def _check_decoded_sizes(path: Path, images: list, files: list[Path], cache) -> None:
    """Decode every image as training does (cached); refuse files that do not load, then sizes that differ."""
    decoded, failures = cache.decode_all(files)
    cache.save()  # what decoded is worth keeping even when this file is refused
    if failures:
        bad = [(img, file) for img, file in zip(images, files) if file in failures]
        raise UsageError(f'{path}: {len(bad)} of {len(images)} images fail to load the way training loads them '
                         f'(mmcv.imfrombytes): {_name_files(bad, failures)}; re-export or remove them')
    wrong = [(img, file) for img, file in zip(images, files) if decoded[file] != (img['width'], img['height'])]
    if not wrong:
        return
    img, file = wrong[0]
    width, height = decoded[file]
    more = f' ({len(wrong)} of {len(images)} images differ)' if len(wrong) > 1 else ''
    raise UsageError(f"{path}: image {img['id']} file {file} is {width}x{height} (width x height) as training loads "
                     f"it but {img['width']}x{img['height']} in the JSON; set width/height to {width}x{height}"
                     f'{_orientation_note(file, (width, height))}{more}')


def _orientation_note(file: Path, decoded: tuple[int, int]) -> str:
    """Why the decoded size differs from the stored one (an EXIF orientation), or ''."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            stored, orientation = image.size, image.getexif().get(0x0112)
    except Exception:  # only an explanation; the size check itself stands without it
        return ''
    if stored == decoded or orientation is None:
        return ''
    return (f' and give its boxes in that orientation (training turns the stored {stored[0]}x{stored[1]} pixels by '
            f'their EXIF orientation {orientation})')


def _name_files(bad: list, reasons) -> str:
    """'image 3 file /x/a.jpg does not decode, ...' for the first few of ``bad``, then how many more."""
    named = [f"image {img['id']} file {file}" + (f' {reasons[file]}' if reasons else '')
             for img, file in bad[:NAMED_FILES]]
    return ', '.join(named) + (f' and {len(bad) - NAMED_FILES} more' if len(bad) > NAMED_FILES else '')


def _require_keys(path: Path, where: str, record, keys: tuple[str, ...]) -> None:
    """Refuse a record that is not an object or lacks some of ``keys``, naming the missing ones."""
    needed = ', '.join(repr(k) for k in keys)
    if not isinstance(record, dict):
        raise UsageError(f'{path}: {where} must be an object with keys {needed}, got {_short(record)}')
    missing = [k for k in keys if k not in record]
    if missing:
        hint = (" (a segmentation alone is not enough: mmdet trains on 'bbox' [x, y, width, height])"
                if 'bbox' in missing and 'segmentation' in record else '')
        raise UsageError(f"{path}: {where} has no {', '.join(repr(k) for k in missing)}{hint}; "
                         f'each needs {needed}')


def _check_annotations(path: Path, annotations: list, sizes: dict, category_ids: set) -> None:
    seen: set[int] = set()
    for i, ann in enumerate(annotations):
        _require_keys(path, f'annotations[{i}]', ann, ANNOTATION_KEYS)
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
