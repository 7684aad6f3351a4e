"""Tests for jaxnets/data/safe.py: malicious pickles are refused without running, unsafe archives are refused
before anything is written, corrupt files and bad downloads give errors naming the file."""
import gzip
import hashlib
import io
import os
import pickle
import re
import shlex
import stat
import subprocess
import tarfile
import zipfile

import numpy as np
import pytest

from jaxnets.data import safe

# ------------------------------------------------------------------------------------------------
# Restricted unpickling


def test_safe_unpickle_reads_numpy_and_builtins(tmp_path):
    entry = {"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "labels": [3, 4], "name": "batch",
             "files": [b"a.png", b"b.png"], "nested": (1, 2.5, None, True, {"k": [np.float32(0)]})}
    entry["nested"][4]["k"] = [np.zeros(3, np.float32)]  # arrays anywhere, not numpy scalars
    path = tmp_path / "ok.pkl"
    for protocol in (2, 4):
        path.write_bytes(pickle.dumps(entry, protocol=protocol))
        loaded = safe.safe_unpickle(path)
        np.testing.assert_array_equal(loaded["data"], entry["data"])
        assert loaded["data"].dtype == np.uint8
        assert loaded["labels"] == [3, 4] and loaded["files"] == [b"a.png", b"b.png"] and loaded["name"] == "batch"
        np.testing.assert_array_equal(loaded["nested"][4]["k"][0], np.zeros(3, np.float32))


class _Reduce:
    """Pickles as a call to ``fn(*args)``, as a malicious file would."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payloads(marker):
    command = f"echo pwned > {shlex.quote(str(marker))}"
    return {
        "posix.system": pickle.dumps({"data": _Reduce(os.system, command)}, protocol=2),
        "io.open": pickle.dumps([_Reduce(open, str(marker), "w")], protocol=4),
        "builtins.exec": pickle.dumps(_Reduce(exec, f"open({str(marker)!r}, 'w').close()"), protocol=4),
        "subprocess.call": pickle.dumps(_Reduce(subprocess.call, ["touch", str(marker)]), protocol=4),
        # Protocol 0 with the INST opcode, which also looks its class up through find_class.
        "os.system": b"(S'" + command.encode() + b"'\nios\nsystem\n.",
        # Hidden inside an object array, as an element of the array state; protocol 2 names Python 2's module.
        "__builtin__.eval": pickle.dumps(np.array([_Reduce(eval, f"open({str(marker)!r}, 'w')")], dtype=object),
                                      protocol=2),
    }


@pytest.mark.parametrize("name", ["posix.system", "io.open", "builtins.exec", "subprocess.call", "os.system",
                                  "__builtin__.eval"])
def test_malicious_pickle_is_refused_without_running(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[name]
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    with pytest.raises(safe.UnsafePickleError, match=re.escape(f"{path}: refusing to load the pickle: it refers "
                                                                f"to the global {name}, but only")):
        safe.safe_unpickle(path)
    assert not marker.exists()
    # The payload is real: plain pickle.loads runs it.
    pickle.loads(payload)
    assert marker.exists()


def test_unsafe_pickle_error_is_a_value_error():
    assert issubclass(safe.UnsafePickleError, ValueError)


def test_codecs_encode_only_latin1(tmp_path):
    path = tmp_path / "codec.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(ValueError, match=re.escape(f"{path}: refusing to load the pickle: it calls _codecs.encode "
                                                   f"with encoding 'rot13'")):
        safe.safe_unpickle(path)
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00latin1\x86R.")
    assert safe.safe_unpickle(path) == b"abc"


def test_persistent_ids_are_refused(tmp_path):
    path = tmp_path / "pid.pkl"
    path.write_bytes(b"\x80\x02X\x01\x00\x00\x00xQ.")  # BINPERSID
    with pytest.raises(ValueError, match="refusing to load the pickle: it uses persistent ids"):
        safe.safe_unpickle(path)


def test_truncated_pickle_is_a_clear_error(tmp_path):
    data = pickle.dumps({"data": np.zeros((4, 8), np.uint8), "labels": [1, 2, 3, 4]}, protocol=2)
    path = tmp_path / "short.pkl"
    for cut in (1, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=re.escape(f"{path}: not a valid pickle ({cut} bytes): the file is "
                                                       f"truncated or corrupt")):
            safe.safe_unpickle(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a valid pickle"):
        safe.safe_unpickle(path)


# ------------------------------------------------------------------------------------------------
# Tar archives


def _tar(path, members, mode="w:gz"):
    """members: (TarInfo kwargs dict, bytes or None)."""
    with tarfile.open(path, mode) as tar:
        for fields, data in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_extract_tar_writes_files_and_dirs(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", [({"name": "top", "type": tarfile.DIRTYPE}, None),
                                            ({"name": "top/a.bin", "mode": 0o4777}, b"abc"),
                                            ({"name": "top/sub/b.bin"}, b"\x00" * 5000)])
    written = safe.extract_tar(archive, tmp_path / "out")
    out = (tmp_path / "out").resolve()
    assert sorted(written) == [out / "top/a.bin", out / "top/sub/b.bin"]
    assert (out / "top/a.bin").read_bytes() == b"abc" and (out / "top/sub/b.bin").read_bytes() == b"\x00" * 5000
    assert not (out / "top/a.bin").stat().st_mode & stat.S_ISUID  # the archive's modes are ignored


@pytest.mark.parametrize("name,problem", [
    ("../escaped", "contains '..'"),
    ("top/../../escaped", "contains '..'"),
    ("/tmp/escaped_abs", "has an absolute path"),
    ("C:/escaped", "has an absolute path"),
])
def test_extract_tar_refuses_escaping_paths(tmp_path, name, problem):
    archive = _tar(tmp_path / "bad.tar.gz", [({"name": "good.txt"}, b"fine"), ({"name": name}, b"bad")])
    with pytest.raises(ValueError, match=re.escape(f"{archive}: refusing to extract: member {name!r} {problem}")):
        safe.extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "out" / "good.txt").exists()  # checked before anything is written


@pytest.mark.parametrize("fields,kind", [
    ({"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "a symbolic link (to '/etc/passwd')"),
    ({"type": tarfile.SYMTYPE, "linkname": "inside.txt"}, "a symbolic link (to 'inside.txt')"),
    ({"type": tarfile.LNKTYPE, "linkname": "good.txt"}, "a hard link (to 'good.txt')"),
    ({"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "a device, fifo or other special file"),
    ({"type": tarfile.FIFOTYPE}, "a device, fifo or other special file"),
])
def test_extract_tar_refuses_links_and_special_files(tmp_path, fields, kind):
    archive = _tar(tmp_path / "links.tar", [({"name": "good.txt"}, b"fine"), ({"name": "link", **fields}, None)],
                   mode="w")
    with pytest.raises(ValueError, match=re.escape(f"{archive}: refusing to extract: member 'link' is {kind}; "
                                                   f"links and special files are not allowed.")):
        safe.extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "good.txt").exists() and not (tmp_path / "out" / "link").exists()


def test_extract_tar_does_not_follow_a_symlink_already_in_the_target(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data").symlink_to(outside)
    archive = _tar(tmp_path / "a.tar.gz", [({"name": "data/file.txt"}, b"x")])
    with pytest.raises(ValueError, match="member 'data/file.txt' resolves to .*outside"):
        safe.extract_tar(archive, tmp_path / "out")
    assert list(outside.iterdir()) == []


def test_extract_tar_truncated_or_corrupt(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [({"name": "f.bin"}, os.urandom(20000))])
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(f"{archive}: not a valid tar archive: truncated or corrupt")):
        safe.extract_tar(archive, tmp_path / "out")
    archive.write_bytes(b"not an archive at all" * 30)
    with pytest.raises(ValueError, match=re.escape(f"{archive}: not a valid tar archive")):
        safe.extract_tar(archive, tmp_path / "out")


# ------------------------------------------------------------------------------------------------
# Zip and gzip


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def test_extract_zip(tmp_path):
    archive = _zip(tmp_path / "ok.zip", [("d/a.txt", b"hello", stat.S_IFREG | 0o644), ("b.txt", b"x", None)])
    written = safe.extract_zip(archive, tmp_path / "out")
    assert sorted(p.name for p in written) == ["a.txt", "b.txt"]
    assert (tmp_path / "out" / "d" / "a.txt").read_bytes() == b"hello"


def test_extract_zip_refuses_escaping_paths_and_links(tmp_path):
    archive = _zip(tmp_path / "bad.zip", [("ok.txt", b"x", None), ("../escaped", b"bad", None)])
    with pytest.raises(ValueError, match=re.escape(f"{archive}: refusing to extract: member '../escaped' "
                                                   f"contains '..'")):
        safe.extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out" / "ok.txt").exists()
    archive = _zip(tmp_path / "link.zip", [("link", b"/etc/passwd", stat.S_IFLNK | 0o777)])
    with pytest.raises(ValueError, match=re.escape(f"{archive}: refusing to extract: member 'link' is a link")):
        safe.extract_zip(archive, tmp_path / "out")
    archive.write_bytes(archive.read_bytes()[:30])
    with pytest.raises(ValueError, match=re.escape(f"{archive}: not a valid zip archive: truncated or corrupt")):
        safe.extract_zip(archive, tmp_path / "out")


def test_extract_archive_detects_the_format(tmp_path):
    tar = _tar(tmp_path / "a.bin", [({"name": "t.txt"}, b"tar")])  # gzipped tar, misleading name
    zipped = _zip(tmp_path / "b.bin", [("z.txt", b"zip", None)])
    single = tmp_path / "c.txt.gz"
    single.write_bytes(gzip.compress(b"gz"))
    out = tmp_path / "out"
    assert [p.read_bytes() for p in safe.extract_archive(tar, out)] == [b"tar"]
    assert [p.read_bytes() for p in safe.extract_archive(zipped, out)] == [b"zip"]
    assert [(p.name, p.read_bytes()) for p in safe.extract_archive(single, out)] == [("c.txt", b"gz")]
    other = tmp_path / "d.bin"
    other.write_bytes(b"plain text")
    with pytest.raises(ValueError, match=re.escape(f"{other}: not a tar, zip or gzip archive")):
        safe.extract_archive(other, out)
    single.write_bytes(gzip.compress(os.urandom(5000))[:-20])
    with pytest.raises(ValueError, match=re.escape(f"{single}: the gzip stream is truncated or corrupt")):
        safe.extract_archive(single, out)


def test_read_maybe_gzip(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"plain")
    assert safe.read_maybe_gzip(path) == b"plain"
    path.write_bytes(gzip.compress(b"zipped"))
    assert safe.read_maybe_gzip(path) == b"zipped"
    data = bytearray(gzip.compress(b"zipped" * 100))
    data[15] ^= 0xFF  # corrupt the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(f"{path}: the gzip stream is truncated or corrupt")):
        safe.read_maybe_gzip(path)


def test_read_maybe_gzip_reads_at_most_limit_bytes(tmp_path):
    """A 1 GiB zero stream (about 1 MB gzipped, concatenated members) read with a limit: fast and bounded."""
    import time
    import tracemalloc

    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(b"head") + gzip.compress(bytes(16 << 20)) * 64)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        assert safe.read_maybe_gzip(path, limit=5) == b"head\0"
        assert safe.read_maybe_gzip(path, limit=0) == b""
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20 and time.perf_counter() - start < 2.0
    plain = tmp_path / "plain"
    plain.write_bytes(b"0123456789")
    assert safe.read_maybe_gzip(plain, limit=4) == b"0123" and safe.read_maybe_gzip(plain, limit=99) == b"0123456789"
    truncated = tmp_path / "t.gz"
    truncated.write_bytes(gzip.compress(os.urandom(5000))[:-20])
    assert len(safe.read_maybe_gzip(truncated, limit=10)) == 10  # the damage lies beyond the bytes read
    with pytest.raises(ValueError, match=re.escape(f"{truncated}: the gzip stream is truncated or corrupt")):
        safe.read_maybe_gzip(truncated, limit=6000)
    with pytest.raises(ValueError, match="read_maybe_gzip: limit must be an int >= 0, got -1"):
        safe.read_maybe_gzip(plain, limit=-1)
    with pytest.raises(TypeError, match="read_maybe_gzip: limit must be an int >= 0, got float 1.0"):
        safe.read_maybe_gzip(plain, limit=1.0)
    with pytest.raises(FileNotFoundError):
        safe.read_maybe_gzip(tmp_path / "missing", limit=1)


def test_gunzip_streams_to_disk(tmp_path):
    archive = tmp_path / "big.bin.gz"
    archive.write_bytes(gzip.compress(bytes(16 << 20)) * 8)  # 128 MiB of zeros
    import tracemalloc

    tracemalloc.start()
    try:
        target = safe.gunzip(archive, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert target == (tmp_path / "out" / "big.bin").resolve() and target.stat().st_size == 128 << 20
    assert peak < 8 << 20
    archive.write_bytes(gzip.compress(os.urandom(5000))[:-20])
    with pytest.raises(ValueError, match=re.escape(f"{archive}: the gzip stream is truncated or corrupt")):
        safe.gunzip(archive, tmp_path / "out")
    assert not target.exists()  # the partial output is deleted


# ------------------------------------------------------------------------------------------------
# Checksums and downloads


def test_verify_md5(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"payload")
    md5 = hashlib.md5(b"payload").hexdigest()
    safe.verify_md5(path, md5.upper())
    assert safe.file_md5(path) == md5
    with pytest.raises(ValueError, match=re.escape(f"{path}: checksum mismatch: md5 is {md5}, expected {'0' * 32}")):
        safe.verify_md5(path, "0" * 32)


def test_download_verifies_the_checksum(tmp_path, http_server):
    served, url = http_server
    payload = os.urandom(3 * (1 << 20) + 17)  # several read chunks
    (served / "file.bin").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    target = tmp_path / "dl" / "nested" / "file.bin"
    assert safe.download(f"{url}/file.bin", target, md5=md5) == target
    assert target.read_bytes() == payload and not target.with_name("file.bin.part").exists()
    other = tmp_path / "dl" / "other.bin"
    with pytest.raises(ValueError, match=re.escape(f"other.bin: checksum mismatch for the download from "
                                                   f"{url}/file.bin: md5 is {md5}, expected {'f' * 32}")):
        safe.download(f"{url}/file.bin", other, md5="f" * 32)
    assert not other.exists() and not other.with_name("other.bin.part").exists()


def test_download_failures_say_where_to_place_the_file(tmp_path, http_server, closed_port_url):
    _, url = http_server
    target = tmp_path / "x" / "missing.tar.gz"
    with pytest.raises(ConnectionError, match=re.escape(f"could not download {url}/missing.tar.gz (HTTPError: ")
                       + ".*" + re.escape(f"). Without network access, fetch missing.tar.gz (md5 {'a' * 32}) another "
                                          f"way and place it at {target}.")):
        safe.download(f"{url}/missing.tar.gz", target, md5="a" * 32)
    with pytest.raises(ConnectionError, match=re.escape(f"place it at {target}")):
        safe.download(f"{closed_port_url}/missing.tar.gz", target, md5="a" * 32, timeout=5)
    assert list(target.parent.iterdir()) == []
