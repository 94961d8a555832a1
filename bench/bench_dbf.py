"""Benchmark of Dynamic Backbone Freezing: cost of a training step unfrozen, detach-frozen (the seed) and ours.

One run, one detector and one random input per backbone. The three modes are interleaved step by
step, so the ratios are measured under the same machine load (the machine is shared and noisy):

* ``unfrozen``: a plain training step;
* ``detach``: the seed's freezing (unique-chan/DBF): the backbone forward builds its autograd
  graph and the neck gets ``detach``-ed features;
* ``ours``: :class:`dyncomponents.dbf.BackboneGate` frozen: the backbone forward runs under
  ``torch.no_grad()``.

Time is the wall time of forward + backward + SGD step, and its process CPU time (all threads),
which a loaded shared machine disturbs much less than the wall time. Memory is the growth of the process's
peak RSS during the step over its RSS at the step's start (:class:`dyncomponents.memory.PeakMemory`: the
kernel's high-water mark on Linux, a 2 ms sampling thread elsewhere). Before each step glibc's ``malloc_trim(0)`` hands freed
heap memory back to the OS; without it a step reuses what the previous step freed and shows no
growth. The order of the modes rotates every round. Warm-up rounds are excluded; medians are reported.

Usage::

    python bench/bench_dbf.py --backbones resnet50 effnet_lite0 --size 512 --batch 2 --iters 3
"""
import argparse
import copy
import ctypes
import ctypes.util
import statistics
import time
from pathlib import Path

import psutil
import torch
import yaml
from mmcv import ConfigDict
from mmdet.models import build_detector

import dyncomponents  # noqa: F401  (registers EfficientNetLite)
from dyncomponents.dbf import BackboneGate
from dyncomponents.memory import PeakMemory

BACKBONES = Path(__file__).resolve().parents[1] / 'search' / 'conf' / 'backbone'
MODES = ('unfrozen', 'detach', 'ours')
_LIBC = ctypes.CDLL(ctypes.util.find_library('c'))


def retinanet(backbone_name, num_classes=3):
    """RetinaNet exactly as the search builds it (base=retinanet backbone=NAME), from scratch."""
    from search.mmdet_config import load_base, resolve_base, swap_backbone

    config = load_base(resolve_base('retinanet'))
    backbone = yaml.safe_load((BACKBONES / f'{backbone_name}.yaml').read_text())
    swap_backbone(config, backbone['mmdet'], backbone['out_channels'], backbone.get('img_norm'))
    config['model']['bbox_head']['num_classes'] = num_classes
    return ConfigDict(config['model'])


def batch(size, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    meta = dict(img_shape=(size, size, 3), ori_shape=(size, size, 3), pad_shape=(size, size, 3),
                scale_factor=1.0, flip=False)
    xy = torch.rand(n, 3, 2, generator=g) * size * 0.6
    boxes = torch.cat([xy, xy + size * 0.1 + torch.rand(n, 3, 2, generator=g) * size * 0.3], dim=2)
    return dict(img=torch.randn(n, 3, size, size, generator=g), img_metas=[dict(meta) for _ in range(n)],
                gt_bboxes=list(boxes), gt_labels=[torch.randint(0, 3, (3,), generator=g) for _ in range(n)])


def set_mode(detector, gate, mode):
    """Put the detector's backbone in one of MODES (instance-level, like the hook)."""
    gate.remove()
    detector.backbone.__dict__.pop('forward', None)
    if mode == 'ours':
        gate.trains = False
        gate.install()
    elif mode == 'detach':
        forward = type(detector.backbone).forward.__get__(detector.backbone)
        detector.backbone.forward = lambda x: tuple(t.detach() for t in forward(x))


def step(detector, optimizer, data):
    optimizer.zero_grad(set_to_none=True)
    loss, _ = detector._parse_losses(detector.forward_train(**data))
    loss.backward()
    optimizer.step()


def bench(backbone_name, size, n, iters, warmup):
    torch.manual_seed(0)
    detector = build_detector(retinanet(backbone_name))
    detector.init_weights()
    detector.train()
    optimizer = torch.optim.SGD(detector.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
    gate = BackboneGate(detector.backbone)
    data = batch(size, n)
    memory = PeakMemory('cpu', interval=0.002)
    rss = psutil.Process().memory_info
    seconds = {m: [] for m in MODES}
    cpu = {m: [] for m in MODES}
    growth = {m: [] for m in MODES}
    for i in range(warmup + iters):
        for mode in MODES[i % 3:] + MODES[:i % 3]:
            set_mode(detector, gate, mode)
            d = copy.copy(data)
            _LIBC.malloc_trim(0)
            base = rss().rss
            memory.start()
            t0, c0 = time.perf_counter(), time.process_time()
            step(detector, optimizer, d)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            peak = memory.stop() * 2**20
            if i >= warmup:
                seconds[mode].append(dt)
                cpu[mode].append(dc)
                growth[mode].append((peak - base) / 2**20)
    t = {m: statistics.median(v) for m, v in seconds.items()}
    c = {m: statistics.median(v) for m, v in cpu.items()}
    g = {m: statistics.median(v) for m, v in growth.items()}
    print(f'\nRetinaNet + {backbone_name}, {size} px, batch {n}, {iters} measured steps per mode '
          f'(+{warmup} warm-up), torch threads {torch.get_num_threads()}')
    print(f'{"mode":<10}{"wall s":>9}{"CPU s":>9}{"peak RSS growth MiB":>22}   all wall s')
    for m in MODES:
        print(f'{m:<10}{t[m]:>9.3f}{c[m]:>9.3f}{g[m]:>22.1f}   {" ".join(f"{x:.2f}" for x in seconds[m])}')
    print(f'wall   ours/unfrozen {t["ours"] / t["unfrozen"]:.3f}   detach/unfrozen {t["detach"] / t["unfrozen"]:.3f}')
    print(f'CPU    ours/unfrozen {c["ours"] / c["unfrozen"]:.3f}   detach/unfrozen {c["detach"] / c["unfrozen"]:.3f}')
    print(f'memory ours/unfrozen {g["ours"] / g["unfrozen"]:.3f}   detach/unfrozen {g["detach"] / g["unfrozen"]:.3f}'
          f'   ours/detach {g["ours"] / g["detach"]:.3f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backbones', nargs='+', default=['resnet50', 'effnet_lite0'],
                        help='names of search/conf/backbone presets')
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=3, help='measured steps per mode')
    parser.add_argument('--warmup', type=int, default=1, help='unmeasured steps per mode first')
    args = parser.parse_args()
    for name in args.backbones:
        bench(name, args.size, args.batch, args.iters, args.warmup)


if __name__ == '__main__':
    main()
