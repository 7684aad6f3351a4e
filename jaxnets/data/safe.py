"""Reading untrusted dataset files safely.

Dataset files come from the network or from a shared disk, so every reader here treats them as
hostile: pickles are loaded by an unpickler that can only rebuild numpy arrays (never call arbitrary
code), archives are checked member by member before anything is written (no path may leave the target
directory, no links or device files), downloads are verified against a published checksum before they
are put in place, and a truncated or corrupted file raises a `ValueError` that names the file and says
what is wrong.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import pickle
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from jaxnets.checks import check_int

GZIP_MAGIC = b"\x1f\x8b"

# ------------------------------------------------------------------------------------------------
# Restricted unpickling


def _numpy_reconstruct():
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _allowed_globals() -> dict[tuple[str, str], object]:
    import numpy as np

    reconstruct = _numpy_reconstruct()
    return {
        # An ndarray pickles as _reconstruct(ndarray, (0,), b"b") followed by __setstate__ with its
        # shape, dtype and raw bytes. Files written by numpy 1.x name numpy.core, numpy 2 names numpy._core.
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1"); only that codec
        # is allowed (see _RestrictedUnpickler._latin1_encode).
        ("_codecs", "encode"): None,
    }


class UnsafePickleError(ValueError):
    """A pickle refers to a global (a function or class) outside the allowed numpy reconstruction."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals needed to rebuild numpy arrays of plain data.

    Every callable a pickle can run comes through `find_class` (GLOBAL, STACK_GLOBAL, INST, OBJ and
    the copyreg EXT opcodes all call it), so refusing every other global means the pickle cannot call
    `os.system`, `builtins.eval`, `subprocess.Popen` or anything else.
    """

    def __init__(self, file, *, name: str):
        # encoding="bytes": the CIFAR batches were written by Python 2, whose str becomes bytes here.
        super().__init__(file, encoding="bytes")
        self._name = name
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            allowed = ", ".join(f"{m}.{n}" for m, n in self._allowed)
            raise UnsafePickleError(f"{self._name}: refusing to load the pickle: it refers to the global "
                                    f"{module}.{name}, but only the globals that rebuild numpy arrays "
                                    f"({allowed}) are allowed. The file is not a plain dataset batch; it "
                                    f"may be malicious.")
        if (module, name) == ("_codecs", "encode"):
            return self._latin1_encode
        return self._allowed[(module, name)]

    def _latin1_encode(self, text, encoding="latin1", errors="strict"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise UnsafePickleError(f"{self._name}: refusing to load the pickle: it calls _codecs.encode "
                                    f"with encoding {encoding!r} on a {type(text).__name__}; only latin1-encoding "
                                    f"a str (how Python 3 writes bytes in protocol 2) is allowed.")
        return text.encode("latin1")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._name}: refusing to load the pickle: it uses persistent ids, which "
                                f"plain dataset batches never contain.")


def safe_unpickle(path: str | os.PathLike) -> object:
    """Load a pickle that may only contain builtin containers, numbers, strings and numpy arrays.

    Args:
      path: the pickle file (for example a CIFAR `data_batch_1`). Python 2 strings load as `bytes`.
    Returns: the unpickled object.
    Raises:
      UnsafePickleError (a ValueError): naming the file and the global, if the pickle refers to anything
        but numpy's array reconstruction; it is refused when that global is looked up, before it can run.
      ValueError: naming the file, if the pickle is truncated or corrupt.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), name=str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # untrusted bytes: any failure inside the unpickler means a bad file
        raise ValueError(f"{path}: not a valid pickle ({len(data)} bytes): the file is truncated or corrupt "
                         f"({type(error).__name__}: {error}).") from error


# ------------------------------------------------------------------------------------------------
# Compressed files, checksums


def _gzip_error(path: Path, error: Exception) -> ValueError:
    return ValueError(f"{path}: the gzip stream is truncated or corrupt ({type(error).__name__}: {error}); "
                      f"delete the file and download it again.")


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether the file starts with the gzip magic number (compression is detected from the content)."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_maybe_gzip(path: str | os.PathLike, *, limit: int | None = None) -> bytes:
    """Return the bytes of `path`, decompressed if the file starts with the gzip magic number.

    Compression is detected from the content, not the file name, so `x.gz` that was already
    decompressed by a browser and a plain file renamed `.gz` both read correctly.

    Args:
      path: the file.
      limit: read (and decompress) at most this many bytes, a non-negative int, or None for the whole
        file. A reader that knows the size from a header passes `size + 1`: one byte more tells it that
        trailing data follows, and a small file that announces a huge decompressed size (a "gzip bomb")
        costs no more memory or time than its header says.
    Returns: the (decompressed) bytes, at most `limit` of them.
    Raises:
      ValueError: naming the file, if its gzip stream is truncated or corrupt (within the bytes read).
    """
    path = Path(path)
    if limit is not None:
        limit = check_int("read_maybe_gzip", "limit", limit, minimum=0)
    gzipped = False
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            with stream:
                return stream.read() if limit is None else stream.read(limit)
    except (EOFError, OSError, zlib.error) as error:  # BadGzipFile is an OSError
        if not gzipped:
            raise
        raise _gzip_error(path, error) from error


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks (the datasets publish MD5 checksums)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, md5: str) -> None:
    """Check a file against its published MD5 checksum.

    Raises:
      ValueError: naming the file and both checksums, if they differ.
    """
    got = file_md5(path)
    if got != md5.lower():
        raise ValueError(f"{path}: checksum mismatch: md5 is {got}, expected {md5.lower()}. The file is "
                         f"truncated, corrupted or not the official one; delete it and download it again.")


# ------------------------------------------------------------------------------------------------
# Archive extraction


def _safe_target(archive: Path, dest: Path, name: str) -> Path:
    """The path a member called `name` extracts to, or ValueError if it would leave `dest`."""
    pure = PurePosixPath(name.replace("\\", "/"))
    drive = len(name) >= 2 and name[1] == ":" and name[0].isalpha()  # "C:..." is absolute on Windows
    if not name or pure.is_absolute() or drive:
        raise ValueError(f"{archive}: refusing to extract: member {name!r} has an absolute path.")
    if ".." in pure.parts:
        raise ValueError(f"{archive}: refusing to extract: member {name!r} contains '..' and would be "
                         f"written outside {dest}.")
    target = (dest / Path(*pure.parts)).resolve() if pure.parts else dest
    if not target.is_relative_to(dest):  # also catches a symlink already inside dest pointing out
        raise ValueError(f"{archive}: refusing to extract: member {name!r} resolves to {target}, outside {dest}.")
    return target


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname!r})"
    return "a device, fifo or other special file"


def _extract(archive: Path, dest: Path, entries: list[tuple[str, bool, str | None, Callable]]) -> list[Path]:
    """Write the archive's `entries`, `(name, is_dir, refusal or None, open)`, below `dest`; every entry is
    checked (its refusal, its path) before anything is written. Returns the regular files written."""
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    targets = []
    for name, _, refused, _ in entries:
        if refused is not None:
            raise ValueError(f"{archive}: refusing to extract: member {name!r} is {refused}.")
        targets.append(_safe_target(archive, dest, name))
    written = []
    for (_, is_dir, _, open_member), target in zip(entries, targets):
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as source, open(target, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        written.append(target)
    return written


def extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a (possibly compressed) tar archive into `dest`, refusing anything unsafe.

    Every member is checked before anything is written: only regular files and directories are
    accepted, and none may have an absolute path, a `..` component, or resolve outside `dest`.
    Files are written with default permissions (the archive's modes and owners are ignored).

    Returns: the paths of the extracted regular files.
    Raises:
      ValueError: naming the archive and the member, for a link, special file or escaping path; naming
        the archive, if it is truncated or corrupt.
    """
    def refusal(member: tarfile.TarInfo) -> str | None:
        if member.isfile() or member.isdir():
            return None
        return f"{_tar_kind(member)}; links and special files are not allowed"

    try:
        with tarfile.open(archive, "r:*") as tar:
            entries = [(m.name, m.isdir(), refusal(m), lambda m=m: tar.extractfile(m)) for m in tar.getmembers()]
            return _extract(Path(archive), Path(dest), entries)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{archive}: not a valid tar archive: truncated or corrupt "
                         f"({type(error).__name__}: {error}); delete it and download it again.") from error


def extract_zip(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a zip archive into `dest` with the same checks as `extract_tar`.

    Symbolic links (stored by Unix zip tools as entries with the `S_IFLNK` mode) are refused.

    Returns: the paths of the extracted regular files.
    Raises:
      ValueError: naming the archive and the member, for a link or escaping path; naming the archive,
        if it is truncated or corrupt.
    """
    def refusal(info: zipfile.ZipInfo) -> str | None:
        mode = info.external_attr >> 16  # Unix st_mode, when the zip was made on Unix
        if stat.S_IFMT(mode) in (0, stat.S_IFREG, stat.S_IFDIR):
            return None
        return f"a link or special file (mode {oct(mode)}); links are not allowed"

    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [(i.filename, i.is_dir(), refusal(i), lambda i=i: zf.open(i)) for i in zf.infolist()]
            return _extract(Path(archive), Path(dest), entries)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{archive}: not a valid zip archive: truncated or corrupt "
                         f"({type(error).__name__}: {error}); delete it and download it again.") from error


def gunzip(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Decompress a single-file `.gz` into the directory `dest` (the name loses its `.gz`).

    The stream is decompressed in 1 MiB chunks straight to the file, so memory stays bounded whatever
    size the archive expands to.

    Returns: the path of the decompressed file.
    Raises:
      ValueError: naming the file, if the gzip stream is truncated or corrupt (the partial output is deleted).
    """
    archive, dest = Path(archive), Path(dest)
    name = archive.name[:-3] if archive.name.endswith(".gz") else archive.name + ".out"
    dest.mkdir(parents=True, exist_ok=True)
    target = _safe_target(archive, dest.resolve(), name)
    try:
        with gzip.open(archive, "rb") as source, open(target, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    except (EOFError, OSError, zlib.error) as error:
        target.unlink(missing_ok=True)
        raise _gzip_error(archive, error) from error
    return target


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a tar (plain, gzip, bz2 or xz), zip or single-file gzip archive, detected by content.

    Returns: the paths of the extracted regular files.
    Raises:
      ValueError: naming the archive, if it is none of these formats, is truncated or corrupt, or holds a
        link or a path leaving `dest` (see `extract_tar`).
    """
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        return extract_zip(archive, dest)
    try:
        is_tar = tarfile.is_tarfile(archive)
    except (OSError, EOFError, zlib.error):  # e.g. a truncated gzip stream
        is_tar = False
    if is_tar:
        return extract_tar(archive, dest)
    with open(archive, "rb") as f:
        if f.read(2) == GZIP_MAGIC:
            return [gunzip(archive, dest)]
    raise ValueError(f"{archive}: not a tar, zip or gzip archive (or it is truncated); delete it and "
                     f"download it again.")


# ------------------------------------------------------------------------------------------------
# Downloads


def download(url: str, path: str | os.PathLike, *, md5: str, timeout: float = 60.0) -> Path:
    """Download `url` to `path` and verify its MD5 before putting it in place.

    The data is streamed to `path + ".part"`, hashed on the way, and renamed to `path` only when the
    checksum matches, so an interrupted or wrong download never leaves a file that looks complete.

    Args:
      url: an `http(s)://` (or `file://`) URL.
      path: where the file goes; parent directories are created.
      md5: the published hex MD5 of the file.
      timeout: seconds to wait for the server on connect and on each read.
    Returns: `path`.
    Raises:
      ConnectionError: if the file cannot be fetched (no network, HTTP error); the message says which
        file to place where to proceed without network.
      ValueError: naming the file, on a checksum mismatch (the download is deleted).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, http.client.HTTPException) as error:  # URLError and HTTPError are OSErrors
        part.unlink(missing_ok=True)
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise ConnectionError(f"could not download {url} ({type(error).__name__}: {reason}). Without network "
                              f"access, fetch {path.name} (md5 {md5}) another way and place it at {path}.") from error
    got = digest.hexdigest()
    if got != md5.lower():
        part.unlink(missing_ok=True)
        raise ValueError(f"{path.name}: checksum mismatch for the download from {url}: md5 is {got}, "
                         f"expected {md5.lower()}. The download was deleted; the server may be serving a "
                         f"corrupted or different file.")
    os.replace(part, path)
    return path
