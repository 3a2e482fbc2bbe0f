"""Issue 9, section 6: labels never silently change class on their way to int32.

int64 2**32 + 3 used to wrap to class 3 and train; a float 1e20 read "must not be negative".
Range and integrality are now checked before any cast, and the message names the file and
array, the first offending index and its value. Training on one class warns.
"""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from cnndsl.errors import DataError
from cnndsl.shape import Shape
from cnndsl.training.data import MAX_CLASSES, DataWarning, check_labels, class_indices, load_dataset, select_classes

IN = Shape(1, (4, 4))


def _npz(tmp_path: Path, y: np.ndarray, **extra: np.ndarray) -> str:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((len(y), 4, 4), np.uint8), y=y, **extra)
    return str(p)


def _error(spec: str) -> DataError:
    with pytest.raises(DataError) as e:
        load_dataset(spec, IN, val_fraction=0, test_fraction=0)
    return e.value


def test_int64_label_beyond_int32_does_not_wrap(tmp_path: Path) -> None:
    spec = _npz(tmp_path, np.array([0, 1, 2**32 + 3, 1], np.int64))
    assert np.int64(2**32 + 3).astype(np.int32) == 3  # what used to happen
    e = _error(spec)
    assert e.message == f"`{spec}`: `y`: label [2] is 4294967299, beyond the largest class index {MAX_CLASSES - 1:,}"
    assert "1 of 4 labels are that large" in e.notes[0] and "wrap around" in e.notes[0]


def test_float_label_1e20_is_out_of_range_not_negative(tmp_path: Path) -> None:
    spec = _npz(tmp_path, np.array([0, 1, 1e20, 1]))
    e = _error(spec)
    assert "label [2] is 1e+20, beyond the largest class index" in e.message
    assert "negative" not in str(e)


@pytest.mark.parametrize(
    ("y", "expect"),
    [
        (np.array([0, 1, 2.5, 1]), "`y` must hold whole numbers: label [2] is 2.5"),
        (np.array([0, np.nan, 1, 1]), "`y` must hold whole numbers: label [1] is nan"),
        (np.array([0, 1, 1, -np.inf]), "`y` must hold whole numbers: label [3] is -inf"),
        (np.array([0, 3, -1, -7], np.int64), "`y` must not be negative: label [2] is -1"),
        (np.array([0, 1, 2**63 - 1, 0], np.uint64), "label [2] is 9223372036854775807, beyond"),
        (np.array([[0, 1], [1, 0.5], [0, 0], [1, 1]]), "multi-label targets, which must be 0 or 1: [1, 1] is 0.5"),
        (np.array([[0, 1], [1, 0], [0, 2], [1, 1]]), "multi-label targets, which must be 0 or 1: [2, 1] is 2"),
    ],
)
def test_bad_labels_name_the_first_offender(tmp_path: Path, y: np.ndarray, expect: str) -> None:
    assert expect in _error(_npz(tmp_path, y)).message


def test_good_labels_of_any_integral_dtype_load(tmp_path: Path) -> None:
    for y in (np.array([0, 2, 1, 2], np.int64), np.array([0.0, 2.0, 1.0, 2.0]), np.array([0, 2, 1, 2], np.uint16)):
        ds = load_dataset(_npz(tmp_path, y), IN, val_fraction=0, test_fraction=0)
        assert ds.y_train.dtype == np.int32 and ds.y_train.tolist() == [0, 2, 1, 2] and ds.num_classes == 3


def test_idx_labels_are_checked_before_the_cast(tmp_path: Path) -> None:
    def idx(code: int, a: np.ndarray, dt: str) -> bytes:
        return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(dt).tobytes()

    images = np.zeros((3, 4, 4), np.uint8)
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(0x08, images, ">u1")))
        labels = idx(0x0E, np.array([0.0, 1.0, 1e20]), ">f8")  # float64 labels, one huge
        (tmp_path / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    e = _error(f"mnist:{tmp_path}")
    assert e.message.startswith(f"`mnist:{tmp_path}`: train labels: label [2] is 1e+20, beyond")


def test_class_indices_direct() -> None:
    assert class_indices(np.array([3, 0, 1], np.int64), "y").dtype == np.int32
    with pytest.raises(DataError, match="must be class indices, got <U1"):
        class_indices(np.array(["a"]), "y")


def test_check_labels_names_the_first_offender() -> None:
    with pytest.raises(DataError) as e:
        check_labels(np.array([0, 1, -4, -2]), 5, what="training labels")
    assert e.value.message == "training labels must not be negative, found -4"
    assert e.value.notes == ["the first is label [2]: -4"]
    with pytest.raises(DataError) as e:
        check_labels(np.array([0, 7, 9, 1]), 5)
    assert "the first is label [1]: 7" in e.value.notes


def test_training_on_one_class_warns(tmp_path: Path) -> None:
    with pytest.warns(DataWarning, match=r"every training example of .* is of class 0: the network can only learn"):
        load_dataset(_npz(tmp_path, np.zeros(8, np.int64)), IN, val_fraction=0, test_fraction=0)
    ds = load_dataset(_npz(tmp_path, np.arange(8) % 2), IN, val_fraction=0, test_fraction=0)
    with pytest.warns(DataWarning, match=r"\(classes 1\)` is of class 0"):
        select_classes(ds, [1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        select_classes(ds, [1, 0])
        load_dataset(_npz(tmp_path, np.arange(8) % 2), IN, val_fraction=0, test_fraction=0)
