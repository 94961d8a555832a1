"""Peak memory of a stretch of training: resident set size on the CPU, allocated memory on a CUDA device.

The peak is kept by the operating system (Linux's ``VmHWM``, reset by writing 5 to
``/proc/self/clear_refs``) or by torch (``torch.cuda.max_memory_allocated``, reset by
``torch.cuda.reset_peak_memory_stats``), for the whole process. Reading it costs nothing during
training: no thread wakes up to sample, and no peak between samples is missed. But a window needs a
reset at its start, and a reset erases the peak of every other window open at that moment: DynTune's
``EpochCostHook`` measures each epoch while the DBF hook measures the epoch's iterations, in the same
process. So windows never reset the peak on their own: :class:`PeakMemory` does it through one
lock-guarded table of the open windows, and folds the peak reached so far into each of them first.
Every window then gets its exact peak, however windows overlap; only code outside this module that
resets the same counter could spoil it.

Where ``/proc/self/clear_refs`` is missing (not Linux) a daemon thread samples the process RSS every
``interval`` seconds instead: no reset, so nothing to coordinate, but peaks shorter than the interval
can be missed.
"""
from __future__ import annotations

import threading
from pathlib import Path

import torch

_CLEAR_REFS = Path('/proc/self/clear_refs')
_STATUS = Path('/proc/self/status')
_lock = threading.Lock()
_open: dict[str, set] = {}  # counter ('cpu' or 'cuda:N') -> the windows measuring it now
_kernel_peak: bool | None = None  # whether this process can reset and read VmHWM (checked once)


class PeakMemory:
    """Peak memory between :meth:`start` and :meth:`stop`, in MiB; windows may overlap (module docstring).

    Args:
        device (torch.device | str): where the training tensors live; on CUDA the peak is the
            allocated memory of that device, elsewhere the process's resident set. Default: 'cpu'.
        interval (float): sampling period in seconds, used only where the kernel cannot give the
            peak. Default: 0.01.
    """

    def __init__(self, device='cpu', interval=0.01):
        if not interval > 0:
            raise ValueError(f'interval must be > 0 seconds, got {interval!r}')
        self.device = torch.device(device)
        self.interval = interval
        self.peak = 0  # bytes: the last window's peak, or the running one's so far
        self._counter = None
        self._sampler = None

    def start(self) -> None:
        """Start a new window (ends a running one)."""
        self.stop()
        if self.device.type == 'cuda':
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._counter = f'cuda:{index}'
        elif _kernel_available():
            self._counter = 'cpu'
        else:
            self._sampler = _Sampler(self.interval)
            return
        with _lock:
            windows = _open.setdefault(self._counter, set())
            if windows:
                reached = _read(self._counter)
                for window in windows:
                    window.peak = max(window.peak, reached)
            _reset(self._counter)
            self.peak = _read(self._counter)
            windows.add(self)

    def stop(self) -> float:
        """End the window and return its peak in MiB (again the same value if it has already ended)."""
        if self._sampler is not None:
            self.peak, self._sampler = self._sampler.stop(), None
        elif self._counter is not None:
            with _lock:
                self.peak = max(self.peak, _read(self._counter))
                _open[self._counter].discard(self)
            self._counter = None
        return self.peak / 2**20


def _kernel_available() -> bool:
    global _kernel_peak
    if _kernel_peak is None:
        try:
            _CLEAR_REFS.write_text('5')
            _kernel_peak = _vm_hwm() is not None
        except OSError:
            _kernel_peak = False
    return _kernel_peak


def _vm_hwm() -> int | None:
    """This process's peak resident set (VmHWM) in bytes, or None where /proc does not give it."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _read(counter: str) -> int:
    if counter == 'cpu':
        return _vm_hwm() or 0
    return torch.cuda.max_memory_allocated(counter)


def _reset(counter: str) -> None:
    if counter == 'cpu':
        _CLEAR_REFS.write_text('5')  # the peak becomes the current resident set
    else:
        torch.cuda.reset_peak_memory_stats(counter)


class _Sampler:
    """A daemon thread keeping the largest RSS it sees, every ``interval`` seconds, until :meth:`stop`."""

    def __init__(self, interval: float):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._done = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, name='peak-rss', daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, self._process.memory_info().rss)
