"""Time the dataset check (search/data/coco_check.py) cold and warm on a real COCO-format dataset.

Each measurement is a fresh Python process (as ``search/run.py`` is), timing the import of the
decoder (mmcv, torch under it) apart from ``check_dataset`` itself:

* cold: an empty cache folder (``$DYNTUNE_CACHE``), so every image of every split is decoded;
* warm: the same folder again, so the decoded sizes come from the cache and nothing is decoded.

The operating system's file cache is not dropped between runs (that needs root): "cold" means cold for
DynTune's cache. Usage::

    python bench/bench_coco_check.py                      # HRPlanesV2 in ../shared/datasets/hrplanes
    python bench/bench_coco_check.py --data /data/coco --train-ann annotations/instances_train2017.json \\
        --val-ann annotations/instances_val2017.json --img-prefix train2017/ --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys, time
start = time.perf_counter()
from search.data.decoded_images import _mmcv
_mmcv()
imported = time.perf_counter()
from search.data.coco_check import check_dataset
info = check_dataset(*sys.argv[1:5], test_ann=sys.argv[5] or None)
done = time.perf_counter()
print(json.dumps(dict(import_s=imported - start, check_s=done - imported, images=info.num_train + info.num_val
                      + info.num_test, splits=3 if info.test_ann else 2)))
"""


def measure(args, cache: Path) -> dict:
    env = dict(os.environ, DYNTUNE_CACHE=str(cache))
    out = subprocess.run([sys.executable, '-c', _CHILD, str(args.data), args.train_ann, args.val_ann, args.img_prefix,
                          args.test_ann or ''], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, default=REPO.parent / 'shared' / 'datasets' / 'hrplanes')
    parser.add_argument('--train-ann', default='annotations/train.json')
    parser.add_argument('--val-ann', default='annotations/val.json')
    parser.add_argument('--test-ann', default=None, help='default: annotations/test.json when present')
    parser.add_argument('--img-prefix', default='images/')
    parser.add_argument('--repeats', type=int, default=1, help='cold+warm pairs, each with a new cache folder')
    args = parser.parse_args(argv)
    print(f'dataset {args.data}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}')
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix='dyntune-bench-cache-') as cache:
            for label in ('cold', 'warm'):
                result = measure(args, Path(cache))
                print(f"run {repeat + 1} {label}: check {result['check_s']:.2f} s for {result['images']} images in "
                      f"{result['splits']} splits ({result['images'] / result['check_s']:.0f} images/s); "
                      f"importing the decoder {result['import_s']:.2f} s")


if __name__ == '__main__':
    main()
