"""Where an experiment lives: a local or network folder, or a storage URI that every node of a cluster reaches.

``experiment.dir`` is either a path or a URI such as ``s3://bucket/prefix`` (any filesystem pyarrow
resolves: ``gs://``, ``hdfs://``, ...). A URI takes its endpoint and credentials the usual way, from
the AWS environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``)
or from the URI's query options (``?endpoint_override=host:port&scheme=http&region=...``). It is the
same mechanism as Ray Tune's own ``storage_path``: Tune persists the trials' results, checkpoints and
trial folders there (search/driver.py passes the filesystem on), and :class:`ExperimentStore` is how
DynTune reads and writes its own files beside them.

The result code (search/results.py, export.py, report.py) reads plain folders. For an experiment in
a URI it runs on a local cache: :meth:`ExperimentStore.pull` downloads the experiment folder into
``$DYNTUNE_CACHE`` (default ``~/.cache/dyntune/experiments``; only files that changed), and
:meth:`ExperimentStore.push` uploads what the tools wrote back. Checkpoints stay in the storage, each
marked by an empty ``<file>.in-storage`` in the cache (:func:`is_stored_file`), and
:meth:`ExperimentStore.fetch` downloads one when a tool reads it: the tools read the best trial's and the
reference's, not every one Tune keeps. For a local folder both are no-ops and
:attr:`ExperimentStore.local` is the folder itself.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

CACHE_ENV = 'DYNTUNE_CACHE'
SOURCE_FILE = 'source-uri.txt'  # beside a cached experiment: the URI it is a copy of
CHECKPOINT_FOLDER_PREFIX = 'checkpoint_'  # Tune's checkpoint folders inside a trial's folder
IN_STORAGE_SUFFIX = '.in-storage'  # beside a file pull() left in the storage: it exists there, not here


def is_uri(where) -> bool:
    """Whether ``where`` names a storage URI (``scheme://...``) rather than a local or network path."""
    return '://' in str(where) and not str(where).startswith('file://')


def _unsplit(parts) -> str:
    """``urlunsplit`` that keeps ``scheme://`` when the netloc is empty (``mock:///bucket``, ``file:///x``)."""
    return f'{parts.scheme}://{parts.netloc}{parts.path}' + (f'?{parts.query}' if parts.query else '')


def join_uri(parent, name: str) -> str:
    """``parent``/``name`` for a path or a URI; a URI's query options stay at the end."""
    if not is_uri(parent):
        return str(Path(str(parent).removeprefix('file://')).expanduser().resolve() / name)
    parts = urlsplit(str(parent))
    return _unsplit(parts._replace(path=posixpath.join(parts.path or '/', name)))


_SECRET_OPTIONS = ('access_key', 'secret_key', 'session_token')


def _without_secrets(uri: str) -> str:
    """The URI as printed: without the query options that hold credentials (an endpoint, a region stay)."""
    if not is_uri(uri):
        return uri
    parts = urlsplit(uri)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _SECRET_OPTIONS]
    return _unsplit(parts._replace(query=urlencode(kept, safe=':/'), fragment=''))


def parent_and_name(where: str) -> tuple[str, str]:
    """(``experiment.dir``, ``experiment.name``) of an experiment path or URI; a URI's options stay with the dir."""
    if not is_uri(where):
        path = Path(where)
        return str(path.parent), path.name
    parts = urlsplit(where)
    path = parts.path.rstrip('/')
    return _unsplit(parts._replace(path=posixpath.dirname(path))), posixpath.basename(path)


def source_of(local: Path) -> str:
    """The URI an experiment folder was pulled from (:meth:`ExperimentStore.pull`), or the folder itself."""
    marker = Path(local).parent / SOURCE_FILE
    try:
        uri = marker.read_text().strip()
    except OSError:
        return str(local)
    return uri if parent_and_name(uri)[1] == Path(local).name else str(local)


class ExperimentStore:
    """One experiment folder in storage (a pyarrow filesystem and a path on it), with a local view.

    Args:
        fs (pyarrow.fs.FileSystem): the filesystem (``LocalFileSystem`` for a path).
        path (str): the experiment folder on ``fs`` (no scheme, no trailing ``/``).
        uri (str): the experiment as the user named it (a URI or an absolute path).

    Attributes:
        remote (bool): the folder is in a URI; :attr:`local` is then a cache of it.
        local (Path): where the result code reads and writes the experiment's files on this machine.
    """

    def __init__(self, fs, path: str, uri: str):
        self.fs = fs
        self.path = path.rstrip('/') or '/'
        self.uri = uri
        self.remote = is_uri(uri)
        self.local = _cache_dir(uri) if self.remote else Path(self.path)

    @classmethod
    def from_uri(cls, where) -> 'ExperimentStore':
        """The store of an experiment folder named by a path or a URI.

        Raises:
            UsageError: the URI names no filesystem pyarrow knows, or its options are wrong.
        """
        import pyarrow.fs

        from search.errors import UsageError

        text = str(where)
        if not is_uri(text):
            path = str(Path(text.removeprefix('file://')).expanduser().resolve())
            return cls(pyarrow.fs.LocalFileSystem(), path, path)
        try:
            fs, path = pyarrow.fs.FileSystem.from_uri(text)
        except (ValueError, OSError, TypeError) as err:  # pyarrow's message names the scheme or option
            raise UsageError(f'experiment.dir {_without_secrets(text)} is not a storage URI pyarrow can open: '
                             f'{str(err).splitlines()[0]}') from None
        return cls(fs, path, text)

    # -- naming --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The experiment's folder name (``experiment.name``)."""
        return posixpath.basename(self.path)

    @property
    def display(self) -> str:
        """The experiment as printed: the URI without its query options (they may hold credentials)."""
        return _without_secrets(self.uri)

    def tune_storage(self) -> dict:
        """``storage_path`` and ``storage_filesystem`` of Tune's RunConfig for this experiment's parent.

        A local folder gives Tune the plain path, as before; a URI gives it the resolved filesystem, so
        query options (an endpoint) reach every trial with the pickled filesystem.
        """
        parent = posixpath.dirname(self.path)
        if not self.remote:
            return dict(storage_path=parent)
        return dict(storage_path=parent, storage_filesystem=self.fs)

    def _fs_path(self, rel: str = '') -> str:
        return posixpath.join(self.path, rel) if rel else self.path

    # -- single files --------------------------------------------------------------------------

    def exists(self, rel: str = '') -> bool:
        """Whether ``rel`` (a file or folder under the experiment; '' the experiment itself) exists."""
        import pyarrow.fs

        return self.fs.get_file_info(self._fs_path(rel)).type != pyarrow.fs.FileType.NotFound

    def is_file(self, rel: str) -> bool:
        import pyarrow.fs

        return self.fs.get_file_info(self._fs_path(rel)).type == pyarrow.fs.FileType.File

    def read_text(self, rel: str) -> str:
        with self.fs.open_input_stream(self._fs_path(rel)) as stream:
            return stream.read().decode('utf-8')

    def write_text(self, rel: str, text: str) -> None:
        """Write one file whole: an object store's put is atomic; a local file is replaced by a rename."""
        target = self._fs_path(rel)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        if self.remote:
            with self.fs.open_output_stream(target) as stream:
                stream.write(text.encode('utf-8'))
            return
        partial = Path(target + '.partial')
        partial.write_text(text)
        os.replace(partial, target)  # a killed process leaves the old file or the new one, never half

    def file(self, rel: str) -> 'StoredFile':
        """A handle on one file of the experiment that reads and writes like a ``Path`` (is_file, read_text, write_text)."""
        return StoredFile(self, rel)

    # -- the local view ------------------------------------------------------------------------

    def pull(self, skip: tuple[str, ...] = ()) -> Path:
        """Bring :attr:`local` up to date with the storage and return it (a no-op for a local folder).

        Only files whose size or modification time differs are downloaded; files gone from the storage
        are removed from the cache. A checkpoint not fetched before stays in the storage, marked by
        ``<file>.in-storage``; :meth:`fetch` downloads it. ``skip``: top-level names not to fetch.
        """
        if not self.remote:
            return self.local
        import pyarrow.fs

        self.local.mkdir(parents=True, exist_ok=True)
        (self.local.parent / SOURCE_FILE).write_text(self.display + '\n')  # resume commands name the URI
        selector = pyarrow.fs.FileSelector(self.path, recursive=True, allow_not_found=True)
        wanted = set()
        for info in self.fs.get_file_info(selector):
            if info.type != pyarrow.fs.FileType.File:
                continue
            rel = posixpath.relpath(info.path, self.path)
            if rel.split('/', 1)[0] in skip:
                continue
            target = self.local / rel
            if _in_checkpoint_folder(rel) and not target.is_file():
                wanted.add(rel + IN_STORAGE_SUFFIX)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.with_name(target.name + IN_STORAGE_SUFFIX).touch()
                continue
            wanted.add(rel)
            # Size and modification time: a rewritten summary.json or experiment state can keep its size.
            remote_mtime = info.mtime_ns
            if (target.is_file() and target.stat().st_size == info.size
                    and (remote_mtime is None or target.stat().st_mtime_ns == remote_mtime)):
                continue
            self._download(info, target)
        for old in [p for p in self.local.rglob('*') if p.is_file()]:
            rel = old.relative_to(self.local).as_posix()
            if rel not in wanted and rel.split('/', 1)[0] not in skip:
                old.unlink()  # e.g. a checkpoint Tune deleted beyond num_to_keep
        return self.local

    def fetch(self, local) -> Path:
        """The file ``local`` of :attr:`local`, downloaded first if :meth:`pull` left it in the storage."""
        local = Path(local)
        marker = local.with_name(local.name + IN_STORAGE_SUFFIX)
        if local.is_file() or not self.remote or not marker.is_file():
            return local
        rel = local.resolve().relative_to(self.local.resolve()).as_posix()
        self._download(self.fs.get_file_info(self._fs_path(rel)), local)
        marker.unlink()
        return local

    def _download(self, info, target: Path) -> None:
        """Copy the storage's file ``info`` (a pyarrow FileInfo) to ``target`` with its modification time."""
        import pyarrow.fs

        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + '.download')
        pyarrow.fs.copy_files(info.path, str(partial), source_filesystem=self.fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        if info.mtime_ns is not None:
            os.utime(partial, ns=(info.mtime_ns, info.mtime_ns))
        os.replace(partial, target)

    def push(self, *names: str) -> None:
        """Upload these files or folders of :attr:`local` (those that exist) to the storage; no-op when local.

        A folder is replaced whole, so a file the tools removed locally (an old plot) goes from the storage too.
        """
        if not self.remote:
            return
        import pyarrow.fs

        local_fs = pyarrow.fs.LocalFileSystem()
        for name in names:
            source = self.local / name
            target = self._fs_path(name)
            if source.is_dir():
                if self.exists(name):
                    self.fs.delete_dir(target)
                self.fs.create_dir(target, recursive=True)
                pyarrow.fs.copy_files(str(source), target, source_filesystem=local_fs, destination_filesystem=self.fs)
            elif source.is_file():
                self.fs.create_dir(posixpath.dirname(target), recursive=True)
                pyarrow.fs.copy_files(str(source), target, source_filesystem=local_fs, destination_filesystem=self.fs)


def is_stored_file(local) -> bool:
    """Whether ``local`` is a file of the experiment: here, or a checkpoint that ``pull`` left in the storage."""
    local = Path(local)
    return local.is_file() or local.with_name(local.name + IN_STORAGE_SUFFIX).is_file()


def _in_checkpoint_folder(rel: str) -> bool:
    return any(part.startswith(CHECKPOINT_FOLDER_PREFIX) for part in rel.split('/')[:-1])


def open_experiment(where) -> ExperimentStore:
    """The store of an existing experiment (a folder or a URI), its local view pulled up to date.

    For the command-line tools (export.py, report.py): they read and write :attr:`ExperimentStore.local`,
    then :meth:`ExperimentStore.push` the files they wrote.

    Raises:
        UsageError: a URI that cannot be reached or holds no DynTune experiment (a folder's own
            checks stay with the tools, which name the folder).
    """
    from search.errors import UsageError
    from search.files import SPEC_FILE

    store = ExperimentStore.from_uri(where)
    if store.remote:
        try:
            if not store.is_file(SPEC_FILE):
                raise UsageError(f'{store.display} is not a DynTune experiment (no {SPEC_FILE})')
            store.pull()
        except OSError as err:  # no credentials, an unknown bucket, an endpoint that does not answer
            raise UsageError(f'{store.display} cannot be reached: {str(err).splitlines()[0]}') from None
    return store


class StoredFile:
    """One file of an :class:`ExperimentStore`, with the part of ``Path``'s interface the search uses.

    It pickles with its store (pyarrow filesystems pickle), so a scheduler that holds one survives
    Tune's experiment checkpoints and a resume on another machine.
    """

    def __init__(self, store: ExperimentStore, rel: str):
        self.store, self.rel = store, rel

    def is_file(self) -> bool:
        return self.store.is_file(self.rel)

    def read_text(self) -> str:
        return self.store.read_text(self.rel)

    def write_text(self, text: str) -> None:
        self.store.write_text(self.rel, text)

    def __str__(self) -> str:
        return join_uri(self.store.display, self.rel)




def _cache_dir(uri: str) -> Path:
    """The local cache folder of an experiment URI: readable name, a hash of the whole URI to keep URIs apart."""
    root = Path(os.environ.get(CACHE_ENV) or Path('~/.cache/dyntune/experiments').expanduser())
    parts = urlsplit(uri)
    digest = hashlib.sha256(uri.encode()).hexdigest()[:10]
    return root / f'{parts.scheme}-{parts.netloc}-{digest}' / posixpath.basename(parts.path.rstrip('/'))


def trial_folder():
    """This Tune trial's own folder on the node it runs on, or None outside a Tune trial.

    It is Tune's trial working directory: ``SyncConfig(sync_artifacts=True)`` (search/driver.py) uploads
    it to the trial's folder in the experiment's storage at each checkpoint and when the trial ends, so
    a trial on a worker node leaves nothing the driver needs on that node. (``get_trial_dir()`` is the
    driver node's staging folder, which a trial on another node cannot reach.)
    """
    from ray import tune

    context = tune.get_context()
    try:
        return Path(context.get_storage().trial_working_directory)
    except (AttributeError, RuntimeError):  # outside a Tune trial
        return None
