"""Small file helpers shared by every step: atomic writes and content digests."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_frame(df: pd.DataFrame) -> str:
    """Digest of a table's content (column names, dtypes' kinds and every value), independent of the file format.

    Unlike MLflow's pandas digest it reads every row. List cells are joined with a unit separator.
    """
    import pandas as pd

    h = hashlib.sha256()
    h.update(json.dumps(list(map(str, df.columns))).encode())
    for col in df.columns:
        s = df[col]
        if s.dtype == object and len(s) and isinstance(s.iloc[0], list | tuple):
            s = s.map(lambda v: "\x1f".join(map(str, v)))
        values = pd.util.hash_pandas_object(s.astype(str) if s.dtype == object else s, index=False)
        h.update(values.to_numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Readers never see a half-written file, and a crash leaves at most a stray ``.tmp-*`` file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory. If another writer won the race, its copy is kept.

    Replacing an existing directory swaps the two atomically (Linux ``renameat2(RENAME_EXCHANGE)``), so a reader
    never finds ``path`` missing: two DDP ranks publish the same stage while one of them already reads it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        yield tmp
        if path.exists() and _exchange(tmp, path):
            return  # tmp now holds the old copy: removed below
        if path.exists():
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (both must exist); False where the system cannot (then the caller falls back)."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return Path(path)


def write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


MIN_FREE_BYTES = 256 << 20  # below this a run would fail part-way (embeddings, checkpoints), so refuse it up front


def check_home_writable(home: str | os.PathLike, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Refuse, before any work, a state folder that cannot be written or is (nearly) full; returns it.

    Creates ``home`` if needed, writes, fsyncs and deletes a small probe file, and checks the free space.

    Raises:
        InputError: one line naming the folder, what failed, and what to do.
    """
    from cdco_core.errors import InputError

    home = Path(home)
    hint = "free some space or point CDCO_HOME at a writable folder with room"
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-write-probe-", dir=home)
        try:
            left = memoryview(b"\0" * 4096)
            while left:  # a short write is how a nearly full disk or a file-size limit first shows: write on
                left = left[os.write(fd, left):]  # until the kernel refuses with an error
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk is not a permissions problem: say which it is
            raise InputError(f"CDCO_HOME {home} is full: no space left on device ({e.strerror}); {hint}") from None
        raise InputError(f"CDCO_HOME {home} is not writable ({e.strerror or e}); {hint}") from None
    free = shutil.disk_usage(home).free
    if free < min_free_bytes:
        raise InputError(f"CDCO_HOME {home} has only {free >> 20} MiB free (at least {min_free_bytes >> 20} MiB "
                         f"needed); {hint}")
    return home


def read_utf8(path: Path) -> str:
    """The file's text as UTF-8 (raises UnicodeDecodeError; see :func:`describe_bad_byte`)."""
    return path.read_bytes().decode("utf-8")


def describe_bad_byte(path: Path, err: UnicodeDecodeError) -> str:
    """``byte 0xe9 at offset 186 (line 8)`` for the first byte of ``path`` that ``err``'s codec cannot decode.

    Decoders that read in chunks (pandas) report an offset inside a chunk; this re-decodes the whole file with
    the same codec to find the real offset.
    """
    data = path.read_bytes()
    try:
        data.decode(err.encoding)
        offset = err.start  # not reproducible on the whole file: report what the reader said
    except UnicodeDecodeError as whole:
        offset = whole.start
    except LookupError:
        offset = err.start
    byte = data[offset:offset + 1].hex() if offset < len(data) else "??"
    line = data.count(b"\n", 0, offset) + 1
    return f"byte 0x{byte} at offset {offset} (line {line})"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``path`` (created), across processes of this machine; released when the
    holder exits, even by ``kill -9``."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
