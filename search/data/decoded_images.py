"""Decode images exactly as mmdet's training loads them, and remember the ones that decoded.

mmdet 2.28's ``LoadImageFromFile`` reads a file's bytes and calls
``mmcv.imfrombytes(bytes, flag='color', channel_order='bgr')``: OpenCV by default, which turns the
image by its EXIF orientation tag and returns ``None`` for a file it cannot decode (the pipeline
then fails with ``'NoneType' object has no attribute 'shape'``). :func:`decoded_size` calls the
same function, so a size measured here is the size training sees, and a file refused here is one
training would crash on. With the pinned opencv-python 5.0 every truncated JPEG or PNG returns
``None``, however little is cut (tests/test_coco_check.py holds this); older OpenCV releases
could return a partly decoded image instead (opencv/opencv#6468, #26488).

:class:`DecodeCache` keeps the sizes of files that decoded, keyed by path, byte size and
modification time, in one JSON file per image folder under the user's cache folder
(:func:`search.data.embedded.default_cache_dir`, ``$DYNTUNE_CACHE`` when set), so a second check
of the same data decodes nothing. Example::

    >>> cache = DecodeCache.for_folder(images_dir)
    >>> sizes, failures = cache.decode_all([images_dir / 'a.jpg', images_dir / 'b.jpg'])
    >>> cache.save()
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from search.data.embedded import default_cache_dir

__all__ = ['DecodeCache', 'decoded_size', 'decoder_name']

# Bump when what an entry means changes, so older caches are ignored.
CACHE_FORMAT = 1
CACHE_SUBDIR = 'image-checks'
# A file modified less than this long before it was measured may change again within the same
# modification-time tick without its size or mtime changing; such files are decoded every time
# (the "racy" entries of git's index).
RACY_SECONDS = 2.0


def _mmcv():
    # Importing mmcv (and torch under it) prints a warning about mmcv 2.0 and a log line about CUDA:
    # noise before a one-line usage error.
    if 'mmcv' not in sys.modules:
        with warnings.catch_warnings(), _native_stderr_silenced():
            warnings.simplefilter('ignore')
            import mmcv  # noqa: F401
    return sys.modules['mmcv']


def decoder_name() -> str:
    """The decoder behind :func:`decoded_size` and its version, e.g. ``'mmcv 1.7.2 cv2 5.0.0'``."""
    mmcv = _mmcv()
    import cv2

    return f'mmcv {mmcv.__version__} {mmcv.image.io.imread_backend} cv2 {cv2.__version__}'


def decoded_size(file: Path) -> tuple[int, int] | str:
    """Return ``(width, height)`` of ``file`` as training decodes it, or why it does not decode.

    The reason is a short phrase ("does not decode", "cannot be read (PermissionError)") to put
    after the file's name in a message.
    """
    try:
        content = Path(file).read_bytes()
    except OSError as err:
        return f'cannot be read ({type(err).__name__})'
    try:
        image = _mmcv().imfrombytes(content, flag='color', channel_order='bgr')
    except Exception as err:  # OpenCV raises cv2.error on some corrupt headers, e.g. an empty file
        return f'does not decode ({type(err).__name__})'
    if image is None:
        return 'does not decode (truncated or corrupt)'
    return int(image.shape[1]), int(image.shape[0])


class DecodeCache:
    """Sizes of files that decoded, keyed by path, byte size and mtime; stored as JSON.

    Failures are not stored: a bad file is decoded again on the next check. Entries of another
    decoder version are ignored. :meth:`save` writes a temporary file and renames it into place,
    merged with what other processes saved meanwhile, so checks running together never read a
    half-written cache and at worst decode a file again.
    """

    def __init__(self, file: Path | None):
        self.file = file
        self.decoder = decoder_name()
        self._dirty = False  # set by _load when the file on disk needs rewriting
        self._entries: dict[str, list] = self._load() if file is not None else {}
        # Files modified just now: trusted for this object's lifetime (one check), never saved.
        self._racy: dict[str, list] = {}

    @classmethod
    def for_folder(cls, images_dir: Path, cache_dir: Path | None = None) -> DecodeCache:
        """The cache of one image folder, in ``cache_dir`` (default: the user's cache folder)."""
        base = Path(cache_dir) if cache_dir is not None else default_cache_dir() / CACHE_SUBDIR
        key = hashlib.sha256(str(Path(images_dir).absolute()).encode()).hexdigest()[:20]
        return cls(base / f'{key}.json')

    def decode_all(self, files: list[Path], workers: int | None = None):
        """Decode each file not cached; return ``({file: (w, h)}, {file: reason})`` for all of them.

        Files decode in a thread pool (OpenCV releases the GIL while it decodes).
        """
        sizes: dict[Path, tuple[int, int]] = {}
        failures: dict[Path, str] = {}
        todo: list[tuple[Path, os.stat_result | None]] = []
        for file in dict.fromkeys(files):
            stat = _stat(file)
            hit = (self._racy.get(str(file)) or self._entries.get(str(file))) if stat is not None else None
            if hit is not None and hit[:2] == [stat.st_size, stat.st_mtime_ns]:
                sizes[file] = (hit[2], hit[3])
            else:
                todo.append((file, stat))
        if todo:
            workers = workers or min(8, os.cpu_count() or 1)
            with _native_stderr_silenced(), ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(decoded_size, [file for file, _ in todo]))
            now = time.time()
            for (file, stat), result in zip(todo, results):
                if isinstance(result, str):
                    failures[file] = result
                    continue
                sizes[file] = result
                if stat is None:
                    continue
                entry = [stat.st_size, stat.st_mtime_ns, *result]
                if now - stat.st_mtime > RACY_SECONDS:
                    self._entries[str(file)] = entry
                    self._dirty = True
                else:
                    self._racy[str(file)] = entry
        return sizes, failures

    def save(self) -> None:
        """Write the cache if it learnt anything (or what was on disk was unreadable); never raises."""
        if self.file is None or not self._dirty:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            entries = {**self._load(), **self._entries}
            payload = json.dumps({'format': CACHE_FORMAT, 'decoder': self.decoder, 'images': entries})
            handle, tmp = tempfile.mkstemp(prefix=f'.{self.file.name}.', dir=self.file.parent)
            try:
                with os.fdopen(handle, 'w') as out:
                    out.write(payload)
                os.replace(tmp, self.file)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            self._dirty = False
        except OSError:
            pass  # a read-only or full cache folder costs a decode next time, nothing else

    def _load(self) -> dict[str, list]:
        """The entries on disk; {} when missing, unreadable, of another format or decoder."""
        try:
            data = json.loads(self.file.read_text())
        except (OSError, ValueError, RecursionError):
            self._dirty = self.file.exists()  # rewrite a corrupt file even if nothing new decodes
            return {}
        if (not isinstance(data, dict) or data.get('format') != CACHE_FORMAT or data.get('decoder') != self.decoder
                or not isinstance(data.get('images'), dict)):
            self._dirty = True
            return {}
        return {key: value for key, value in data['images'].items() if _is_entry(value)}


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null meanwhile: OpenCV and libpng print their complaints about a
    corrupt file there ("libpng error: PNG input buffer is incomplete"), which would come before the
    usage error's one line. Python's own sys.stderr writes are flushed first and restored after."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to protect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _is_entry(value) -> bool:
    return (isinstance(value, list) and len(value) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))


def _stat(file: Path):
    try:
        return file.stat()
    except OSError:
        return None
