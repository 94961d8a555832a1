"""dyncomponents.memory.PeakMemory: exact peaks of overlapping windows in one process (no training)."""
import gc
import time

import numpy as np
import pytest
import torch

from dyncomponents import memory
from dyncomponents.memory import PeakMemory

MIB = 2**20
_KERNEL_AVAILABLE = memory._kernel_available  # the spawned process switches between the two meters


def _touch(mib: int) -> np.ndarray:
    """``mib`` MiB of resident memory (np.ones writes every page; large arrays are mmapped and freed at once)."""
    return np.ones(mib * MIB // 8)


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / MIB


def _one_window() -> dict:
    """A 300 MiB block comes and goes inside one window: the resident sets around it and the window's peak."""
    window = PeakMemory(interval=0.002)
    window.start()
    base = _rss_mib()
    block = _touch(300)
    time.sleep(0.05)  # the sampler's chance to see it; the kernel needs none
    del block
    peak = window.stop()
    return dict(base=base, peak=peak, after=_rss_mib(), again=window.stop())


def _nested_windows() -> dict:
    """The epoch's meter (EpochCostHook) and DBF's meter of the epoch's iterations overlap like this."""
    outer, inner = PeakMemory(interval=0.002), PeakMemory(interval=0.002)
    outer.start()
    base = _rss_mib()
    block = _touch(400)
    time.sleep(0.05)
    del block
    inner_base = _rss_mib()
    inner.start()
    small = _touch(100)
    time.sleep(0.05)
    del small
    inner_peak = inner.stop()
    return dict(base=base, inner_base=inner_base, inner_peak=inner_peak, outer_peak=outer.stop())


def _measure(scenario, kind: str) -> dict:
    """Run ``scenario`` (in the spawned ``quiet_process``) with the ``kind`` meter and the cyclic collector off.

    The test session's own threads (Ray's, after the slow tests) and its collector free and take memory
    during a window and moved the resident set by more than the blocks measured here (CI saw it twice).
    """
    memory._kernel_available = _KERNEL_AVAILABLE if kind == 'kernel' else (lambda: False)
    gc.collect()
    gc.disable()
    return scenario()


@pytest.fixture(scope='module')
def quiet_process():
    """One spawned process for this file's measurements (it imports torch once, not per test)."""
    import multiprocessing

    with multiprocessing.get_context('spawn').Pool(1) as pool:
        yield pool


@pytest.fixture(params=['kernel', 'sampling'])
def meter_kind(request):
    if request.param == 'kernel' and not memory._kernel_available():
        pytest.skip('no /proc/self/clear_refs here: the sampling thread is the only meter')
    return request.param


def test_a_window_sees_a_peak_that_is_gone_by_its_end(meter_kind, quiet_process):
    seen = quiet_process.apply(_measure, (_one_window, meter_kind))
    assert seen['after'] < seen['base'] + 100, seen  # the block is gone...
    assert seen['peak'] >= seen['base'] + 250, seen  # ...but the window saw it
    assert seen['again'] == seen['peak']  # stopping again changes nothing


def test_an_inner_window_does_not_erase_the_peak_of_the_window_around_it(meter_kind, quiet_process):
    # a window that reset the process's peak at its start would hide the 400 MiB from the outer one
    seen = quiet_process.apply(_measure, (_nested_windows, meter_kind))
    assert seen['outer_peak'] >= seen['base'] + 350, seen
    assert seen['inner_base'] + 80 <= seen['inner_peak'] < seen['inner_base'] + 250, seen


def test_the_window_table_forgets_stopped_windows():
    if not memory._kernel_available():
        pytest.skip('the sampling meter keeps no table')
    window = PeakMemory()
    window.start()
    assert window in memory._open['cpu']
    window.stop()
    assert window not in memory._open['cpu']


def test_bad_interval_is_rejected():
    with pytest.raises(ValueError, match='interval'):
        PeakMemory(interval=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_windows_overlap_like_cpu_ones():
    outer, inner = PeakMemory('cuda'), PeakMemory('cuda')
    outer.start()
    block = torch.ones(256 * MIB // 4, device='cuda')  # 256 MiB
    del block
    inner.start()
    small = torch.ones(32 * MIB // 4, device='cuda')
    del small
    assert 31 <= inner.stop() < 100
    assert outer.stop() >= 255
