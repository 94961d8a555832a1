"""Benchmark of DynTune's trainable against plain MMDetection: seconds per training iteration of one config.

One run trains the same config twice, one after the other (or side by side with ``--side-by-side``):

* ``ours``: a 1-trial search, ``python search/run.py space=SPACE scheduler=fifo num_samples=1 ...``, whose
  trial trains through ``search.trainable.train_mmdet`` (mmdet's ``train_detector`` plus the search's
  hooks: report, checkpoint, finite loss, epoch cost with its memory-sampling thread, TensorBoard);
* ``mmdet``: mmdet's own ``tools/train.py`` in a separate process on that trial's ``trial_config.py``
  (same model, data, seed and iterations), started when the search has ended (with ``--side-by-side``:
  as soon as the trial has written the file).

Both use one thread (``cpus_per_trial=1``: Ray sets ``OMP_NUM_THREADS=1`` and the trainable
``torch.set_num_threads(1)``; the mmdet process gets ``OMP_NUM_THREADS=MKL_NUM_THREADS=1``).
Seconds per iteration come from each run's mmdet json log (``*.log.json``): mmcv's ``IterTimerHook``
time averaged over each ``log_config.interval`` iterations, which covers every hook called around
an iteration. The first ``--warmup`` log intervals are left out. Reported: median and mean over
the remaining intervals and their ratios ours / mmdet (target <= 1.03), and the load average.
``--repeats`` pairs run one after another (ours, mmdet, ours, mmdet, ...) and the figure is the median
of the pairs' ratios, so one burst of someone else's load on the shared machine moves one pair, not it.
Side by side, the two runs share the two cores and each other's load, but their steady states need
not overlap: the trial starts after Ray and ends later, and a burst of load on the shared machine
during one run's measured window and not the other's skews the ratio (a first side-by-side run here
gave 0.91 that way). One after the other, each run has the cores it asks for; run it twice if the
load average moved.

Usage::

    python bench/bench_trainable.py --num-train 200 --num-val 10 --warmup 2 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench_overhead import (add_output_arguments, load_average, new_run, prepare_embedded, start_plain_mmdet,
                            start_search, wait)


def iteration_times(work_dir: Path) -> list[float]:
    """Per-interval mean seconds per iteration of the training rows of the json log in ``work_dir``."""
    logs = sorted(work_dir.glob('*.log.json'))
    if not logs:
        raise SystemExit(f'no mmdet json log in {work_dir}')
    rows = [json.loads(line) for line in logs[-1].read_text().splitlines() if line.strip()]
    return [row['time'] for row in rows if row.get('mode') == 'train' and 'time' in row]


def wait_for_trial_config(experiment: Path, search, timeout: float = 600.0) -> Path:
    """The trial's trial_config.py, as soon as the trial has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(experiment.glob('*/trial_config.py')) if experiment.is_dir() else []
        if found:
            time.sleep(0.5)  # let the dump finish
            return found[0]
        if search.poll() is not None:
            raise SystemExit(f'the search ended (exit code {search.returncode}) before its trial wrote a config')
        time.sleep(0.2)
    raise SystemExit(f'no trial_config.py in {experiment} after {timeout:.0f} s')


def summarise(times: list[float], warmup: int) -> dict:
    kept = times[warmup:]
    if not kept:
        raise SystemExit(f'only {len(times)} log intervals, all within the {warmup} warm-up ones: train longer')
    return dict(intervals=len(kept), median_s_per_iter=statistics.median(kept), mean_s_per_iter=statistics.fmean(kept),
                all_intervals=times)


def run_pair(overrides: list[str], root: Path, warmup: int, side_by_side: bool) -> dict:
    """One ours-then-mmdet pair (or side by side) in ``root``; their summaries and ratios."""
    root.mkdir(parents=True)
    search_log = root / 'search.log'
    search = start_search(overrides, root, 'search', search_log)
    config = wait_for_trial_config(root / 'search', search)
    mmdet_log = root / 'mmdet.log'
    if not side_by_side:
        wait(search, 'the search', search_log)
    mmdet = start_plain_mmdet(config, root / 'mmdet', threads=1, log=mmdet_log)
    wait(search, 'the search', search_log)
    wait(mmdet, 'mmdet tools/train.py', mmdet_log)

    ours = summarise(iteration_times(config.parent / 'mmdet'), warmup)
    theirs = summarise(iteration_times(root / 'mmdet'), warmup)
    if len(ours['all_intervals']) != len(theirs['all_intervals']):
        raise SystemExit(f"different numbers of log intervals: ours {len(ours['all_intervals'])}, "
                         f"mmdet {len(theirs['all_intervals'])}")
    return dict(ours=ours, mmdet=theirs, load_average_end=load_average(),
                ratio_median=ours['median_s_per_iter'] / theirs['median_s_per_iter'],
                ratio_mean=ours['mean_s_per_iter'] / theirs['mean_s_per_iter'])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--space', default='baseline')
    parser.add_argument('--num-train', type=int, default=200, help='training images (batch 2: half as many iterations)')
    parser.add_argument('--num-val', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2, help='first log intervals (10 iterations each) left out')
    parser.add_argument('--repeats', type=int, default=3, help='ours/mmdet pairs, alternating; the median ratio is the figure')
    parser.add_argument('--side-by-side', action='store_true', help='start mmdet while the search trains')
    add_output_arguments(parser, 'trainable')
    parser.add_argument('overrides', nargs='*', help='more search overrides, e.g. model=faster_rcnn')
    args = parser.parse_args(argv)

    root, out = new_run(args, 'trainable')
    overrides = [f'space={args.space}', 'scheduler=fifo', 'num_samples=1', 'max_epochs=1', 'cpus_per_trial=1',
                 f'data.num_train={args.num_train}', f'data.num_val={args.num_val}',
                 *args.overrides]
    prepare_embedded(args.num_train, args.num_val)
    load_start = load_average()
    pairs = [run_pair(overrides, root / f'pair{i}', args.warmup, args.side_by_side) for i in range(args.repeats)]
    figures = dict(ratio_median=statistics.median(p['ratio_median'] for p in pairs),
                   ratio_mean=statistics.median(p['ratio_mean'] for p in pairs),
                   pair_ratios_median=[p['ratio_median'] for p in pairs])
    report = dict(command=' '.join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
                  overrides=overrides, side_by_side=args.side_by_side, load_average_start=load_start,
                  load_average_end=load_average(), pairs=pairs, figures=figures, folder=str(root))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n')

    print(f"{'pair':>4} {'ours s/iter':>12} {'mmdet s/iter':>13} {'ratio':>6}  (medians over log intervals)")
    for i, pair in enumerate(pairs):
        print(f"{i:4d} {pair['ours']['median_s_per_iter']:12.3f} {pair['mmdet']['median_s_per_iter']:13.3f} "
              f"{pair['ratio_median']:6.3f}")
    print(f"ours / mmdet, median over {len(pairs)} pairs: {figures['ratio_median']:.3f} (of means {figures['ratio_mean']:.3f};"
          f" {'beside' if args.side_by_side else 'after'} each other)")
    print(f'load average (1/5/15 min) start {load_start}, end {report["load_average_end"]}; written: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
