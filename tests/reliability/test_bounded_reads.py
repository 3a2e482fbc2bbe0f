"""Issue 9, section 5 "Reads": a file's header bounds what is read, before anything is allocated.

Each attack is a small file that promises little and holds a lot, or promises a lot: IDX
gzip bombs, `.npz` archives whose zip directory or `.npy` header lies, a text file named
`.npz`, and images whose header claims billions of pixels.
"""

from __future__ import annotations

import gzip
import io
import struct
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Self

import numpy as np
import pytest

from cnndsl.errors import DataError
from cnndsl.shape import Shape
from cnndsl.training import data
from cnndsl.training.data import MAX_IMAGE_PIXELS, load_dataset, load_images, read_idx

IDX_UBYTE_3D = b"\0\0\x08\x03"


def idx_header(*dims: int) -> bytes:
    return IDX_UBYTE_3D[:3] + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


class _Counting:
    """Wraps a file object and counts the bytes handed out (decompressed, for gzip)."""

    def __init__(self, f: Any, counter: list[int]) -> None:
        self.f, self.counter = f, counter

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.counter[0] += len(b)
        return b

    def readinto(self, buf: Any) -> int:
        n = self.f.readinto(buf)
        self.counter[0] += n or 0
        return n

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


@pytest.fixture
def decompressed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes `read_idx` takes out of gzip streams (patched into `cnndsl.training.data.gzip.open`)."""
    counter = [0]
    real = gzip.open
    monkeypatch.setattr(data.gzip, "open", lambda p, mode="rb": _Counting(real(p, mode), counter))
    return counter


# --- IDX ---------------------------------------------------------------------------------------
def test_gzip_bomb_decompresses_no_more_than_the_header_promises(tmp_path: Path, decompressed: list[int]) -> None:
    # The header promises 10x28x28 bytes; the stream inflates to 64 MiB of zeros (64 KiB on disk).
    p = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.GzipFile(p, "wb", compresslevel=9) as f:  # (gzip.open is patched to count)
        f.write(idx_header(10, 28, 28))
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert p.stat().st_size < 200_000
    t = time.monotonic()
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert time.monotonic() - t < 1.0
    assert "promises 7840 bytes of data (10x28x28 uint8), but it holds more than that" in e.value.message
    assert decompressed[0] <= 16 + 7840 + 1  # header, the promised data, one byte to see there is more


def test_gzip_header_promising_more_than_memory_is_refused_before_allocating(
    tmp_path: Path, decompressed: list[int]
) -> None:
    p = tmp_path / "x.idx.gz"
    p.write_bytes(gzip.compress(idx_header(60000, 65535, 65535) + bytes(1000)))
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert "would need 234 TiB of memory" in e.value.message
    assert "60000x65535x65535 uint8" in e.value.message
    assert "nothing was allocated" in e.value.notes[0]
    assert decompressed[0] == 16  # the header alone


def test_plain_idx_is_sized_from_the_file_before_reading(tmp_path: Path) -> None:
    p = tmp_path / "x.idx"
    p.write_bytes(idx_header(100000, 1000, 1000) + bytes(10))
    with pytest.raises(DataError, match=r"promises 100000000000 bytes .*but it holds 10$"):
        read_idx(p)


def test_idx_short_data_and_exact_data(tmp_path: Path) -> None:
    p = tmp_path / "x.idx.gz"
    p.write_bytes(gzip.compress(idx_header(2, 3, 4) + bytes(20)))
    with pytest.raises(DataError, match="promises 24 bytes .* but it holds only 20"):
        read_idx(p)
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p.write_bytes(gzip.compress(idx_header(2, 3, 4) + a.tobytes()))
    assert np.array_equal(read_idx(p), a)


def test_memory_limit_bounds_idx_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "x.idx.gz"
    p.write_bytes(gzip.compress(idx_header(4, 32, 32) + bytes(4096)))
    monkeypatch.setenv("CNNDSL_MEMORY_LIMIT", "1K")
    with pytest.raises(DataError, match="would need 4 KiB of memory, but CNNDSL_MEMORY_LIMIT=1K is 1 KiB"):
        read_idx(p)
    monkeypatch.setenv("CNNDSL_MEMORY_LIMIT", "off")
    assert read_idx(p).shape == (4, 32, 32)


# --- .npz -------------------------------------------------------------------------------------
def test_text_file_named_npz_is_not_an_npz_file(tmp_path: Path) -> None:
    p = tmp_path / "data.npz"
    p.write_text("x,y\n1,2\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(p), Shape(1, (4, 4)))
    text = str(e.value)
    assert e.value.message == f"`{p}` is not an .npz file"
    assert "zip archive of .npy arrays" in text and "np.savez" in text
    assert "pickle" not in text  # not numpy's allow_pickle hint


def test_npy_named_npz_says_so(tmp_path: Path) -> None:
    p = tmp_path / "data.npz"
    with p.open("wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match="is not an .npz file but a single .npy array"):
        load_dataset(str(p), Shape(1, (4, 4)))


def test_object_arrays_are_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("pickle.loads called")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([None, None], object), y=np.zeros(2, int))
    with pytest.raises(DataError) as e:
        load_dataset(str(p), Shape(1, (4, 4)))
    assert "`x` holds Python objects (object), which only pickle can load" in e.value.message
    assert "allow_pickle" not in str(e.value)


def _npz_with_member(path: Path, name: str, payload: bytes) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("y.npy", _npy(np.zeros(4, np.int64)))
        zf.writestr(name, payload)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_npy_header_promising_more_than_its_member_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**10, 1)})
    p = tmp_path / "lie.npz"
    _npz_with_member(p, "x.npy", buf.getvalue() + bytes(4))  # 4 bytes of data: one float
    with pytest.raises(DataError) as e:
        load_dataset(str(p), Shape(1, (4, 4)))
    assert "is damaged: the header of `x` promises 40000000000 bytes (10000000000x1 float32)" in e.value.message
    assert e.value.message.endswith("but its member holds 4")


def test_npz_members_are_bounded_by_memory_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.npz"
    np.savez(p, x=np.zeros((4, 16, 16), np.uint8), y=np.arange(4) % 2)
    monkeypatch.setenv("CNNDSL_MEMORY_LIMIT", "512")
    with pytest.raises(DataError, match=r"the arrays of .* \(as its zip directory lists them\) would need"):
        load_dataset(str(p), Shape(1, (16, 16)))
    monkeypatch.delenv("CNNDSL_MEMORY_LIMIT")
    assert load_dataset(str(p), Shape(1, (16, 16)), val_fraction=0, test_fraction=0.5).x_train.shape == (2, 16, 16, 1)


def test_the_float32_copy_is_bounded_before_it_is_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.npz"
    np.savez(p, x=np.zeros((4, 16, 16), np.uint8), y=np.arange(4) % 2)  # 1 KiB of pixels
    monkeypatch.setenv("CNNDSL_MEMORY_LIMIT", "4K")  # the file fits, 4 x 256 float32 values twice do not
    with pytest.raises(DataError, match=r"as float32 \(4 examples of 1@16x16\) would need 8 KiB of memory"):
        load_dataset(str(p), Shape(1, (16, 16)))


def test_damaged_zip_member_is_a_data_error(tmp_path: Path) -> None:
    p = tmp_path / "a.npz"
    np.savez_compressed(p, x=np.zeros((4, 16, 16), np.uint8), y=np.arange(4) % 2)
    raw = bytearray(p.read_bytes())
    raw[60:70] = b"\xff" * 10  # inside the first member's deflate stream
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(str(p), Shape(1, (16, 16)))


# --- images -----------------------------------------------------------------------------------
def _png_claiming(path: Path, width: int, height: int) -> None:
    """A 1x1 grayscale PNG whose IHDR is rewritten to claim `width` x `height` (CRC fixed)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    assert b[12:16] == b"IHDR"
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    path.write_bytes(bytes(b))


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    p = tmp_path / "wide.png"
    _png_claiming(p, 9000, 9000)  # 81 Mpx: under Pillow's own bomb limit, over ours
    decoded: list[int] = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1) or real_load(self))
    assert 9000 * 9000 > MAX_IMAGE_PIXELS
    with pytest.raises(DataError) as e:
        load_images([p], Shape(1, (28, 28)))
    assert "is 9000x9000 (81 Mpx): images over 67 Mpx are refused before decoding" in e.value.message
    assert not decoded


def test_decompression_bomb_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "bomb.png"
    _png_claiming(p, 100000, 100000)  # Pillow's DecompressionBombError at open
    t = time.monotonic()
    with pytest.raises(DataError) as e:
        load_images([p], Shape(1, (28, 28)))
    assert time.monotonic() - t < 1.0
    assert "claims too many pixels" in e.value.message and "refused before decoding" in e.value.message
    assert "decompression bomb" in e.value.notes[0]


def test_image_folders_are_bounded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / cls / f"{i}.png")
    _png_claiming(tmp_path / "b" / "9.png", 100000, 100000)
    with pytest.raises(DataError, match="b/9.png` claims too many pixels"):
        load_dataset(str(tmp_path), Shape(1, (8, 8)))
    (tmp_path / "b" / "9.png").unlink()
    monkeypatch.setenv("CNNDSL_MEMORY_LIMIT", "300")  # 3 images of 64 bytes, counted twice
    with pytest.raises(DataError, match=r"the images of .* \(stacked, so counted twice\) would need 384 B"):
        load_dataset(str(tmp_path), Shape(1, (8, 8)))
    monkeypatch.delenv("CNNDSL_MEMORY_LIMIT")
    assert load_dataset(str(tmp_path), Shape(1, (8, 8)), val_fraction=0, test_fraction=0).x_train.shape == (6, 8, 8, 1)
