"""Offline data sets: sources, fitting to the input line, splits, batches, augmentation."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnndsl.errors import DataError
from cnndsl.shape import Shape
from cnndsl.training.data import (
    Normalization,
    augment,
    batches,
    check_labels,
    fit_to_input,
    load_dataset,
    load_images,
    num_batches,
    random_crop,
    random_flip,
    read_idx,
    select_classes,
    split_indices,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


def shape(d: int, w: int, h: int) -> Shape:
    return Shape(d, (w, h))


def error_text(e: pytest.ExceptionInfo[DataError]) -> str:
    return "\n".join([e.value.message, *e.value.notes, *e.value.hints])


# --- digits ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> object:
    return load_dataset("digits", shape(1, 8, 8))


def test_digits_shapes_and_ranges(digits) -> None:
    ds = digits
    assert ds.x_train.shape[1:] == ds.x_val.shape[1:] == ds.x_test.shape[1:] == (8, 8, 1)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 1797
    assert len(ds.x_test) == round(0.2 * 1797)
    assert len(ds.x_val) == round(0.1 * (1797 - len(ds.x_test)))
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int32 and len(x) == len(y)
        assert set(np.unique(y)) == set(range(10))
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255  # 0..16 rescaled
    assert ds.num_classes == 10 and ds.class_names == tuple("0123456789")
    assert ds.normalization.kind == "none"


def test_digits_splits_follow_the_seed_but_test_is_fixed() -> None:
    a = load_dataset("digits", shape(1, 8, 8), seed=1)
    b = load_dataset("digits", shape(1, 8, 8), seed=1)
    c = load_dataset("digits", shape(1, 8, 8), seed=2)
    assert np.array_equal(a.x_val, b.x_val) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_val, c.x_val)
    assert np.array_equal(a.x_test, c.x_test)


def test_split_is_stratified_and_exact() -> None:
    y = np.repeat(np.arange(3), [50, 30, 20]).astype(np.int32)
    keep, take = split_indices(y, 0.1, seed=0)
    assert len(take) == 10 and len(keep) == 90
    assert np.bincount(y[take]).tolist() == [5, 3, 2]
    assert np.array_equal(np.sort(np.concatenate([keep, take])), np.arange(100))


def test_zero_pad_to_a_larger_non_square_input(digits) -> None:
    # 8x8 into 1@12x10: 12 wide, 10 tall -> arrays (N, 10, 12, 1), 2 rows and 2 columns of margin.
    ds = load_dataset("digits", shape(1, 12, 10))
    assert ds.x_train.shape[1:] == (10, 12, 1)
    assert np.array_equal(ds.x_train[:, 1:9, 2:10], digits.x_train)
    border = ds.x_train.copy()
    border[:, 1:9, 2:10] = 0
    assert not border.any()


def test_flat_input_flattens_channels_last(digits) -> None:
    ds = load_dataset("digits", Shape(64))
    assert ds.x_train.shape[1:] == (64,)
    assert np.array_equal(ds.x_train, digits.x_train.reshape(len(digits.x_train), 64))


def test_normalisations(digits) -> None:
    ds = load_dataset("digits", shape(1, 8, 8), normalize="0-1")
    assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0
    ds = load_dataset("digits", shape(1, 8, 8), normalize="standardize")
    assert abs(ds.x_train.mean()) < 1e-4 and abs(ds.x_train.std() - 1) < 1e-4
    mean, std = digits.x_train.mean(), digits.x_train.std()
    assert ds.normalization.mean[0] == pytest.approx(mean, rel=1e-5)
    assert np.allclose(ds.x_test, (digits.x_test - mean) / std, atol=1e-5)
    again = Normalization.from_dict(ds.normalization.to_dict())
    assert np.array_equal(again.apply(digits.x_test), ds.x_test)
    with pytest.raises(DataError) as e:
        load_dataset("digits", shape(1, 8, 8), normalize="standardise")
    assert "did you mean `standardize`?" in e.value.hints


@pytest.mark.parametrize(
    ("input_shape", "expect"),
    [
        (shape(1, 7, 7), ["are 1@8x8, but the network's input is 1@7x7", "never cropped", "`input 1@8x8`"]),
        (shape(1, 11, 12), ["even number of pixels", "`input 1@12x12`"]),
        (shape(3, 8, 8), ["1 channel, but the network's input is 3@8x8", "`input 1@8x8`"]),
        (Shape(100), ["flat vector of 100", "`input 64`"]),
    ],
)
def test_input_shape_errors(input_shape: Shape, expect: list[str]) -> None:
    with pytest.raises(DataError) as e:
        load_dataset("digits", input_shape)
    for text in expect:
        assert text in error_text(e)


def test_rgb_to_one_channel_needs_grayscale() -> None:
    x = np.zeros((2, 4, 4, 3), np.uint8)
    x[..., 0] = 100
    with pytest.raises(DataError) as e:
        fit_to_input(x, shape(1, 4, 4), source="rgb")
    assert any("grayscale" in h for h in e.value.hints)
    gray = fit_to_input(x, shape(1, 4, 4), source="rgb", grayscale=True)
    assert gray.shape == (2, 4, 4, 1) and (gray == 30).all()  # round(0.299 * 100)


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        ("digitz", ["no data set `digitz`", "did you mean `digits`?", "looked for a file or folder"]),
        ("mnist", ["`mnist` needs the folder", "mnist:DIR"]),
        ("mnist:/no/such/dir", ["no folder `/no/such/dir`"]),
        ("nothing.npz", ["no file `nothing.npz`"]),
    ],
)
def test_bad_specs(spec: str, expect: list[str]) -> None:
    with pytest.raises(DataError) as e:
        load_dataset(spec, shape(1, 8, 8))
    for text in expect:
        assert text in error_text(e)


def test_bad_fractions() -> None:
    with pytest.raises(DataError, match="val_fraction"):
        load_dataset("digits", shape(1, 8, 8), val_fraction=1.0)


# --- IDX -------------------------------------------------------------------------------------
def idx_bytes(a: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[a.dtype.type]
    header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx_set(folder: Path, n_train: int = 12, n_test: int = 5, *, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 5), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 3).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 3).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(a)))
        else:
            (folder / name).write_bytes(idx_bytes(a))
    return arrays


def test_read_idx_parses_the_header(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    p = tmp_path / "a.idx.gz"
    p.write_bytes(gzip.compress(idx_bytes(a)))
    b = read_idx(p)
    assert b.shape == (2, 3, 4) and b.dtype == np.int32 and np.array_equal(a, b)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_set_non_square(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_set(tmp_path, gz=gz)
    # The images are 4 tall and 5 wide: `1@5x4`. Pad to 1@7x6.
    ds = load_dataset(f"mnist:{tmp_path}", shape(1, 7, 6), val_fraction=0.25)
    assert ds.x_test.shape == (5, 6, 7, 1)
    assert np.array_equal(ds.x_test[:, 1:5, 1:6, 0], arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert len(ds.x_train) == 9 and len(ds.x_val) == 3
    assert np.bincount(ds.y_val).tolist() == [1, 1, 1]
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{tmp_path}", shape(1, 4, 5))
    assert "are 1@5x4, but the network's input is 1@4x5" in e.value.message


def test_idx_missing_files(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        load_dataset(f"fashion-mnist:{tmp_path}", shape(1, 5, 4))
    assert "is missing `t10k-labels-idx1-ubyte.gz`" in e.value.message
    assert str(tmp_path) in e.value.notes[0]


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (gzip.compress(b"\x12\x34\x08\x01\0\0\0\1x", mtime=0), "not an IDX file"),
        (gzip.compress(b"\0\0\x08\x03\0\0", mtime=0), "header is cut short"),
        (gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]), mtime=0), "promises 9 bytes of data"),
        (b"this is not gzip", "cannot read"),
        (gzip.compress(b"\0\0\x08\x01\0\0\0\1x", mtime=0)[:-6], "cannot read"),
    ],
)
def test_corrupt_idx(tmp_path: Path, data: bytes, expect: str) -> None:
    write_idx_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(data)
    with pytest.raises(DataError) as e:
        load_dataset(f"mnist:{tmp_path}", shape(1, 5, 4))
    assert expect in e.value.message
    assert "train-labels-idx1-ubyte.gz" in e.value.message


def test_idx_counts_must_agree(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    labels = np.zeros(3, np.uint8)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DataError, match="do not match"):
        load_dataset(f"mnist:{tmp_path}", shape(1, 5, 4))


def test_folder_of_idx_files_hints_the_prefix(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path), shape(1, 5, 4))
    assert f"`mnist:{tmp_path}`" in e.value.hints[0]


# --- .npz ------------------------------------------------------------------------------------
def test_npz_splits_and_xy(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    y = np.arange(40) % 4
    np.savez(tmp_path / "a.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    ds = load_dataset(str(tmp_path / "a.npz"), shape(1, 6, 6), val_fraction=0.2)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (24, 6, 10)
    assert np.array_equal(ds.x_test[..., 0], x[30:]) and ds.num_classes == 4
    np.savez(tmp_path / "b.npz", x=x, y=y.astype(np.float64), class_names=np.array(["a", "b", "c", "d"]))
    ds = load_dataset(str(tmp_path / "b.npz"), shape(1, 6, 6), val_fraction=0, test_fraction=0.25)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (30, 0, 10)
    assert ds.x_val.shape == (0, 6, 6, 1) and ds.class_names == ("a", "b", "c", "d")


def test_npz_rgb_and_grayscale(tmp_path: Path) -> None:
    x = np.full((10, 4, 4, 3), 200, np.uint8)
    np.savez(tmp_path / "rgb.npz", x=x, y=np.zeros(10, np.int64))
    assert load_dataset(str(tmp_path / "rgb.npz"), shape(3, 4, 4)).x_train.shape[1:] == (4, 4, 3)
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "rgb.npz"), shape(1, 4, 4))
    assert "3 channels" in e.value.message
    ds = load_dataset(str(tmp_path / "rgb.npz"), shape(1, 4, 4), grayscale=True)
    assert ds.x_train.shape[1:] == (4, 4, 1) and (ds.x_train == 200).all()


@pytest.mark.parametrize(
    ("arrays", "expect"),
    [
        ({"images": np.zeros((2, 4, 4))}, "lacks the arrays"),
        ({"x": np.zeros((2, 3, 4, 4)), "y": np.zeros(2, int)}, "channels-first"),
        ({"x": np.zeros((2, 4, 4)), "y": np.zeros(3, int)}, "has 2 images but"),
        ({"x": np.zeros((2, 4, 4)), "y": np.array([0.5, 1])}, "whole numbers"),
        ({"x": np.zeros((2, 4, 4)), "y": np.array([0, -1])}, "must not be negative"),
        ({"x": np.full((2, 4, 4), np.nan), "y": np.zeros(2, int)}, "NaN"),
        ({"x": np.array([None, None], object), "y": np.zeros(2, int)}, "cannot read"),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict[str, np.ndarray], expect: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "bad.npz"), shape(1, 4, 4))
    assert expect in e.value.message


# --- image folders ---------------------------------------------------------------------------
def write_png(path: Path, a: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_folder(root: Path, size: tuple[int, int] = (6, 5)) -> None:
    """Two classes, `b` (3 images) and `a` (2 images), each `size` = (width, height)."""
    w, h = size
    for cls, n, value in (("b", 3, 200), ("a", 2, 50)):
        for i in range(n):
            write_png(root / cls / f"{i}.png", np.full((h, w, 3), (value, 0, 0), np.uint8))


def test_image_folder(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    ds = load_dataset(str(tmp_path), shape(3, 6, 5), val_fraction=0, test_fraction=0)
    assert ds.class_names == ("a", "b") and ds.x_train.shape == (5, 5, 6, 3)
    assert ds.y_train.tolist() == [0, 0, 1, 1, 1]
    assert (ds.x_train[ds.y_train == 1][..., 0] == 200).all()
    gray = load_dataset(str(tmp_path), shape(1, 8, 7), val_fraction=0, test_fraction=0)
    assert gray.x_train.shape == (5, 7, 8, 1)
    assert gray.x_train[4, 3, 3, 0] == round(0.299 * 200)


def test_image_folder_train_test_layout(tmp_path: Path) -> None:
    make_folder(tmp_path / "train")
    make_folder(tmp_path / "test")
    ds = load_dataset(str(tmp_path), shape(1, 6, 5), val_fraction=0)
    assert len(ds.x_train) == len(ds.x_test) == 5


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(str(tmp_path), shape(1, 6, 5))
    make_folder(tmp_path)
    (tmp_path / "c").mkdir()
    with pytest.raises(DataError, match=r"class folder .*c` has no images"):
        load_dataset(str(tmp_path), shape(1, 6, 5))
    (tmp_path / "c").rmdir()
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path), shape(1, 4, 4))
    assert "are 1@6x5, but the network's input is 1@4x4" in e.value.message
    assert any("resize" in h for h in e.value.hints)
    assert load_dataset(str(tmp_path), shape(1, 4, 4), resize=True).x_train.shape[1:] == (4, 4, 1)
    write_png(tmp_path / "a" / "odd.png", np.zeros((9, 9), np.uint8))
    with pytest.raises(DataError, match=r"differ in size: .* is 1@6x5, .*odd\.png` is 1@9x9"):
        load_dataset(str(tmp_path), shape(1, 6, 5))
    (tmp_path / "a" / "odd.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read the image"):
        load_dataset(str(tmp_path), shape(1, 6, 5))


def test_load_images_for_predict(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png", np.full((28, 28), 255, np.uint8))
    x = load_images([tmp_path / "x.png"], shape(1, 32, 32))
    assert x.shape == (1, 32, 32, 1) and x.dtype == np.float32 and x.sum() == 255 * 28 * 28
    assert load_images([tmp_path / "x.png"], shape(1, 8, 8), resize=True).shape == (1, 8, 8, 1)
    with pytest.raises(DataError, match="no image"):
        load_images([tmp_path / "missing.png"], shape(1, 28, 28))


# --- labels ----------------------------------------------------------------------------------
def test_check_labels() -> None:
    check_labels(np.array([0, 4, 2]), 5)
    with pytest.raises(DataError) as e:
        check_labels(np.array([0, 9, 7, 1]), 5)
    assert e.value.message == "labels go up to 9, but the network's output has only 5 units"
    assert "2 of 4 labels are larger" in e.value.notes[0]
    assert "`dense 10`" in e.value.hints[0]
    with pytest.raises(DataError, match="negative"):
        check_labels(np.array([-1, 0]), 5)
    with pytest.raises(DataError, match="whole class indices"):
        check_labels(np.array([0.0, 1.0]), 5)
    check_labels(np.array([[0, 1, 1], [0, 0, 0]]), 3)
    with pytest.raises(DataError, match="3-wide multi-label"):
        check_labels(np.array([[0, 1, 1]]), 4)


def test_select_classes(digits) -> None:
    upper = select_classes(digits, range(5, 10))
    assert upper.num_classes == 5 and upper.class_names == ("5", "6", "7", "8", "9")
    assert set(upper.y_train.tolist()) == set(range(5))
    assert np.array_equal(upper.x_test, digits.x_test[digits.y_test >= 5])
    assert np.array_equal(upper.y_test, digits.y_test[digits.y_test >= 5] - 5)
    with pytest.raises(DataError, match="has no class 10"):
        select_classes(digits, [10])


# --- batches and augmentation ----------------------------------------------------------------
def test_batches_deterministic_per_seed_and_epoch() -> None:
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10, dtype=np.int32)

    def order(**kw: int) -> list[int]:
        return [int(v) for _, yb in batches(x, y, 3, **kw) for v in yb]

    assert order(seed=1, epoch=0) == order(seed=1, epoch=0)
    assert order(seed=1, epoch=0) != order(seed=1, epoch=1)
    assert sorted(order(seed=1, epoch=0)) == list(range(10))
    assert order(seed=1, epoch=2, start=2) == order(seed=1, epoch=2)[6:]
    assert [len(b) for b, _ in batches(x, y, 3, drop_last=True)] == [3, 3, 3]
    assert [int(v) for _, yb in batches(x, y, 4, shuffle=False) for v in yb] == list(range(10))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 50), size=st.integers(1, 12), drop=st.booleans(), seed=st.integers(0, 99))
def test_batches_partition(n: int, size: int, drop: bool, seed: int) -> None:
    x = np.arange(n)
    seen = [b for b, _ in batches(x, x, size, seed=seed, drop_last=drop)]
    assert len(seen) == num_batches(n, size, drop_last=drop)
    flat = np.concatenate(seen) if seen else np.array([], int)
    assert len(set(flat.tolist())) == len(flat) == (n - n % size if drop else n)


def test_random_crop_and_flip() -> None:
    x = np.arange(2 * 4 * 5 * 1, dtype=np.float32).reshape(2, 4, 5, 1) + 1
    assert random_crop(x, np.random.default_rng(0), 0) is x
    a = random_crop(x, np.random.default_rng(3), 2)
    b = random_crop(x, np.random.default_rng(3), 2)
    assert a.shape == x.shape and np.array_equal(a, b)
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(2):  # every crop is some 4x5 window of the padded image
        windows = [padded[i, r : r + 4, c : c + 5] for r in range(5) for c in range(5)]
        assert any(np.array_equal(a[i], w) for w in windows)
    assert np.array_equal(random_flip(x, np.random.default_rng(0), p=1.0), x[:, :, ::-1])
    assert np.array_equal(random_flip(x, np.random.default_rng(0), p=0.0), x)
    rgb = random_crop(np.ones((3, 2, 2, 3), np.float32), np.random.default_rng(0), 5, fill=np.array([7, 8, 9]))
    assert sorted(np.unique(rgb[..., 1]).tolist()) in ([8.0], [1.0, 8.0])
    assert (rgb[..., 2] != 7).all()  # per-channel fill
    c = augment(x, np.random.default_rng(7), crop=1, flip=True)
    assert np.array_equal(c, augment(x, np.random.default_rng(7), crop=1, flip=True))
    with pytest.raises(DataError, match="needs images"):
        augment(x.reshape(2, -1), np.random.default_rng(0), crop=1)


def test_data_and_transfer_do_not_import_jax() -> None:
    code = "import sys, cnndsl, cnndsl.training.data, cnndsl.training.transfer; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- the real files, where this machine has them ---------------------------------------------
@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="no ../shared/data/mnist")
def test_real_mnist_padded_like_lenet5() -> None:
    ds = load_dataset(f"mnist:{SHARED / 'mnist'}", shape(1, 32, 32))
    assert ds.x_train.shape == (54000, 32, 32, 1) and ds.x_test.shape == (10000, 32, 32, 1)
    assert len(ds.x_val) == 6000
    assert np.bincount(ds.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.x_test[:, 2:30, 2:30].mean() == pytest.approx(33.791, abs=1e-3)
    assert not ds.x_test[:, :2].any() and not ds.x_test[:, :, 30:].any()


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="no ../shared/data/fashion-mnist")
def test_real_fashion_mnist_test_split() -> None:
    x = read_idx(SHARED / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")
    y = read_idx(SHARED / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    assert x.mean() == pytest.approx(73.147, abs=1e-3)
