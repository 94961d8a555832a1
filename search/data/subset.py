"""Write a fixed random subset of a COCO dataset: a first search on a few images, benchmarks, tests.

    python -m search.data.subset SOURCE TARGET --train 80 --val 40 --test 40

The subset's annotation files go to ``TARGET/annotations/{train,val,test}.json``; its ``images/`` is a
link to the source's, so nothing is copied.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def write_subset(source: Path, target: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """``counts[split]`` images with boxes of each of ``source``'s splits, drawn with ``seed``, into ``target``.

    A split absent from ``counts`` (or 0) is left out. Raises ``ValueError`` when a split has fewer
    images with boxes than asked for.
    """
    source, target = Path(source), Path(target)
    (target / 'annotations').mkdir(parents=True, exist_ok=True)
    images = target / 'images'
    if not images.exists():
        images.symlink_to((source / 'images').resolve(), target_is_directory=True)
    for split, count in counts.items():
        if not count:
            continue
        coco = json.loads((source / 'annotations' / f'{split}.json').read_text())
        with_boxes = sorted({a['image_id'] for a in coco['annotations']})
        if count > len(with_boxes):
            raise ValueError(f'{source} {split} has {len(with_boxes)} images with boxes, asked for {count}')
        kept = set(random.Random(seed).sample(with_boxes, count))
        coco['images'] = [i for i in coco['images'] if i['id'] in kept]
        coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in kept]
        (target / 'annotations' / f'{split}.json').write_text(json.dumps(coco))
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('source', type=Path)
    parser.add_argument('target', type=Path)
    for split in ('train', 'val', 'test'):
        parser.add_argument(f'--{split}', type=int, default=0, help=f'images of the {split} split (0: none)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    write_subset(args.source, args.target, {'train': args.train, 'val': args.val, 'test': args.test}, args.seed)
    print(args.target)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
