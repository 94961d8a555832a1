"""Benchmark of the built-in synthetic dataset: how long generating it takes, and how long a cached call takes.

The tests check what the generator writes and that a second call does not write again; the times
live here, because a wall-clock bound in a test fails on a loaded machine. Each size is generated
into a fresh temporary folder ``--repeats`` times; wall seconds, process CPU seconds and a cached
second call are reported as medians.

Usage::

    python bench/bench_embedded_data.py                     # the smoke size (16 + 8 images, 128-160 px)
    python bench/bench_embedded_data.py --default           # also the default size (300 + 100 images)
"""
import argparse
import statistics
import tempfile
import time

from search.data.embedded import ensure_embedded_dataset

SIZES = {'smoke': dict(num_train=16, num_val=8, min_size=128, max_size=160),
         'default': dict(num_train=300, num_val=100, min_size=256, max_size=384)}


def measure(size: dict, repeats: int) -> dict:
    """Median wall and CPU seconds of a first call (generation) and wall seconds of a second (cached) call."""
    first_wall, first_cpu, cached = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            wall, cpu = time.perf_counter(), time.process_time()
            ensure_embedded_dataset(folder, **size)
            first_wall.append(time.perf_counter() - wall)
            first_cpu.append(time.process_time() - cpu)
            wall = time.perf_counter()
            ensure_embedded_dataset(folder, **size)
            cached.append(time.perf_counter() - wall)
    return dict(first_wall=statistics.median(first_wall), first_cpu=statistics.median(first_cpu),
                cached_wall=statistics.median(cached))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--default', action='store_true', help='also the default size (about 15 s per repeat)')
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args(argv)
    print('| size | images | generation, wall s | generation, CPU s | cached call, wall ms |')
    print('| --- | --- | --- | --- | --- |')
    for name in ['smoke', 'default'] if args.default else ['smoke']:
        size = SIZES[name]
        result = measure(size, args.repeats)
        print(f"| {name} | {size['num_train']} + {size['num_val']}, {size['min_size']}-{size['max_size']} px "
              f"| {result['first_wall']:.2f} | {result['first_cpu']:.2f} | {1000 * result['cached_wall']:.2f} |")


if __name__ == '__main__':
    main()
