"""The dataset check sees each image as training loads it: EXIF orientation, truncated files, the cache.

Also the optional test split and the median object size after mmdet's resize. The malformed-JSON
cases are in tests/test_bad_input.py; generated ones in tests/test_bad_input_property.py.
"""
import io
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import search.data.decoded_images as decoded_images
from search.data.coco_check import (check_annotation_file, check_dataset, median_object_size,
                                    object_size_warning)
from search.data.decoded_images import DecodeCache, _mmcv
from search.errors import UsageError

ORIENTATION = 0x0112  # the EXIF tag
# Stored 40x30 (width x height); tags 5-8 transpose, so training sees 30x40.
STORED = (40, 30)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test's decode cache lives in its own folder."""
    monkeypatch.setenv('DYNTUNE_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def jpeg(size=STORED, orientation=None, seed=0) -> bytes:
    """A JPEG of ``size`` (width, height) with a bright top-left corner, optionally an EXIF orientation."""
    width, height = size
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 60).astype(np.uint8)
    pixels[:height // 3, :width // 3] = 255
    out = io.BytesIO()
    extra = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        extra['exif'] = exif.tobytes()
    Image.fromarray(pixels).save(out, 'JPEG', quality=95, **extra)
    return out.getvalue()


def coco(images, boxes=None, categories=('plane',)) -> dict:
    """A COCO dict: ``images`` as (file name, width, height); by default one box in each image's corner."""
    records = [dict(id=i + 1, file_name=name, width=w, height=h) for i, (name, w, h) in enumerate(images)]
    if boxes is None:
        boxes = [(i + 1, [0, 0, w - 1, h - 1]) for i, (_, w, h) in enumerate(images)]
    annotations = [dict(id=k + 1, image_id=image_id, category_id=1, bbox=box, area=float(box[2] * box[3]), iscrowd=0)
                   for k, (image_id, box) in enumerate(boxes)]
    return dict(images=records, annotations=annotations,
                categories=[dict(id=i + 1, name=name) for i, name in enumerate(categories)])


def write_data(root: Path, files: dict, train: dict, val: dict | None = None, test: dict | None = None,
               age_s: float = 60.0) -> Path:
    """``root`` with ``images/`` holding ``files`` (name -> bytes), modified ``age_s`` ago, and the splits."""
    (root / 'images').mkdir(parents=True, exist_ok=True)
    (root / 'annotations').mkdir(exist_ok=True)
    for name, content in files.items():
        (root / 'images' / name).write_bytes(content)
        age(root / 'images' / name, age_s)
    for split, content in (('train', train), ('val', val if val is not None else train), ('test', test)):
        if content is not None:
            (root / 'annotations' / f'{split}.json').write_text(json.dumps(content))
    return root


def age(file: Path, seconds: float) -> None:
    """Set a file's modification time ``seconds`` back: the cache keeps only files not modified just now."""
    then = time.time() - seconds
    os.utime(file, (then, then))


def check(root: Path, **kwargs):
    return check_dataset(root, 'annotations/train.json', 'annotations/val.json', 'images/', **kwargs)


def refusal(root: Path, **kwargs) -> str:
    with pytest.raises(UsageError) as err:
        check(root, **kwargs)
    message = str(err.value)
    assert message and '\n' not in message
    return message


@pytest.fixture
def count_decodes(monkeypatch):
    """Count the files the check decodes (the real decoder still runs)."""
    decoded = []
    real = decoded_images.decoded_size

    def counting(file):
        decoded.append(Path(file).name)
        return real(file)

    monkeypatch.setattr(decoded_images, 'decoded_size', counting)
    return decoded


# -- EXIF orientation --------------------------------------------------------------------------------

def training_size(orientation: int) -> tuple[int, int]:
    return STORED[::-1] if orientation >= 5 else STORED


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_measured_as_training_loads_the_image(orientation, tmp_path):
    content = jpeg(orientation=orientation)
    decoded = _mmcv().imfrombytes(content, flag='color', channel_order='bgr')
    # The premise: training's decoder turns the image the way a viewer shows it (PIL's exif_transpose).
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(content))).convert('L'))
    assert decoded.shape[:2] == shown.shape == training_size(orientation)[::-1]
    assert ((decoded.mean(axis=2) > 128) == (shown > 128)).mean() > 0.97  # the bright corner lands alike
    width, height = training_size(orientation)
    # A box as tall as the shown image: outside the stored image for tags 5-8.
    root = write_data(tmp_path / 'data', {'a.jpg': content},
                      coco([('a.jpg', width, height)], boxes=[(1, [1, 0, width - 2, height])]))
    info = check(root)
    assert info.num_train == 1 and info.classes == ('plane',)


@pytest.mark.parametrize('orientation', range(5, 9))
def test_exif_turned_image_given_its_stored_size_is_refused_with_the_size_training_sees(orientation, tmp_path):
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg(orientation=orientation)}, coco([('a.jpg', *STORED)]))
    message = refusal(root)
    assert ('image 1 file ' in message and 'a.jpg is 30x40 (width x height) as training loads it but 40x30 in the '
            'JSON; set width/height to 30x40 and give its boxes in that orientation' in message)
    assert f'the stored 40x30 pixels by their EXIF orientation {orientation}' in message


def test_size_mismatch_without_exif_names_no_orientation(tmp_path):
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg(), 'b.jpg': jpeg()},
                      coco([('a.jpg', 41, 30), ('b.jpg', 40, 31)]))
    message = refusal(root)
    assert 'a.jpg is 40x30 (width x height) as training loads it but 41x30' in message
    assert 'EXIF' not in message and '(2 of 2 images differ)' in message


# -- truncated and corrupt files ---------------------------------------------------------------------

@pytest.mark.parametrize('fraction', [0.5, 0.8, 0.95])
def test_training_decoder_returns_none_for_a_cut_jpeg(fraction):
    """The pinned OpenCV returns None for a cut file (mmdet then fails on None.shape); older ones did not."""
    content = jpeg((160, 120))
    assert _mmcv().imfrombytes(content) is not None
    assert _mmcv().imfrombytes(content[:int(len(content) * fraction)]) is None


def test_a_jpeg_missing_only_its_end_marker_decodes_to_the_whole_image():
    """Why a file the decoder accepts is not refused: cut by 1-2 bytes it is None or the same pixels."""
    whole_or_none = []
    for seed in range(40):
        content = jpeg((23, 17), seed=seed)
        whole = _mmcv().imfrombytes(content)
        for cut in (1, 2):
            decoded = _mmcv().imfrombytes(content[:-cut])
            whole_or_none.append(decoded is None or np.array_equal(decoded, whole))
    assert all(whole_or_none)


@pytest.mark.parametrize('fraction', [0.5, 0.8, 0.95])
def test_truncated_jpeg_is_refused_naming_the_file(fraction, tmp_path):
    content = jpeg()
    root = write_data(tmp_path / 'data', {'a.jpg': content, 'b.jpg': content[:int(len(content) * fraction)]},
                      coco([('a.jpg', *STORED), ('b.jpg', *STORED)]))
    message = refusal(root)
    assert message.startswith(str(root / 'annotations' / 'train.json'))
    assert ('1 of 2 images fail to load the way training loads them (mmcv.imfrombytes): image 2 file '
            f"{root / 'images' / 'b.jpg'} does not decode (truncated or corrupt); re-export or remove them") in message


def test_all_bad_files_of_a_split_are_counted_and_the_first_few_named(tmp_path):
    content = jpeg()
    files = {f'{i}.jpg': content if i in (0, 4) else content[:len(content) // 2] for i in range(7)}
    files['5.jpg'] = b''  # OpenCV raises on an empty buffer instead of returning None
    root = write_data(tmp_path / 'data', files, coco([(name, *STORED) for name in files]))
    message = refusal(root)
    assert '5 of 7 images fail to load' in message and message.count(' does not decode') == 3
    assert all(f'{i}.jpg' in message for i in (1, 2, 3)) and 'and 2 more' in message


def test_a_bad_file_only_in_the_test_split_is_refused(tmp_path):
    content = jpeg()
    root = write_data(tmp_path / 'data', {'a.jpg': content, 'cut.jpg': content[:600]}, coco([('a.jpg', *STORED)]),
                      test=coco([('cut.jpg', *STORED)]))
    message = refusal(root)
    assert message.startswith(str(root / 'annotations' / 'test.json')) and 'cut.jpg does not decode' in message


def test_truncated_png_leaves_stderr_to_the_one_line(tmp_path, capfd):
    png = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(png, 'PNG')
    root = write_data(tmp_path / 'data', {'a.png': png.getvalue()[:-4]}, coco([('a.png', *STORED)]))
    _mmcv()
    capfd.readouterr()
    assert 'does not decode' in refusal(root)
    assert capfd.readouterr().err == ''  # libpng's own "PNG input buffer is incomplete" is silenced


def test_missing_files_are_named_together(tmp_path):
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg()},
                      coco([('a.jpg', *STORED), ('x.jpg', *STORED), ('y.jpg', *STORED)]))
    message = refusal(root)
    assert '2 of 3 image files do not exist: image 2 file ' in message and 'y.jpg; check data.img_prefix' in message


# -- the cache of decoded sizes ------------------------------------------------------------------------

def test_second_check_decodes_nothing_and_a_touched_file_is_decoded_again(tmp_path, own_cache, count_decodes):
    files = {f'{i}.jpg': jpeg(seed=i) for i in range(3)}
    root = write_data(tmp_path / 'data', files, coco([(name, *STORED) for name in files]))
    check(root)
    assert sorted(count_decodes) == ['0.jpg', '1.jpg', '2.jpg']  # train and val share the images: once each
    assert len(list((own_cache / 'image-checks').glob('*.json'))) == 1
    count_decodes.clear()
    check(root)
    assert count_decodes == []
    age(root / 'images' / '1.jpg', 30)  # another mtime, same content
    check(root)
    assert count_decodes == ['1.jpg']


def test_a_cached_file_that_is_then_cut_is_refused(tmp_path):
    content = jpeg()
    root = write_data(tmp_path / 'data', {'a.jpg': content}, coco([('a.jpg', *STORED)]))
    check(root)
    (root / 'images' / 'a.jpg').write_bytes(content[:len(content) // 2])
    age(root / 'images' / 'a.jpg', 60)
    assert 'a.jpg does not decode' in refusal(root)


def test_a_file_modified_just_now_is_not_cached(tmp_path, count_decodes):
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg()}, coco([('a.jpg', *STORED)]), age_s=0)
    check(root)
    check(root)
    assert count_decodes == ['a.jpg', 'a.jpg']  # once per check (train and val share it), never from disk


@pytest.mark.parametrize('garbage', [b'{"format": 1, "decod', b'\xff\xfe', b'[]', b'{"format": 1, "images": 7}'])
def test_a_corrupt_cache_is_ignored_and_rewritten(garbage, tmp_path, own_cache, count_decodes):
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg()}, coco([('a.jpg', *STORED)]))
    check(root)
    (cache_file,) = (own_cache / 'image-checks').glob('*.json')
    cache_file.write_bytes(garbage)
    count_decodes.clear()
    check(root)
    assert count_decodes == ['a.jpg']
    stat = (root / 'images' / 'a.jpg').stat()
    saved = json.loads(cache_file.read_text())
    assert saved['images'] == {str(root / 'images' / 'a.jpg'): [stat.st_size, stat.st_mtime_ns, *STORED]}
    count_decodes.clear()
    check(root)
    assert count_decodes == []


def test_cache_entries_with_a_wrong_size_are_not_trusted(tmp_path, own_cache):
    """An entry is trusted only for the same byte size and mtime: a cache from another copy of a file is not."""
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg()}, coco([('a.jpg', *STORED)]))
    cache = DecodeCache.for_folder(root / 'images')
    cache._entries[str(root / 'images' / 'a.jpg')] = [1, 1, 99, 99]
    sizes, failures = cache.decode_all([root / 'images' / 'a.jpg'])
    assert sizes == {root / 'images' / 'a.jpg': STORED} and failures == {}


def test_a_read_only_cache_folder_costs_only_the_cache(tmp_path, own_cache, monkeypatch):
    own_cache.mkdir()
    (own_cache / 'image-checks').write_text('a file where the folder should be')
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg()}, coco([('a.jpg', *STORED)]))
    assert check(root).num_train == 1


def test_check_annotation_file_alone(tmp_path, count_decodes):
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg(), 'b.jpg': jpeg(seed=1)},
                      coco([('a.jpg', *STORED), ('b.jpg', *STORED)], categories=('plane', 'tank')))
    assert check_annotation_file(root / 'annotations' / 'train.json', root / 'images') == (('plane', 'tank'), 2)
    assert check_annotation_file(root / 'annotations' / 'val.json', root / 'images') == (('plane', 'tank'), 2)
    assert sorted(count_decodes) == ['a.jpg', 'b.jpg']
    with pytest.raises(UsageError, match='annotation file .*nope.json does not exist'):
        check_annotation_file(root / 'annotations' / 'nope.json', root / 'images')


# -- missing keys --------------------------------------------------------------------------------------

def test_segmentation_without_bbox_names_the_missing_key(tmp_path):
    data = coco([('a.jpg', *STORED)])
    data['annotations'][0] = dict(id=1, image_id=1, category_id=1, segmentation=[[0, 0, 5, 0, 5, 5]], area=12.5)
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg()}, data)
    message = refusal(root)
    assert ("annotations[0] has no 'bbox' (a segmentation alone is not enough: mmdet trains on 'bbox' "
            "[x, y, width, height]); each needs 'id', 'image_id', 'category_id', 'bbox'") in message


def test_image_missing_two_keys_names_both(tmp_path):
    data = coco([('a.jpg', *STORED)])
    del data['images'][0]['width'], data['images'][0]['height']
    root = write_data(tmp_path / 'data', {'a.jpg': jpeg()}, data)
    assert "images[0] has no 'width', 'height'; each needs 'id', 'file_name', 'width', 'height'" in refusal(root)


# -- the test split ------------------------------------------------------------------------------------

@pytest.fixture
def three_splits(tmp_path):
    files = {f'{i}.jpg': jpeg(seed=i) for i in range(4)}
    return write_data(tmp_path / 'data', files, coco([('0.jpg', *STORED), ('1.jpg', *STORED)]),
                      val=coco([('2.jpg', *STORED)]), test=coco([('2.jpg', *STORED), ('3.jpg', *STORED)]))


def test_annotations_test_json_is_the_test_split_when_present(three_splits):
    info = check(three_splits)
    assert (info.num_train, info.num_val, info.num_test) == (2, 1, 2)
    assert info.test_ann == str(three_splits / 'annotations' / 'test.json')


def test_no_test_split_without_the_file(three_splits):
    (three_splits / 'annotations' / 'test.json').unlink()
    info = check(three_splits)
    assert info.test_ann is None and info.num_test == 0


def test_a_test_json_that_is_the_val_split_is_not_a_second_split(three_splits):
    info = check_dataset(three_splits, 'annotations/train.json', 'annotations/test.json', 'images/')
    assert info.test_ann is None and info.num_val == 2


def test_a_given_test_split(three_splits):
    (three_splits / 'annotations' / 'test.json').rename(three_splits / 'annotations' / 'holdout.json')
    info = check(three_splits, test_ann='annotations/holdout.json')
    assert info.test_ann == str(three_splits / 'annotations' / 'holdout.json') and info.num_test == 2


@pytest.mark.parametrize('test_ann, message', [
    ('annotations/holdout.json', 'test annotation file {root}/annotations/holdout.json does not exist: set '
                                 'data.test_ann (relative to data.root) to a COCO file, or leave it unset'),
    ('', 'data.test_ann must be a path'),
    (3, 'data.test_ann must be a path, got 3'),
])
def test_a_given_test_split_that_is_not_there(test_ann, message, three_splits):
    assert message.format(root=three_splits) in refusal(three_splits, test_ann=test_ann)


def test_test_split_needs_the_same_categories(three_splits):
    (three_splits / 'annotations' / 'test.json').write_text(json.dumps(coco([('3.jpg', *STORED)],
                                                                            categories=('car',))))
    message = refusal(three_splits)
    assert "test.json: categories ['car'] differ from" in message and 'all splits need the same categories' in message


# -- object size after the resize ----------------------------------------------------------------------

def write_boxes(path: Path, images, boxes) -> Path:
    """An annotation file (sizes only: median_object_size reads no image) of ``boxes`` (image id, w, h, crowd)."""
    data = coco(images, boxes=[(image_id, [0, 0, w, h]) for image_id, w, h, _ in boxes])
    for ann, (*_, crowd) in zip(data['annotations'], boxes):
        ann['iscrowd'] = crowd
    path.write_text(json.dumps(data))
    return path


def test_median_object_size_follows_mmdet_keep_ratio_resize(tmp_path):
    # img_scale (1333, 800): 1000x500 -> factor min(1333/1000, 800/500) = 1.333 -> 1333x667;
    # 200x400 -> min(1333/400, 800/200) = 3.3325 -> 667x1333. A crowd box is ignored, as in training.
    ann = write_boxes(tmp_path / 'a.json', [('a.jpg', 1000, 500), ('b.jpg', 200, 400)],
                      [(1, 4, 4, 0), (1, 6, 6, 0), (2, 3, 12, 0), (2, 500, 500, 1)])
    sizes = sorted([np.sqrt(4 * 1333 / 1000 * 4 * 667 / 500), np.sqrt(6 * 1333 / 1000 * 6 * 667 / 500),
                    np.sqrt(3 * 667 / 200 * 12 * 1333 / 400)])
    assert median_object_size(ann, (1333, 800)) == pytest.approx(sizes[1])
    assert median_object_size(ann, (800, 1333)) == pytest.approx(sizes[1])  # the order of img_scale does not matter


def test_small_objects_give_one_warning_with_a_larger_img_scale(tmp_path):
    ann = write_boxes(tmp_path / 'small.json', [('a.jpg', 1000, 600)], [(1, 5, 5, 0)] * 3 + [(1, 9, 9, 0)])
    median = median_object_size(ann, (640, 480))  # factor 0.64
    assert median == pytest.approx(5 * 0.64, rel=1e-3)
    warning = object_size_warning(ann, (640, 480))
    assert warning is not None and '\n' not in warning and 'the median object is 3.2 px' in warning
    larger = tuple(int(v) for v in re.search(r'img_scale=\((\d+), (\d+)\) makes it about 16 px', warning).groups())
    assert larger[0] / larger[1] == pytest.approx(640 / 480, rel=1e-2)
    assert median_object_size(ann, larger) == pytest.approx(16, abs=0.5)
    assert object_size_warning(ann, larger) is None


def test_objects_of_8_px_and_more_give_no_warning(tmp_path):
    ann = write_boxes(tmp_path / 'large.json', [('a.jpg', 640, 480)], [(1, 8, 8, 0), (1, 30, 20, 0), (1, 7, 7, 0)])
    assert median_object_size(ann, (640, 480)) == pytest.approx(8)
    assert object_size_warning(ann, (640, 480)) is None
    assert object_size_warning(ann, (320, 240)) is not None  # the same boxes at half the size: 4 px
