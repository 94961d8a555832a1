"""Peak memory of a stretch of training, on the CPU (resident set size) or on a CUDA device."""
import threading

import psutil
import torch


class PeakMemory:
    """Peak memory between :meth:`start` and :meth:`stop`, in MiB.

    On the CPU a daemon thread samples the process RSS every ``interval`` seconds: the kernel's own
    high-water mark (``VmHWM``, ``ru_maxrss``) cannot be reset without also resetting it for every
    other reader in the process, so sampling is the side-effect-free way to window it. Peaks
    shorter than ``interval`` can be missed. On CUDA it is ``torch.cuda.max_memory_allocated``.

    Args:
        device (torch.device | str): where the training tensors live. Default: 'cpu'.
        interval (float): CPU sampling period in seconds. Default: 0.01.
    """

    def __init__(self, device='cpu', interval=0.01):
        if not interval > 0:
            raise ValueError(f'interval must be > 0 seconds, got {interval!r}')
        self.device = torch.device(device)
        self.interval = interval
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = None
        self.peak = 0

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def start(self):
        """Start a new window (stops a running one)."""
        self.stop()
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self.peak = self._process.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name='dbf-peak-rss', daemon=True)
        self._thread.start()

    def stop(self):
        """End the window and return its peak in MiB."""
        if self.device.type == 'cuda':
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.peak = max(self.peak, self._process.memory_info().rss)
        return self.peak / 2**20
