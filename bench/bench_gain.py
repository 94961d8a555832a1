"""The search's gain over the user's own config, on validation and on a test split it never reads.

Per seed: a fixed subset of a COCO dataset with a test split (``search.data.subset``), then
``python search/run.py space=SPACE data=coco data.root=SUBSET num_samples=N seed=SEED`` with the
reference trial (the base config as given, the component off, never stopped early), timed from start to
exit. The figures come from the search's own ``summary.json`` and ``trials.csv`` records: reference and best
on validation and test, the gain, each one's training compute, and the object-size line the data check
printed (or that it printed none, with the median object size it judged by).

Usage (docs/benchmarks.md section 6)::

    python bench/bench_gain.py                           # space=dbf, HRPlanesV2 300/100/243, 6 draws, seed 0
    python bench/bench_gain.py --seeds 0 1 2             # the spread over seeds
    python bench/bench_gain.py --data /data/mycoco --num-train 1000 --num-val 200 --num-test 500 base=my_config.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench_overhead import REPO, add_output_arguments, load_average, start_search, wait
from bench_search import add_subset_arguments, start_run


def outcome(experiment: Path) -> dict:
    """Reference against best of a finished search in ``experiment``, from its summary.json and records,
    with the median object size (px) after the reference's training resize, which the data check judges."""
    sys.path.insert(0, str(REPO))
    from mmcv import Config

    from search.data.coco_check import median_object_size
    from search.files import TRIAL_CONFIG
    from search.mmdet_config import dataset_splits, train_img_scale
    from search.results import load_records, reference_record

    summary = json.loads((experiment / 'summary.json').read_text())
    metric, mode = summary['metric'], summary['mode']
    records = load_records(experiment, metric, mode)
    reference, best = reference_record(records), summary['best'] or {}
    # With finalize.top_k the best is a finalist's re-training (mean over its seeds), in finalize/.
    finalized = load_records(experiment / 'finalize', metric, mode) if (experiment / 'finalize').is_dir() else []
    best_run = next((r for r in records + finalized if r.trial_id == best.get('trial_id')), None)
    if reference is None:
        raise SystemExit(f'{experiment} has no reference trial: the gain needs reference=true')
    test = summary.get('test') or {}
    # The size the data check judged objects by: the trained config's resize of its training annotations.
    config = Config.fromfile(str(Path(reference.path) / TRIAL_CONFIG), import_custom_modules=False)
    scale = train_img_scale(config)
    median = median_object_size(Path(dataset_splits(config)['train']['ann_file']), scale) if scale else None
    return dict(
        metric=metric, trials=summary['num_trials'], wall_s=summary['wall_seconds'],
        trial_compute_s=summary['compute_seconds_sum'],
        reference=dict(validation=reference.best, test=(test.get('reference') or {}).get(metric),
                       compute_s=reference.compute_seconds, epochs=reference.epochs),
        best=dict(validation=best.get(metric), test=(test.get('best') or {}).get(metric),
                  compute_s=best_run.compute_seconds if best_run else None, params=best.get('params')),
        gain=summary.get('gain', {}),
        img_scale=scale, median_object_px=None if median is None else round(median, 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_subset_arguments(parser)
    parser.set_defaults(num_train=300, num_val=100)
    parser.add_argument('--num-test', type=int, default=243, help='test images (HRPlanesV2 has 243 with boxes)')
    parser.add_argument('--space', default='dbf')
    parser.add_argument('--num-samples', type=int, default=6)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    add_output_arguments(parser, 'gain')
    parser.add_argument('overrides', nargs='*', help='more run.py overrides, e.g. base=my_config.py')
    args = parser.parse_args(argv)

    root, out, data = start_run(args, 'gain')
    runs = []
    for seed in args.seeds:
        overrides = [f'space={args.space}', 'data=coco', f'data.root={data}', f'num_samples={args.num_samples}',
                     f'seed={seed}', 'reference=true', *args.overrides]
        name, log = f'seed{seed}', root / f'seed{seed}.log'
        started, load = time.time(), load_average()
        wait(start_search(overrides, root, name, log), f'search of seed {seed}', log)
        printed = log.read_text().strip().splitlines()
        run = dict(seed=seed, process_wall_s=round(time.time() - started, 1), load_before=load,
                   load_after=load_average(), **outcome(root / name),
                   warnings=[line for line in printed if line.startswith('DynTune warning')], last_line=printed[-1])
        runs.append(run)
        print(json.dumps(run), flush=True)

    gains = {split: [r['gain'].get(split) for r in runs if r['gain'].get(split) is not None]
             for split in ('validation', 'test')}
    figures = dict(command=' '.join(['python bench/bench_gain.py', *(argv if argv is not None else sys.argv[1:])]),
                   data=str(args.data), subset=dict(train=args.num_train, val=args.num_val, test=args.num_test), runs=runs,
                   median_gain={k: statistics.median(v) for k, v in gains.items() if v})
    out.write_text(json.dumps(figures, indent=2) + '\n')
    for run in runs:
        print(f"seed {run['seed']}: {run['process_wall_s']:.0f} s wall; reference {run['reference']} -> "
              f"best {run['best']['validation']} / {run['best']['test']}; gain {run['gain']}; "
              f"median object {run['median_object_px']} px at img_scale {run['img_scale']}, "
              f"warnings: {run['warnings'] or 'none'}")
    print(f'median gain {figures["median_gain"]}; figures in {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
