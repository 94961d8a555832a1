"""scripts/build_progress.sh: the mmcv build's counter in `make setup` shows each step while the build runs."""
import os
import select
import subprocess
import time

from conftest import REPO

COUNTER = REPO / 'scripts' / 'build_progress.sh'
PREFIX = 'setup: compiling mmcv ops'


def _read_until(fd: int, text: bytes, seen: bytearray, timeout: float = 10.0) -> bool:
    """Read ``fd`` into ``seen`` until ``text`` is in it; False if it is not there within ``timeout``."""
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        chunk = os.read(fd, 4096)
        if not chunk:
            return False
        seen += chunk
    return True


def test_the_counter_shows_each_step_before_the_build_ends():
    # The same pipeline as scripts/setup.sh, fed like a slow build: a line, then a pause, while the
    # input stays open. Debian's default awk (mawk) showed nothing here until the input ended.
    proc = subprocess.Popen(['bash', str(COUNTER), PREFIX], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    seen = bytearray()
    try:
        for step in (1, 2, 3):
            proc.stdin.write(f'  compiler warning from pip wheel -v\n[{step}/73] c++ -c op_{step}.cpp -o op_{step}.o\n'
                             .encode())
            proc.stdin.flush()
            assert _read_until(proc.stdout.fileno(), f'\r{PREFIX} [{step}/73]'.encode(), seen), bytes(seen)
        assert proc.poll() is None  # all of that was shown while the build was still running
        proc.stdin.write(b'Successfully built mmcv-full\n')
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        seen += proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert bytes(seen) == b''.join(f'\r{PREFIX} [{s}/73]'.encode() for s in (1, 2, 3)) + b'\n'


def test_a_build_without_ninja_lines_prints_nothing_and_succeeds():
    done = subprocess.run(['bash', str(COUNTER), PREFIX], input=b'error: no compiler\nbuild failed', capture_output=True,
                          timeout=10)
    assert (done.returncode, done.stdout) == (0, b'')


def test_setup_pipes_the_build_through_the_counter():
    setup = (REPO / 'scripts' / 'setup.sh').read_text()
    assert '| bash scripts/build_progress.sh "setup: compiling mmcv ops"' in setup
    assert '| awk' not in setup
