"""Benchmark of the components' accuracy and cost on a real dataset, each against the same detector without it.

Every arm is a real ``search/run.py`` search on the same fixed subset of a COCO-format dataset
(``--data``, default HRPlanesV2 satellite aircraft; see ``search.data.subset``), same seed, same
recipe and ``--epochs`` epochs, ``scheduler=fifo``. The arms' space files are written by this script
(``space=PATH``) from the shipped spaces, with the compared setting as the only parameter:

* ``dynamic_head``: ``spaces/dynamic_head.yaml``'s fine-grained dynamic FCOS head (depth 4, tau 1.5),
  a grid over the budget weight lambda (``--lambdas``); reported: bbox_mAP and head GFLOPs per image
  (``dhead_gflops_avg``, measured on the validation images) against the dense head's ``dhead_gflops_full``;
* ``dynamic_rcnn``: Faster R-CNN, a grid over ``roi_head.type``: mmdet's ``StandardRoIHead`` and
  ``DynamicRCNNRoIHead`` with ``spaces/dynamic_rcnn.yaml``'s paper defaults (IoU threshold and beta
  reported at the end);
* ``dbf``: RetinaNet + EfficientNet-Lite0 (the default detector) with ``spaces/dbf.yaml``'s freezing hook
  and the seed's ``StepFreezeSchedule``, a grid over its period rho (``--rhos``; rho=1 trains the
  backbone every epoch, the same code path with no freezing); reported: bbox_mAP, training seconds and
  the share of epochs in which the backbone trained (``dbf_trained_fraction``);
* ``dyra``: RetinaNet with and without DyRA's resizer (``spaces/dyra.yaml``'s defaults), both with its
  ConstCosine LR schedule so the resizer is the only difference. The two detectors take different
  constructor arguments, so they are two one-trial searches, each trial with ``cpus_per_trial=2``.

Reported per arm: the last epoch's bbox_mAP (and its best over epochs), training seconds and the
component's own metrics. Figures are from one run of this script; ratios within it are what compare.

Usage::

    python bench/bench_components.py --epochs 6 --num-train 200 --num-val 100 train.img_scale=[480,270]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import yaml
from bench_overhead import REPO, add_output_arguments, load_average, start_search, wait
from bench_search import add_subset_arguments, start_run

SPACES = REPO / 'spaces'


def shipped(name: str) -> dict:
    return yaml.safe_load((SPACES / f'{name}.yaml').read_text())


def dynamic_head_space(lambdas: list[float]) -> dict:
    space = shipped('dynamic_head')
    return dict(description='dynamic head across lambda', overrides=space['overrides'], requires=space['requires'],
                mmdet=space['mmdet'], params={'model.bbox_head.budget_lambda': {'choice': lambdas}})


def dynamic_rcnn_space() -> dict:
    space = shipped('dynamic_rcnn')
    # No `requires` switch: the grid sets roi_head.type itself; the preset's other roi_head keys stay.
    return dict(description='Faster R-CNN with and without Dynamic R-CNN', overrides=space['overrides'],
                mmdet=copy.deepcopy(space['mmdet']),
                params={'model.roi_head.type': {'choice': ['StandardRoIHead', 'DynamicRCNNRoIHead']}})


def dbf_space(rhos: list[int]) -> dict:
    hook = dict(shipped('dbf')['mmdet']['custom_hooks'][0], schedule=dict(type='StepFreezeSchedule', rho=1))
    return dict(description='DBF step freezing across rho', mmdet=dict(custom_hooks=[hook]),
                params={'custom_hooks[type=DynamicBackboneFreezingHook].schedule.rho': {'choice': rhos}})


def dyra_spaces() -> dict[str, dict]:
    space = shipped('dyra')
    without = copy.deepcopy(space['mmdet'])
    del without['model']
    return {'retinanet': dict(description='RetinaNet, DyRA schedule, no resizer', mmdet=without),
            'dyra_retinanet': dict(description='DyRA RetinaNet, defaults', requires=space['requires'],
                                   mmdet=space['mmdet'])}


def arms(lambdas: list[float], rhos: list[int]) -> list[tuple[str, str, dict, list[str]]]:
    """(comparison, search name, space, extra overrides) of every search this benchmark runs."""
    grid = ['search_alg=grid', 'num_samples=1']
    return [('dynamic_head', 'dynamic_head', dynamic_head_space(lambdas), grid),
            ('dynamic_rcnn', 'dynamic_rcnn', dynamic_rcnn_space(), grid),
            # lr 0.003: the best of bench_search.py's run 1 on this data (lr above 0.01 collapsed there)
            ('dbf', 'dbf', dbf_space(rhos), [*grid, 'train.lr=0.003']),
            *(('dyra', name, space, ['num_samples=1', 'cpus_per_trial=2']) for name, space in dyra_spaces().items())]


COMPONENT_KEYS = ('dbf_trained_fraction', 'dhead_gflops_avg', 'dhead_gflops_full', 'dhead_used_ratio',
                  'drcnn_iou_thr', 'drcnn_beta', 'dyra_eval_sf_mean', 'dyra_eval_sf_std', 'dyra_eval_pixel_ratio')


def trial_results(experiment: Path) -> list[dict]:
    from search.results import load_records

    rows = []
    for record in load_records(experiment, 'bbox_mAP', 'max'):
        last = record.last_metrics
        rows.append(dict(trial=record.trial_id, params=record.params, status=record.status, epochs=record.epochs,
                         bbox_mAP=record.final, best_bbox_mAP=record.best,
                         bbox_mAP_50=last.get('bbox_mAP_50'), compute_seconds=record.compute_seconds,
                         **{k: last[k] for k in COMPONENT_KEYS if k in last}))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_subset_arguments(parser)
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--lambdas', type=float, nargs='+', default=[0.0, 0.03, 0.3, 1.0])
    parser.add_argument('--rhos', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--only', nargs='+', choices=['dynamic_head', 'dynamic_rcnn', 'dbf', 'dyra'])
    add_output_arguments(parser, 'components')
    parser.add_argument('overrides', nargs='*', help='more search overrides for every arm, e.g. train.img_scale=[480,270]')
    args = parser.parse_args(argv)
    root, out, data = start_run(args, 'components')
    common = ['data=coco', f'data.root={data}', f'seed={args.seed}', f'max_epochs={args.epochs}',
              'scheduler=fifo', *args.overrides]
    load_start = load_average()

    results: dict[str, list[dict]] = {}
    for comparison, name, space, extra in arms(args.lambdas, args.rhos):
        if args.only and comparison not in args.only:
            continue
        space_file = root / f'{name}.yaml'
        space_file.write_text(yaml.safe_dump(space, sort_keys=False))
        log = root / f'{name}.log'
        started = time.perf_counter()
        wait(start_search([f'space={space_file}', *common, *extra], root, name, log), f'the {name} search', log)
        print(f'{name}: {time.perf_counter() - started:.0f} s', flush=True)
        for row in trial_results(root / name):
            results.setdefault(comparison, []).append(dict(search=name, **row))

    report = dict(command=' '.join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
                  common_overrides=common, load_average_start=load_start, load_average_end=load_average(),
                  results=results, folder=str(root))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + '\n')

    for comparison, rows in results.items():
        print(f'\n{comparison}')
        for row in rows:
            setting = row['params'] or {'detector': row['search']}
            extras = ', '.join(f'{k}={row[k]:.4g}' for k in COMPONENT_KEYS if k in row)
            print(f"  {json.dumps(setting)}: bbox_mAP {row['bbox_mAP']} (best {row['best_bbox_mAP']}), "
                  f"{row['epochs']} epochs, {row['compute_seconds']:.0f} s training; {extras}")
    print(f'load average (1/5/15 min) start {load_start}, end {report["load_average_end"]}; written: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
