"""Built-in synthetic detection dataset (``data=embedded``), written once as COCO JSON into the user's cache.

Aerial-looking scenes: real scikit-image textures (grass, gravel, brick, lunar soil) as ground, roads, tree
clumps and building roofs as clutter, and three object classes seen from above (``plane``, ``vehicle``,
``storage-tank``) whose longer side spans 8 px to 128 px. The layout is the one of every real dataset the
search accepts (``ROOT/images/*.jpg``, ``ROOT/annotations/{train,val}.json``), so ``data=coco data.root=PATH``
swaps it for real data without other changes.

Example:

    >>> from search.data.embedded import CLASSES, ensure_embedded_dataset
    >>> root = ensure_embedded_dataset(num_train=16, num_val=8, min_size=128, max_size=160)
    >>> sorted(p.name for p in (root / 'annotations').iterdir())
    ['train.json', 'val.json']
"""
import argparse
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata
from skimage import draw
from skimage.filters import gaussian

__all__ = ['CLASSES', 'FORMAT_VERSION', 'default_cache_dir', 'ensure_embedded_dataset']

# Bump when the generated content changes, so caches of an older generator are never reused.
FORMAT_VERSION = 1
CLASSES = ('plane', 'vehicle', 'storage-tank')
MAX_IMAGE_SIZE = 512
MIN_IMAGE_SIZE = 64
# Longer side in pixels, per class; together they span 8 px to 128 px (4 octaves).
_SIZE_RANGE = {'plane': (16, 128), 'vehicle': (8, 32), 'storage-tank': (10, 96)}
_MAX_OBJECTS = 12
# An object placed on top of another may hide at most this fraction of it: no total occlusion.
_MAX_HIDDEN = 0.2
_JPEG_QUALITY = 92

# Grey textures and the ground colour each is tinted with (RGB multipliers).
_TEXTURES = {
    'grass': (0.55, 0.68, 0.38),
    'gravel': (0.78, 0.74, 0.68),
    'brick': (0.80, 0.58, 0.48),
    'moon': (0.86, 0.80, 0.64),
}
_VEHICLE_COLOURS = np.array([
    (0.85, 0.10, 0.10), (0.10, 0.25, 0.85), (0.95, 0.85, 0.10), (0.97, 0.97, 0.97), (0.05, 0.05, 0.07),
    (0.10, 0.60, 0.20), (0.95, 0.50, 0.05),
])
_ROOF_COLOURS = np.array([(0.45, 0.30, 0.25), (0.50, 0.50, 0.52), (0.35, 0.20, 0.18), (0.60, 0.55, 0.45)])


def default_cache_dir():
    """Return the folder DynTune caches generated data in.

    ``$DYNTUNE_CACHE`` when set, else ``$XDG_CACHE_HOME/dyntune``, else ``~/.cache/dyntune``.
    """
    if os.environ.get('DYNTUNE_CACHE'):
        return Path(os.environ['DYNTUNE_CACHE']).expanduser()
    if os.environ.get('XDG_CACHE_HOME'):
        return Path(os.environ['XDG_CACHE_HOME']).expanduser() / 'dyntune'
    return Path.home() / '.cache' / 'dyntune'


def ensure_embedded_dataset(cache_dir=None, *, seed=0, num_train=300, num_val=100, min_size=256, max_size=384):
    """Generate the synthetic dataset once and return its root folder.

    The folder name encodes the format version and every argument (``embedded-v1-s0-300x100-256-384``), so
    different arguments never share a folder, and a second call returns at once. Generation writes into a
    temporary sibling folder and renames it into place, so processes starting together (several Ray trials)
    never read a half-written dataset; a lock file makes the later ones wait instead of generating again.

    Args:
        cache_dir (str | Path | None): Folder that holds the dataset folders. Default: ``None``, which means
            :func:`default_cache_dir`.
        seed (int): Seed of the generator; the same seed gives the same bytes. Default: 0.
        num_train (int): Number of training images. Default: 300.
        num_val (int): Number of validation images. Default: 100.
        min_size (int): Smallest image side in pixels, at least 64. Default: 256.
        max_size (int): Largest image side in pixels, at most 512. Default: 384.

    Returns:
        Path: The dataset root, holding ``images/`` and ``annotations/{train,val}.json``.
    """
    _check_args(seed, num_train, num_val, min_size, max_size)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = base / f'embedded-v{FORMAT_VERSION}-s{seed}-{num_train}x{num_val}-{min_size}-{max_size}'
    if _is_complete(root):
        return root
    base.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(base / f'.{root.name}.lock'):
        if _is_complete(root):
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.tmp-', dir=base))
        try:
            _write_dataset(tmp, seed, num_train, num_val, min_size, max_size)
            try:
                os.rename(tmp, root)
            except OSError:
                # Another process without a working lock (e.g. on NFS) finished first: keep its copy.
                if not _is_complete(root):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _check_args(seed, num_train, num_val, min_size, max_size):
    for name, value, low in (('seed', seed, 0), ('num_train', num_train, 1), ('num_val', num_val, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
    for name, value in (('min_size', min_size), ('max_size', max_size)):
        if not isinstance(value, (int, np.integer)) or not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
            raise ValueError(f'{name} must be an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {value!r}')
    if min_size > max_size:
        raise ValueError(f'min_size must be <= max_size, got min_size={min_size}, max_size={max_size}')


def _is_complete(root):
    # The rename is the last step, so both files present means a finished dataset.
    return (root / 'annotations' / 'train.json').is_file() and (root / 'annotations' / 'val.json').is_file()


@contextlib.contextmanager
def _exclusive_lock(path):
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps readers safe.
        yield
        return
    with open(path, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_dataset(root, seed, num_train, num_val, min_size, max_size):
    (root / 'images').mkdir()
    (root / 'annotations').mkdir()
    textures = _load_textures()
    categories = [{'id': i + 1, 'name': name, 'supercategory': 'object'} for i, name in enumerate(CLASSES)]
    index = 0
    for split, count in (('train', num_train), ('val', num_val)):
        images, annotations = [], []
        for image_id in range(1, count + 1):
            # One seed per image index: image i is the same whatever the split sizes.
            rng = np.random.default_rng([seed, index])
            index += 1
            height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
            pixels, objects = _render_scene(rng, textures, height, width)
            file_name = f'{split}_{image_id:06d}.jpg'
            Image.fromarray(pixels).save(root / 'images' / file_name, quality=_JPEG_QUALITY)
            images.append({'id': image_id, 'file_name': file_name, 'width': width, 'height': height})
            for label, (x, y, w, h) in objects:
                annotations.append({
                    'id': len(annotations) + 1, 'image_id': image_id, 'category_id': label + 1,
                    'bbox': [float(x), float(y), float(w), float(h)], 'area': float(w * h), 'iscrowd': 0,
                    'segmentation': [],
                })
        coco = {
            'info': {'description': f'DynTune synthetic embedded dataset v{FORMAT_VERSION}, seed {seed}, {split}',
                     'license': 'generated; textures from scikit-image (BSD-3-Clause / public domain)'},
            'images': images, 'annotations': annotations, 'categories': categories,
        }
        with open(root / 'annotations' / f'{split}.json', 'w') as f:
            json.dump(coco, f)


def _load_textures():
    return {name: getattr(skdata, name)().astype(np.float32) / 255.0 for name in _TEXTURES}


def _render_scene(rng, textures, height, width):
    """Return (uint8 HxWx3 image, [(label, (x, y, w, h)), ...]) for one scene."""
    image = _ground(rng, textures, height, width)
    _draw_clutter(rng, image)
    labels = np.zeros((height, width), np.int32)  # instance index + 1 of the visible object per pixel
    instances = []
    areas = [0]  # full pixel area of each instance, to bound how much of it later objects may hide
    max_side = min(128, int(min(height, width) / 2.5))
    target = int(rng.integers(1, _MAX_OBJECTS + 1))
    for _ in range(target):
        if len(instances) >= target:
            break
        label = int(rng.integers(len(CLASSES)))
        low, high = _SIZE_RANGE[CLASSES[label]]
        high = max(low, min(high, max_side))
        # Log-uniform so that small objects are as common per octave as large ones.
        side = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        count = int(rng.integers(2, 4)) if CLASSES[label] == 'storage-tank' and rng.random() < 0.4 else 1
        count = min(count, target - len(instances))
        angle = rng.uniform(0, 2 * np.pi)
        start = None
        for _ in range(count):  # storage tanks often stand in rows
            colour, shadow = _OBJECT_PAINTERS[CLASSES[label]](rng, side)
            if start is None:
                start = _free_position(rng, colour, labels, areas)
                if start is None:
                    break
            else:
                step = side * rng.uniform(1.1, 1.3)
                start = (int(round(start[0] + step * np.sin(angle))), int(round(start[1] + step * np.cos(angle))))
                if not _fits(start, colour, labels, areas):
                    break
            _paste(image, labels, start, colour, shadow, len(instances) + 1)
            instances.append(label)
            areas.append(int(np.count_nonzero(~np.isnan(colour[..., 0]))))
    objects = []
    for index, label in enumerate(instances, start=1):
        rows, cols = np.nonzero(labels == index)
        if rows.size:
            objects.append((label, (int(cols.min()), int(rows.min()),
                                    int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1))))
    # A slight blur and sensor noise so edges look photographed rather than drawn.
    image = gaussian(image, sigma=0.6, channel_axis=-1, preserve_range=True)
    image += 0.015 * rng.standard_normal(image.shape, dtype=np.float32)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), objects


def _ground(rng, textures, height, width):
    """Two tinted texture crops blended through a smooth random field mask."""
    layers = []
    for name in rng.choice(list(_TEXTURES), size=2, replace=False):
        grey = np.rot90(textures[name], k=int(rng.integers(4)))
        if rng.random() < 0.5:
            grey = grey[:, ::-1]
        scale = rng.uniform(0.6, 1.3)
        crop_h = min(grey.shape[0], max(8, int(height * scale)))
        crop_w = min(grey.shape[1], max(8, int(width * scale)))
        top = int(rng.integers(grey.shape[0] - crop_h + 1))
        left = int(rng.integers(grey.shape[1] - crop_w + 1))
        grey = _bilinear(grey[top:top + crop_h, left:left + crop_w], height, width)
        contrast = rng.uniform(0.7, 1.2)
        grey = (grey - grey.mean()) * contrast + rng.uniform(0.45, 0.65)
        tint = np.asarray(_TEXTURES[name]) * rng.uniform(0.92, 1.08, size=3) * rng.uniform(1.1, 1.5)
        layers.append(grey[..., None] * tint)
    coarse = rng.random((4, 4)).astype(np.float32)
    field = _bilinear(coarse, height, width)
    mask = np.clip((field - 0.5) * 8.0 + 0.5, 0.0, 1.0)[..., None]
    return (layers[0] * mask + layers[1] * (1.0 - mask)).astype(np.float32)


def _bilinear(array, height, width):
    """Resize a 2-D array by bilinear interpolation (several times faster than skimage's resize here)."""
    rows = np.linspace(0, array.shape[0] - 1, height, dtype=np.float32)
    cols = np.linspace(0, array.shape[1] - 1, width, dtype=np.float32)
    # Inputs are at least 2x2 (crops >= 8 px, a 4x4 field), so r0 + 1 and c0 + 1 stay inside.
    r0 = np.minimum(rows.astype(np.int64), array.shape[0] - 2)
    c0 = np.minimum(cols.astype(np.int64), array.shape[1] - 2)
    r1, c1 = r0 + 1, c0 + 1
    wr = (rows - r0)[:, None]
    wc = (cols - c0)[None, :]
    top = array[r0][:, c0] * (1 - wc) + array[r0][:, c1] * wc
    bottom = array[r1][:, c0] * (1 - wc) + array[r1][:, c1] * wc
    return (top * (1 - wr) + bottom * wr).astype(np.float32)


def _draw_clutter(rng, image):
    """Roads, tree clumps and building roofs: things a detector must learn to ignore."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(0, 3))):
        angle = rng.uniform(0, np.pi)
        half_width = rng.uniform(2.5, 7.0)
        centre = (rng.uniform(0, height), rng.uniform(0, width))
        length = 2.0 * (height + width)
        rows, cols = _rotated_rect(centre, length, 2 * half_width, angle, image.shape[:2])
        image[rows, cols] = rng.uniform(0.25, 0.45) + rng.normal(0, 0.02, (rows.size, 1))
    for _ in range(int(rng.integers(0, 5))):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        green = np.array([0.12, 0.25, 0.08]) * rng.uniform(0.7, 1.3)
        for _ in range(int(rng.integers(3, 15))):
            rows, cols = draw.disk((cy + rng.normal(0, 12), cx + rng.normal(0, 12)), rng.uniform(2.5, 8.0),
                                   shape=image.shape[:2])
            image[rows, cols] = green * rng.uniform(0.7, 1.3)
    for _ in range(int(rng.integers(0, 4))):
        long_side = rng.uniform(24, 90)
        centre = (rng.uniform(0, height), rng.uniform(0, width))
        angle = rng.uniform(0, np.pi)
        colour = _ROOF_COLOURS[rng.integers(len(_ROOF_COLOURS))] * rng.uniform(0.8, 1.2)
        rows, cols = _rotated_rect(centre, long_side, long_side * rng.uniform(0.5, 0.9), angle, image.shape[:2])
        image[rows, cols] = colour
        # Ridge line: half the roof catches less light.
        rows, cols = _rotated_rect(centre, long_side, 1.5, angle, image.shape[:2])
        image[rows, cols] = colour * 0.7


def _rotated_rect(centre, length, width, angle, shape):
    along = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    across = np.array([-np.sin(angle), np.cos(angle)]) * width / 2
    corners = np.array([along + across, along - across, -along - across, -along + across])
    return draw.polygon(centre[0] + corners[:, 1], centre[1] + corners[:, 0], shape=shape)


# Object painters return (body colour HxWx3, NaN outside the body; shadow mask HxW) in a local square
# patch; the body's non-NaN pixels are the object and define its tight box.
def _patch(side):
    size = int(np.ceil(side * 1.15)) + 6
    return size, (size - 1) / 2.0


def _polygon_mask(points, angle, centre, size):
    """Mask of a polygon given in object coordinates (x forward, y left), rotated by angle about the centre."""
    points = np.asarray(points, np.float64)
    cos, sin = np.cos(angle), np.sin(angle)
    x = centre + points[:, 0] * cos - points[:, 1] * sin
    y = centre + points[:, 0] * sin + points[:, 1] * cos
    mask = np.zeros((size, size), bool)
    rows, cols = draw.polygon(y, x, shape=mask.shape)
    mask[rows, cols] = True
    return mask


def _shadow_of(mask, side, rng):
    offset = max(1, int(round(side * rng.uniform(0.04, 0.08))))
    shadow = np.zeros_like(mask)
    shadow[offset:, offset:] = mask[:-offset, :-offset]
    return shadow & ~mask


def _paint_plane(rng, side):
    size, centre = _patch(side)
    angle = rng.uniform(0, 2 * np.pi)
    # Longer side is the span or the length, whichever the plane type makes longer.
    span = rng.uniform(0.85, 1.0)
    length = rng.uniform(0.85, 1.0)
    scale = side / max(span, length)
    sweep = rng.uniform(0.05, 0.2)
    fuselage = [(0.5 * length, 0), (0.42 * length, 0.05), (-0.5 * length, 0.035), (-0.5 * length, -0.035),
                (0.42 * length, -0.05)]
    wings = [(0.12 * length, 0.05), (0.02 * length - sweep * span, span / 2), (-0.06 * length - sweep * span, span / 2),
             (-0.08 * length, 0.05), (-0.08 * length, -0.05), (-0.06 * length - sweep * span, -span / 2),
             (0.02 * length - sweep * span, -span / 2), (0.12 * length, -0.05)]
    tail = [(-0.36 * length, 0.03), (-0.46 * length, 0.17 * span), (-0.5 * length, 0.17 * span),
            (-0.48 * length, 0), (-0.5 * length, -0.17 * span), (-0.46 * length, -0.17 * span),
            (-0.36 * length, -0.03)]
    body = np.zeros((size, size), bool)
    for shape in (fuselage, wings, tail):
        body |= _polygon_mask(np.asarray(shape) * scale, angle, centre, size)
    colour = np.full((size, size, 3), np.nan, np.float32)
    colour[body] = np.array([0.88, 0.89, 0.91]) * rng.uniform(0.85, 1.1)
    # Darker engine pods under the wings.
    for y in (-0.22 * span, 0.22 * span):
        pod = _polygon_mask(np.array([(0.08, y - 0.025), (0.08, y + 0.025), (-0.04, y + 0.025),
                                      (-0.04, y - 0.025)]) * scale, angle, centre, size) & body
        colour[pod] *= 0.6
    return colour, _shadow_of(body, side, rng)


def _paint_vehicle(rng, side):
    size, centre = _patch(side)
    angle = rng.uniform(0, 2 * np.pi)
    half_len, half_wid = side / 2, side * rng.uniform(0.2, 0.27)
    body = _polygon_mask([(half_len, half_wid), (half_len, -half_wid), (-half_len, -half_wid),
                          (-half_len, half_wid)], angle, centre, size)
    colour = np.full((size, size, 3), np.nan, np.float32)
    colour[body] = _VEHICLE_COLOURS[rng.integers(len(_VEHICLE_COLOURS))] * rng.uniform(0.85, 1.1)
    windshield = _polygon_mask([(0.45 * half_len, half_wid * 0.85), (0.45 * half_len, -half_wid * 0.85),
                                (0.1 * half_len, -half_wid * 0.85), (0.1 * half_len, half_wid * 0.85)],
                               angle, centre, size) & body
    colour[windshield] = (0.12, 0.14, 0.18)
    return colour, _shadow_of(body, side, rng)


def _paint_tank(rng, side):
    size, centre = _patch(side)
    radius = side / 2
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - centre, xx - centre)
    body = distance <= radius
    colour = np.full((size, size, 3), np.nan, np.float32)
    top = np.array([0.93, 0.93, 0.90]) * rng.uniform(0.85, 1.08)
    colour[body] = top
    # A dark rim and a floating-roof ring make tanks look like tanks at every size.
    colour[body & (distance > radius - max(1.0, radius * 0.12))] = top * 0.45
    ring = body & (np.abs(distance - radius * 0.6) < max(0.6, radius * 0.05))
    colour[ring] = top * 0.7
    return colour, _shadow_of(body, side, rng)


_OBJECT_PAINTERS = {'plane': _paint_plane, 'vehicle': _paint_vehicle, 'storage-tank': _paint_tank}


def _body_bounds(colour):
    rows, cols = np.nonzero(~np.isnan(colour[..., 0]))
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def _free_position(rng, colour, labels, areas, tries=20):
    height, width = labels.shape
    top, bottom, left, right = _body_bounds(colour)
    for _ in range(tries):
        # Patch origin such that the body (not the whole patch) lies inside the image.
        y0 = int(rng.integers(-top, height - bottom + 1)) if height >= bottom - top else None
        x0 = int(rng.integers(-left, width - right + 1)) if width >= right - left else None
        if y0 is not None and x0 is not None and _fits((y0, x0), colour, labels, areas):
            return y0, x0
    return None


def _fits(start, colour, labels, areas):
    """Body inside the image, and every object already placed still at least 1 - _MAX_HIDDEN visible."""
    y0, x0 = start
    rows, cols = np.nonzero(~np.isnan(colour[..., 0]))
    rows, cols = rows + y0, cols + x0
    height, width = labels.shape
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width:
        return False
    covered = labels[rows, cols]
    covered = covered[covered > 0]
    if covered.size == 0:
        return True
    hidden = np.bincount(covered, minlength=len(areas))
    visible = np.bincount(labels.ravel(), minlength=len(areas))
    return bool(np.all(visible[1:] - hidden[1:] >= (1.0 - _MAX_HIDDEN) * np.asarray(areas[1:])))


def _paste(image, labels, start, colour, shadow, instance):
    y0, x0 = start
    size = colour.shape[0]
    height, width = labels.shape
    # Clip the patch to the image: only its empty margin or shadow can stick out.
    py0, px0 = max(0, -y0), max(0, -x0)
    py1, px1 = min(size, height - y0), min(size, width - x0)
    target = (slice(y0 + py0, y0 + py1), slice(x0 + px0, x0 + px1))
    colour = colour[py0:py1, px0:px1]
    shadow = shadow[py0:py1, px0:px1]
    image[target][shadow] *= 0.55
    body = ~np.isnan(colour[..., 0])
    image[target][body] = colour[body]
    labels[target][body] = instance


def main(argv=None):
    parser = argparse.ArgumentParser(description='Generate the built-in synthetic dataset and print its path.')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, default=None, help='cache folder (default: $DYNTUNE_CACHE, ...)')
    parser.add_argument('--num-train', type=int, default=300)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--min-size', type=int, default=256)
    parser.add_argument('--max-size', type=int, default=384)
    args = parser.parse_args(argv)
    print(ensure_embedded_dataset(args.out, seed=args.seed, num_train=args.num_train, num_val=args.num_val,
                                  min_size=args.min_size, max_size=args.max_size))


if __name__ == '__main__':
    main()
