"""Offline data sets as numpy arrays shaped for a network's `input` line.

A data set is named by a spec string:

    digits                 scikit-learn's bundled 8x8 digits (1797 images, 10 classes)
    mnist:DIR              the four standard IDX files (`train-images-idx3-ubyte.gz`, ...)
    fashion-mnist[:DIR]    the same layout; DIR defaults to Debian's install folder
    PATH.npz               arrays `x_train, y_train, x_test, y_test` (or `x, y`)
    DIR                    an image folder: one sub-folder of PNG/JPEG files per class

Images come back channels-last, `x: (N, H, W, D)` float32 with pixels 0..255 (digits'
0..16 is rescaled), labels `y: (N,)` int32. They are fitted to the network's `input` shape:
zero-padded around the centre when the input is larger by an even amount (as LeNet-5 padded
MNIST's 28x28 to 32x32), flattened when the input is a flat vector. Nothing is downloaded;
every user mistake raises `DataError`. JAX is never imported here.
"""

from __future__ import annotations

import gzip
import math
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import DataError, did_you_mean
from ..ops.preprocess import BT601
from ..passes.memory import ENV as MEMORY_ENV
from ..passes.memory import format_bytes, memory_limit
from ..shape import Shape

NormalizeKind = Literal["none", "0-1", "standardize"]
NORMALIZE_KINDS: tuple[str, ...] = ("none", "0-1", "standardize")
BUILTIN = ("digits", "mnist:DIR", "fashion-mnist:DIR")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
# Images larger than this are refused from their header, before decoding (8192 x 8192 is 64
# Mpx: 192 MiB as RGB, far beyond any network input; a decompression bomb claims billions).
MAX_IMAGE_PIXELS = 8192 * 8192
# Class indices are stored as int32 and every class gets a name, so labels are bounded well
# below 2**31 (ImageNet-21k has 21,841 classes).
MAX_CLASSES = 1 << 20
# Held-out test examples are drawn with a fixed seed, so every run of every seed is scored on
# the same test set; the validation split follows the run's seed.
TEST_SPLIT_SEED = 20240


@dataclass(frozen=True, slots=True)
class Normalization:
    """Per-channel `(x - mean) / std`, remembered so `predict` can repeat it on new images.

    `mean` and `std` have one entry per image channel; `apply` works on `(..., D)` images
    and on flattened ones (channels vary fastest in both).
    """

    kind: str = "none"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A float32 copy of `x` normalised; `x` holds pixels 0..255."""
        d = len(self.mean)
        y = x.astype(np.float32).reshape(-1, d)
        y -= np.asarray(self.mean, np.float32)
        y /= np.asarray(self.std, np.float32)
        return y.reshape(x.shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for checkpoint metadata."""
        return {"kind": self.kind, "mean": list(self.mean), "std": list(self.std)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Normalization:
        return Normalization(str(d["kind"]), tuple(map(float, d["mean"])), tuple(map(float, d["std"])))


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Dataset:
    """Train / validation / test splits fitted to one input shape.

    x_*: (N, H, W, D) float32 (or (N, size) for a flat input); y_*: (N,) int32 class
    indices, or (N, K) 0/1 for multi-label `.npz` data. A split may be empty (N = 0).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    normalization: Normalization
    source: str

    def __repr__(self) -> str:
        sizes = f"train {len(self.x_train)}, val {len(self.x_val)}, test {len(self.x_test)}"
        return (
            f"Dataset({self.source!r}: {sizes}; x {self.x_train.shape[1:]} "
            f"{self.x_train.dtype}; {self.num_classes} classes; {self.normalization.kind})"
        )


# --- the entry point ---------------------------------------------------------------------
def load_dataset(
    spec: str,
    input_shape: Shape,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    normalize: NormalizeKind | str = "none",
    grayscale: bool = False,
    resize: bool = False,
) -> Dataset:
    """Load the data set named by `spec`, fitted to `input_shape` and split three ways.

    `val_fraction` of the training examples (per class) become the validation split, drawn
    with `seed`. Sources without a test split (digits, `x, y` arrays, image folders) give
    `test_fraction` of their examples to the test split, drawn with a fixed seed. `normalize`
    uses training-set statistics only. `grayscale` turns RGB data into one channel (ITU-R
    601 luma, as Pillow's "L"); `resize` scales folder images to the input size instead of
    requiring it.

    Example: `load_dataset("mnist:../shared/data/mnist", Shape(1, (32, 32)))` gives
    x_train (54000, 32, 32, 1), x_val (6000, 32, 32, 1), x_test (10000, 32, 32, 1).
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise DataError(f"{name} must be at least 0 and less than 1, got {frac}")
    if normalize not in NORMALIZE_KINDS:
        raise DataError(
            f"unknown normalisation `{normalize}`",
            notes=["choose one of " + ", ".join(f"`{k}`" for k in NORMALIZE_KINDS)],
            hints=did_you_mean(normalize, NORMALIZE_KINDS),
        )
    raw = _read_source(spec, input_shape, resize=resize)
    n = sum(len(v) for v in raw.x.values())
    # fitted to the input and normalised, the images become float32 (twice, briefly): often 8x the file
    _check_alloc(2 * n * input_shape.size * 4, f"`{spec}` as float32 ({n:,} examples of {input_shape})")
    fit = {
        k: _fit_images(x, input_shape, source=spec, grayscale=grayscale, resizable=raw.resizable)
        for k, x in raw.x.items()
    }
    y = raw.y
    if "test" not in fit:
        keep, take = split_indices(y["train"], test_fraction, TEST_SPLIT_SEED)
        fit["test"], y["test"] = fit["train"][take], y["train"][take]
        fit["train"], y["train"] = fit["train"][keep], y["train"][keep]
    if "val" not in fit:
        keep, take = split_indices(y["train"], val_fraction, seed)
        fit["val"], y["val"] = fit["train"][take], y["train"][take]
        fit["train"], y["train"] = fit["train"][keep], y["train"][keep]
    if len(fit["train"]) == 0:
        raise DataError(f"`{spec}` leaves no training examples", hints=["use a smaller val_fraction or test_fraction"])
    warn_if_one_class(y["train"], spec, raw.class_names)
    norm = _normalization(normalize, fit["train"])
    xs = {k: _flatten_for(norm.apply(v), input_shape) for k, v in fit.items()}
    return Dataset(
        x_train=xs["train"],
        y_train=y["train"],
        x_val=xs["val"],
        y_val=y["val"],
        x_test=xs["test"],
        y_test=y["test"],
        num_classes=len(raw.class_names),
        class_names=raw.class_names,
        normalization=norm,
        source=spec,
    )


class DataWarning(UserWarning):
    """Data that loads and trains, but probably not as meant (a single class)."""


def warn_if_one_class(y: np.ndarray, source: str, class_names: Sequence[str] = ()) -> None:
    """Warn (`DataWarning`) when every training label `y: (N,)` is the same class: the
    network would learn to give that answer whatever the input, at 100% accuracy."""
    if y.ndim != 1 or y.size == 0 or (y != y[0]).any():
        return
    c = int(y[0])
    name = f" (`{class_names[c]}`)" if c < len(class_names) and class_names[c] != str(c) else ""
    warnings.warn(
        f"every training example of `{source}` is of class {c}{name}: the network can only learn "
        "to always answer it (check the labels, the `classes` setting or the class folders)",
        DataWarning,
        stacklevel=3,
    )


def check_labels(y: np.ndarray, num_outputs: int, *, what: str = "labels") -> None:
    """Raise `DataError` unless `y` fits a network whose output is `num_outputs` wide.

    `y: (N,)` class indices must lie in `0..num_outputs-1`; `y: (N, K)` multi-label targets
    need `K == num_outputs` and values 0 or 1.
    """
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] != num_outputs:
            raise DataError(
                f"the {what} are {y.shape[1]}-wide multi-label targets, "
                f"but the network's output has {num_outputs} units",
                hints=[f"make the last layer {y.shape[1]} wide (`dense {y.shape[1]}`)"],
            )
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"multi-label {what} must be 0 or 1, got values {np.unique(y)[:6].tolist()}")
        return
    if y.ndim != 1:
        raise DataError(f"{what} must be a vector of class indices (N,), got an array {y.shape}")
    if y.size == 0:
        return
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what} must be whole class indices, got {y.dtype} values")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        i = int(np.argmax(y < 0))
        raise DataError(f"{what} must not be negative, found {lo}", notes=[f"the first is label [{i}]: {int(y[i])}"])
    if hi >= num_outputs:
        bad = int((y >= num_outputs).sum())
        raise DataError(
            f"{what} go up to {hi}, but the network's output has only {num_outputs} units",
            notes=[
                f"class indices must be 0..{num_outputs - 1}; {bad} of {y.size} {what} are larger",
                f"the first is label [{int(np.argmax(y >= num_outputs))}]: {int(y[np.argmax(y >= num_outputs)])}",
            ],
            hints=[
                f"make the last layer {hi + 1} wide (`dense {hi + 1}`)",
                "or keep only the classes the network can tell apart (`select_classes`)",
            ],
        )


def select_classes(ds: Dataset, classes: Sequence[int]) -> Dataset:
    """Keep only examples of `classes`, relabelled 0..len(classes)-1 in the order given.

    For transfer learning: `select_classes(digits, range(5, 10))` is digits 5-9 as 0-4.
    """
    classes = [int(c) for c in classes]
    if ds.y_train.ndim != 1:
        raise DataError("cannot select classes of multi-label data")
    for c in classes:
        if not 0 <= c < ds.num_classes:
            raise DataError(f"`{ds.source}` has no class {c}", notes=[f"its classes are 0..{ds.num_classes - 1}"])
    table = np.full(ds.num_classes, -1, np.int32)
    table[classes] = np.arange(len(classes), dtype=np.int32)

    def pick(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = table[y] >= 0
        return x[keep], table[y[keep]]

    x_train, y_train = pick(ds.x_train, ds.y_train)
    x_val, y_val = pick(ds.x_val, ds.y_val)
    x_test, y_test = pick(ds.x_test, ds.y_test)
    warn_if_one_class(y_train, f"{ds.source} (classes {', '.join(map(str, classes))})")
    return replace(
        ds,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(classes),
        class_names=tuple(ds.class_names[c] for c in classes),
        source=f"{ds.source} (classes {', '.join(map(str, classes))})",
    )


# --- fitting images to the input line ----------------------------------------------------
def fit_to_input(x: np.ndarray, input_shape: Shape, *, source: str, grayscale: bool = False) -> np.ndarray:
    """Fit images `x: (N, H, W, D)` to `input_shape`, keeping their dtype.

    Converts RGB to one channel when `grayscale`; zero-pads centred when the input is larger
    by an even number of pixels on each axis; flattens for a flat input (channels fastest).
    Anything else is a `DataError` that names both shapes.
    """
    fitted = _fit_images(x, input_shape, source=source, grayscale=grayscale, resizable=False)
    return _flatten_for(fitted, input_shape)


def _flatten_for(x: np.ndarray, input_shape: Shape) -> np.ndarray:
    """(N, H, W, D) -> (N, H*W*D) when the input is a flat vector, else `x` itself."""
    return x.reshape(len(x), -1) if input_shape.is_flat else x


def _fit_images(x: np.ndarray, input_shape: Shape, *, source: str, grayscale: bool, resizable: bool) -> np.ndarray:
    """`fit_to_input` without the flattening: the result is (N, H, W, D). `resizable` says
    whether to suggest `resize` (image files can be resized on loading)."""
    _, h, w, d = x.shape
    if grayscale and d == 3:
        x = _luma(x)
        d = 1
    have = Shape(d, (w, h))
    if input_shape.is_flat:
        if have.size != input_shape.size:
            raise DataError(
                f"the images in `{source}` are {have} ({have.size} values), "
                f"but the network's input is a flat vector of {input_shape.size}",
                hints=[f"change the input line to `input {have}`, or to `input {have.size}`"],
            )
        return x
    if input_shape.rank != 2:
        raise DataError(
            f"the images in `{source}` are 2-D ({have}), but the network's input is {input_shape}",
            hints=[f"change the input line to `input {have}`"],
        )
    want_d, (want_w, want_h) = input_shape.depth, input_shape.spatial
    if d != want_d:
        hints = [f"change the input line to `input {input_shape.with_depth(d)}`"]
        if d == 3 and want_d == 1:
            hints.append("or convert the images to grayscale (`grayscale`)")
        raise DataError(
            f"the images in `{source}` have {d} channel{'s' * (d != 1)}, "
            f"but the network's input is {input_shape} ({want_d} channel{'s' * (want_d != 1)})",
            hints=hints,
        )
    dh, dw = want_h - h, want_w - w
    if (dh, dw) == (0, 0):
        return x
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        even = have.with_spatial((w + max(dw, 0) + dw % 2, h + max(dh, 0) + dh % 2))
        why = (
            "images are only ever zero-padded to a larger input, never cropped"
            if dh < 0 or dw < 0
            else "zero-padding centres the image, so the input must be larger by an even number of pixels"
        )
        raise DataError(
            f"the images in `{source}` are {have}, but the network's input is {input_shape}",
            notes=[why],
            hints=[f"change the input line to `input {have}`"]
            + ([f"or to `input {even}`, which pads evenly"] if even != have else [])
            + (["or resize the images on loading (`resize`)"] if resizable else []),
        )
    return np.pad(x, ((0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2), (0, 0)))


def load_images(
    paths: Sequence[str | Path],
    input_shape: Shape,
    *,
    grayscale: bool = False,
    resize: bool = False,
) -> np.ndarray:
    """Read image files for `predict`: (N, H, W, D) float32 pixels 0..255, fitted to the input.

    Apply the training set's `Normalization` to the result before the network sees it.
    """
    if not paths:
        raise DataError("no images given")
    depth = input_shape.depth if input_shape.rank == 2 else None
    size = input_shape.spatial if resize and input_shape.rank == 2 else None
    imgs = [_read_image(Path(p), depth, size) for p in paths]
    shapes = {im.shape for im in imgs}
    if len(shapes) > 1:
        raise DataError(
            "the images have different sizes: "
            + ", ".join(f"`{p}` is {_desc(im.shape)}" for p, im in zip(paths, imgs, strict=True)),
            hints=["resize them to the input size (`resize`)"],
        )
    x = np.stack(imgs)
    fitted = _fit_images(x, input_shape, source=str(paths[0]), grayscale=grayscale, resizable=True)
    return _flatten_for(fitted, input_shape).astype(np.float32)


def _luma(x: np.ndarray) -> np.ndarray:
    """RGB (..., 3) -> (..., 1) with the `grayscale` layer's weights (ITU-R BT.601, Pillow's "L")."""
    y = x.astype(np.float32) @ np.array(BT601, np.float32)
    return y[..., None] if x.dtype == np.float32 else np.rint(y)[..., None].astype(x.dtype)


def _normalization(kind: str, x_train: np.ndarray) -> Normalization:
    """The normalisation `kind`, with statistics of `x_train: (N, H, W, D)` per channel."""
    if kind == "none":
        return Normalization()
    if kind == "0-1":
        return Normalization("0-1", (0.0,), (255.0,))
    flat = x_train.reshape(-1, x_train.shape[-1])
    mean = flat.mean(axis=0, dtype=np.float64)
    var = np.zeros_like(mean)
    for i in range(0, len(flat), 1 << 20):  # in chunks: a float64 copy of MNIST is 440 MB
        var += np.square(flat[i : i + (1 << 20)] - mean).sum(axis=0)
    std = np.sqrt(var / max(len(flat), 1))
    std[std == 0] = 1.0
    return Normalization("standardize", tuple(mean.tolist()), tuple(std.tolist()))


def split_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices `(keep, take)`: `take` holds `round(fraction * n)` examples drawn with
    `seed`, the same fraction of each class, so both parts keep the class balance (plain
    random for multi-label `y: (N, K)`)."""
    n = len(y)
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, bool)
    if y.ndim == 1:
        classes, counts = np.unique(y, return_counts=True)
        # Largest remainders: per-class shares that add up to round(fraction * n) exactly.
        share = fraction * counts
        take = np.floor(share).astype(int)
        extra = round(fraction * n) - take.sum()
        take[np.argsort(-(share - take), kind="stable")[:extra]] += 1
        for c, k in zip(classes, take, strict=True):
            mask[rng.permutation(np.flatnonzero(y == c))[:k]] = True
    else:
        mask[rng.permutation(n)[: round(fraction * n)]] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# --- sources ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Raw:
    """Images as read: `x[split]: (N, H, W, D)` uint8 (or as stored in `.npz`)."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    class_names: tuple[str, ...]
    resizable: bool = False


def _read_source(spec: str, input_shape: Shape, *, resize: bool) -> _Raw:
    name, colon, arg = spec.partition(":")
    if name in ("mnist", "fashion-mnist"):
        return _read_idx_set(name, arg if colon else None)
    if spec == "digits":
        return _read_digits()
    path = Path(spec).expanduser()
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.is_dir():
        return _read_folder(path, input_shape, resize=resize)
    if path.exists():
        raise DataError(
            f"`{spec}` is a file, but not a `.npz` archive",
            notes=["data can be " + ", ".join(f"`{b}`" for b in BUILTIN) + ", a `.npz` file or an image folder"],
        )
    raise DataError(
        f"no data set `{spec}`",
        notes=[
            f"looked for a file or folder `{path.absolute()}`",
            "built-in data sets: " + ", ".join(f"`{b}`" for b in BUILTIN),
        ],
        hints=did_you_mean(name, ("digits", "mnist", "fashion-mnist")),
    )


def _read_digits() -> _Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255 / 16)).astype(np.float32)[..., None]  # 0..16 -> 0..255
    return _Raw({"train": x}, {"train": d.target.astype(np.int32)}, tuple(str(i) for i in range(10)))


# --- IDX (MNIST, Fashion-MNIST) ----------------------------------------------------------
IDX_MAGIC = "IDX files start with 00 00, a type code and a rank"
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = {
    ("train", "x"): "train-images-idx3-ubyte",
    ("train", "y"): "train-labels-idx1-ubyte",
    ("test", "x"): "t10k-images-idx3-ubyte",
    ("test", "y"): "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip-compressed when its name ends in `.gz`) as a native array.

    Header: two zero bytes, a type code (0x08 = uint8, ...), the number of dimensions, then
    each dimension as a big-endian uint32; the data follows, row-major. The header is read
    first and bounds everything after it: no more than the promised bytes (and one more, to
    find trailing data) are ever decompressed, and a promise larger than memory is refused
    before anything is allocated.
    """
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_TYPES or head[3] == 0:
                raise DataError(
                    f"`{path}` is not an IDX file",
                    notes=[f"it starts with bytes {head.hex(' ') or '(none)'}; " + IDX_MAGIC],
                )
            rank, dtype = head[3], np.dtype(_IDX_TYPES[head[2]])
            raw_dims = f.read(4 * rank)
            if len(raw_dims) < 4 * rank:
                raise DataError(f"`{path}` is truncated: its header is cut short")
            dims = tuple(int(v) for v in np.frombuffer(raw_dims, ">u4"))
            want = math.prod(dims) * dtype.itemsize
            promise = f"{want} bytes of data ({'x'.join(map(str, dims))} {dtype.name})"
            if path.suffix != ".gz" and (size := path.stat().st_size - 4 - 4 * rank) != want:
                raise DataError(f"`{path}` is damaged: its header promises {promise}, but it holds {size}")
            _check_alloc(want, f"`{path}` (its header promises {promise})")
            data = np.empty(want, np.uint8)
            got = _read_into(f, memoryview(data))
            extra = f.read(1) if got == want else b""
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read `{path}`: {e}", notes=["the file is damaged or not gzip-compressed"]) from e
    if got != want or extra:
        holds = f"only {got}" if got != want else "more than that"
        raise DataError(f"`{path}` is damaged: its header promises {promise}, but it holds {holds}")
    return data.view(dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _read_into(f: Any, buf: memoryview) -> int:
    """Fill `buf` from the file `f` (a gzip stream returns less than asked): bytes read."""
    got = 0
    while got < len(buf):
        n = f.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def _check_alloc(need: int, what: str) -> None:
    """Refuse to allocate `need` bytes for `what` when they exceed the memory available: a
    file's header is read before its data, and must not decide a huge allocation on its own."""
    limit, source = memory_limit()
    if limit is not None and need > limit:
        raise DataError(
            f"{what} would need {format_bytes(need)} of memory, but {source} is {format_bytes(limit)}",
            notes=["nothing was allocated; the size comes from the file's own header"],
            hints=[
                "the file is damaged, or too large for this machine",
                f"if you know it fits, set {MEMORY_ENV} to the memory to assume (e.g. `{MEMORY_ENV}=256G`)",
            ],
        )


def _find_idx(folder: Path, stem: str) -> Path | None:
    """The file for `stem` in any of its usual spellings (`.gz` or not, `-idx` or `.idx`)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx_set(name: str, folder_arg: str | None) -> _Raw:
    spec = f"{name}:{folder_arg}" if folder_arg is not None else name
    if not folder_arg:
        if name == "mnist" or not FASHION_DIR.is_dir():
            fashion = name == "fashion-mnist"
            raise DataError(
                f"`{name}` needs the folder that holds its IDX files: `{name}:DIR`",
                notes=[f"looked in `{FASHION_DIR}`"] if fashion else [],
                hints=[f"`{name}:DIR` with DIR holding `{_IDX_FILES['train', 'x']}.gz` and the other three files"]
                + ([f"Debian's `dataset-fashion-mnist` package installs them to {FASHION_DIR}"] if fashion else []),
            )
        folder = FASHION_DIR
    else:
        folder = Path(folder_arg).expanduser()
    if not folder.is_dir():
        raise DataError(f"no folder `{folder}` for `{spec}`", notes=[f"looked for `{folder.absolute()}`"])
    found = {key: _find_idx(folder, stem) for key, stem in _IDX_FILES.items()}
    missing = [_IDX_FILES[k] + ".gz" for k, p in found.items() if p is None]
    if missing:
        present = sorted(p.name for p in folder.iterdir() if p.is_file())[:8]
        raise DataError(
            f"`{spec}` is missing {', '.join(f'`{m}`' for m in missing)}",
            notes=[
                f"looked in `{folder.absolute()}` (with or without `.gz`)",
                f"it holds: {', '.join(present) if present else 'no files'}",
            ],
        )
    arrays = {key: read_idx(p) for key, p in found.items() if p is not None}
    x: dict[str, np.ndarray] = {}
    y: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images, labels = arrays[split, "x"], arrays[split, "y"]
        if images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"`{spec}`: {split} images {images.shape} and labels {labels.shape} do not match",
                notes=["images must be (N, H, W) or (N, H, W, D), labels (N,)"],
            )
        x[split] = images if images.ndim == 4 else images[..., None]
        y[split] = class_indices(labels, f"`{spec}`: {split} labels")
    names = FASHION_CLASSES if name == "fashion-mnist" else tuple(str(i) for i in range(10))
    return _Raw(x, y, names)


# --- .npz arrays -------------------------------------------------------------------------
def _read_npz(path: Path) -> _Raw:
    if not path.is_file():
        raise DataError(f"no file `{path}`", notes=[f"looked for `{path.absolute()}`"])
    arrays = _load_npz_arrays(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        splits = ["train", "test"] + (["val"] if {"x_val", "y_val"} <= arrays.keys() else [])
        keys = {s: (f"x_{s}", f"y_{s}") for s in splits}
    elif {"x", "y"} <= arrays.keys():
        keys = {"train": ("x", "y")}
    else:
        raise DataError(
            f"`{path}` lacks the arrays a data set needs",
            notes=[
                "expected `x_train, y_train, x_test, y_test` (optionally `x_val, y_val`) or `x, y`",
                f"it holds: {', '.join(sorted(arrays)) or 'nothing'}",
            ],
        )
    x: dict[str, np.ndarray] = {}
    y: dict[str, np.ndarray] = {}
    for split, (xk, yk) in keys.items():
        x[split], y[split] = _check_npz_pair(path, xk, arrays[xk], yk, arrays[yk])
    widths = {v.shape[1] for v in y.values() if v.ndim == 2}
    top = max((int(v.max()) + 1 for v in y.values() if v.ndim == 1 and v.size), default=0)
    num_classes = max(widths | {top})
    names = tuple(str(n) for n in arrays["class_names"]) if "class_names" in arrays else ()
    if names and len(names) < num_classes:
        raise DataError(f"`{path}` names {len(names)} classes, but its labels go up to {num_classes - 1}")
    return _Raw(x, y, names or tuple(str(i) for i in range(num_classes)))


_NPZ_IS = "an .npz file is a zip archive of .npy arrays and starts with 50 4b (`PK`)"
_NPZ_HINT = "save the data with `np.savez(path, x=images, y=labels)` (or `x_train, y_train, x_test, y_test`)"


def _load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every `.npy` array in the archive `path`, without pickle. Each member's size is bounded
    from the zip directory and its `.npy` header (shape and dtype) before its data is read."""
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            head = f.read(8)
        npy = head.startswith(b"\x93NUMPY")
        raise DataError(
            f"`{path}` is not an .npz file" + (" but a single .npy array" if npy else ""),
            notes=[f"it starts with bytes {head.hex(' ') or '(none)'}; " + _NPZ_IS],
            hints=[_NPZ_HINT],
        )
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = [i for i in zf.infolist() if i.filename.endswith(".npy") and not i.is_dir()]
            _check_alloc(sum(i.file_size for i in members), f"the arrays of `{path}` (as its zip directory lists them)")
            for info in members:
                name = info.filename.removesuffix(".npy")
                with zf.open(info) as f:
                    shape, dtype = _npy_header(f, path, name)
                    room = info.file_size - f.tell()
                    need = math.prod(shape) * dtype.itemsize
                    if need != room:
                        raise DataError(
                            f"`{path}` is damaged: the header of `{name}` promises {need} bytes "
                            f"({'x'.join(map(str, shape)) or 'a scalar'} {dtype}), but its member holds {room}"
                        )
                    f.seek(0)
                    arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as e:
        raise DataError(f"cannot read `{path}`: {e}", notes=["the file is damaged or not written by numpy"]) from e
    return arrays


def _npy_header(f: Any, path: Path, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an `.npy` member promises, read from its header alone."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise DataError(f"cannot read `{path}`: `{name}` is in .npy format version {version}, not 1.0 or 2.0")
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, dtype = read(f)
    if dtype.hasobject:
        raise DataError(
            f"cannot read `{path}`: `{name}` holds Python objects ({dtype}), which only pickle can load",
            notes=["cnndsl never unpickles data: arrays must be plain numbers (or strings for class_names)"],
            hints=[_NPZ_HINT],
        )
    return tuple(int(d) for d in shape), dtype


def _check_npz_pair(path: Path, xkey: str, x: np.ndarray, ykey: str, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split of a `.npz` file: images (N, H, W[, D]) and labels (N,) or (N, K)."""
    where, ywhere = f"`{path}`: `{xkey}`", f"`{path}`: `{ykey}`"
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{where} must be numeric images (N, H, W) or (N, H, W, D), got {x.dtype} {x.shape}")
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        raise DataError(
            f"{where} looks channels-first {x.shape}; arrays must be channels-last (N, H, W, D)",
            hints=["transpose it: `x.transpose(0, 2, 3, 1)`"],
        )
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DataError(f"{where} holds NaN or infinite values")
    if y.ndim == 0 or len(y) != len(x):
        raise DataError(f"{where} has {len(x)} images but {ywhere} has {len(y) if y.ndim else 'no'} labels")
    if y.ndim not in (1, 2) or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{ywhere} must be class indices (N,) or 0/1 targets (N, K), got {y.dtype} {y.shape}")
    return x, class_indices(y, ywhere)


_WRAP = "class indices are stored as int32, and a larger value would wrap around to a wrong class"


def class_indices(y: np.ndarray, where: str) -> np.ndarray:
    """Labels `y: (N,)` (or 0/1 targets `(N, K)`) as int32, checked *before* the cast: whole
    numbers, not negative, below `MAX_CLASSES` (int64 2**32 + 3 must not wrap to 3, a float
    1e20 must not become a negative int32). Errors name `where`, the first bad index and value."""
    if y.ndim == 2 and (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        bad = (y != 0) & (y != 1)  # NaN too
        if bad.any():
            i = _first(bad)
            raise DataError(f"{where} are multi-label targets, which must be 0 or 1: {_index(i)} is {_value(y[i])}")
        return y.astype(np.int32)
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y)
        bad[~bad] = y[~bad] != np.round(y[~bad])
        if bad.any():
            i = _first(bad)
            raise DataError(f"{where} must hold whole numbers: label {_index(i)} is {_value(y[i])}")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise DataError(f"{where} must be class indices, got {y.dtype} values")
    if y.size and (neg := y < 0).any():
        i = _first(neg)
        raise DataError(f"{where} must not be negative: label {_index(i)} is {_value(y[i])}")
    if y.size and (big := y >= MAX_CLASSES).any():
        i = _first(big)
        raise DataError(
            f"{where}: label {_index(i)} is {_value(y[i])}, beyond the largest class index {MAX_CLASSES - 1:,}",
            notes=[f"{int(big.sum())} of {y.size} labels are that large; " + _WRAP],
            hints=["labels must be class indices 0..C-1: renumber the classes"],
        )
    return y.astype(np.int32)


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _index(i: tuple[int, ...]) -> str:
    return f"[{', '.join(map(str, i))}]"


def _value(v: Any) -> str:
    return f"{float(v):g}" if isinstance(v, np.floating) else str(v.item() if hasattr(v, "item") else v)


# --- image folders -----------------------------------------------------------------------
def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_folder(root: Path, input_shape: Shape, *, resize: bool) -> _Raw:
    """`root/<class>/<image>`, or `root/{train,test[,val]}/<class>/<image>`."""
    subdirs = _subdirs(root)
    if not subdirs:
        idx = sorted(root.glob("*idx?-ubyte*"))
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        raise DataError(
            f"the image folder `{root}` has no class sub-folders",
            notes=["an image folder needs one sub-folder per class: DIR/cat/1.png, DIR/dog/2.png, ..."]
            + ([f"found {len(loose)} images directly in `{root}`"] if loose else []),
            hints=[f"for IDX files use `mnist:{root}` or `fashion-mnist:{root}`"] if idx else [],
        )
    depth = input_shape.depth if input_shape.rank == 2 else None
    size = input_shape.spatial if resize and input_shape.rank == 2 else None
    if "train" in subdirs and set(subdirs) <= {"train", "val", "test"}:
        split_dirs = {s: root / s for s in subdirs}
    else:
        split_dirs = {"train": root}
    classes = tuple(_subdirs(split_dirs["train"]))
    if not classes:
        raise DataError(f"the image folder `{split_dirs['train']}` has no class sub-folders")
    x: dict[str, np.ndarray] = {}
    y: dict[str, np.ndarray] = {}
    first: tuple[Path, tuple[int, ...]] | None = None
    total = 0  # bytes decoded so far: the folder's images are all held in memory
    for split, folder in split_dirs.items():
        unknown = [c for c in _subdirs(folder) if c not in classes]
        if unknown:
            raise DataError(
                f"`{folder}` has classes that the training split lacks: {', '.join(unknown)}",
                notes=["training classes: " + ", ".join(classes)],
            )
        images: list[np.ndarray] = []
        labels: list[int] = []
        for label, cls in enumerate(classes):
            for p in _image_files(folder / cls, required=split == "train"):
                im = _read_image(p, depth, size)
                if first is None:
                    first = (p, im.shape)
                elif im.shape != first[1]:
                    raise DataError(
                        f"images in `{root}` differ in size: `{first[0]}` is "
                        f"{_desc(first[1])}, `{p}` is {_desc(im.shape)}",
                        hints=["resize them to one size, or load with `resize` to fit the input"],
                    )
                images.append(im)
                labels.append(label)
                total += im.nbytes
                _check_alloc(2 * total, f"the images of `{root}` (stacked, so counted twice)")
        if not images:
            raise DataError(f"the image folder `{folder}` has no images")
        x[split], y[split] = np.stack(images), np.asarray(labels, np.int32)
    return _Raw(x, y, classes, resizable=True)


def _image_files(folder: Path, *, required: bool) -> list[Path]:
    """Sorted image files in `folder`; a `DataError` if `required` and there are none."""
    found = folder.iterdir() if folder.is_dir() else ()
    files = sorted(
        p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if required and not files:
        raise DataError(
            f"the class folder `{folder}` has no images",
            notes=["images are files ending in " + ", ".join(sorted(IMAGE_SUFFIXES))],
        )
    return files


def _desc(shape: tuple[int, ...]) -> str:
    """(H, W, D) -> `D@WxH`."""
    return str(Shape(shape[2], (shape[1], shape[0])))


def _read_image(path: Path, depth: int | None, size: tuple[int, ...] | None) -> np.ndarray:
    """One image as (H, W, D) uint8: grayscale for depth 1, RGB for depth 3, the file's own
    kind (grayscale or RGB) when `depth` is None. `size` (width, height) resizes it.

    `Image.open` reads only the header, so the pixel count is checked before decoding:
    images over `MAX_IMAGE_PIXELS`, and Pillow's decompression bombs, are clear errors."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise DataError("reading image files needs Pillow", hints=["pip install pillow"]) from e
    if depth not in (None, 1, 3):
        raise DataError(f"images have 1 (grayscale) or 3 (RGB) channels; the network's input wants {depth}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            f = Image.open(path)
        with f:
            w, h = f.size
            if w * h > MAX_IMAGE_PIXELS:
                raise _too_many_pixels(path, f"{w}x{h}", w * h)
            if depth is None:
                mode = "L" if f.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
            else:
                mode = "L" if depth == 1 else "RGB"
            im = f.convert(mode)
        if size is not None:
            im = im.resize((size[0], size[1]), Image.Resampling.BILINEAR)
        a = np.asarray(im, np.uint8)
    except FileNotFoundError as e:
        raise DataError(f"no image `{path}`", notes=[f"looked for `{path.absolute()}`"]) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _too_many_pixels(path, "", 0, str(e)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"cannot read the image `{path}`: {e}") from e
    return a[..., None] if a.ndim == 2 else a


def _too_many_pixels(path: Path, dims: str, pixels: int, why: str = "") -> DataError:
    said = f"is {dims} ({pixels / 1e6:,.0f} Mpx)" if dims else f"claims too many pixels ({why})"
    return DataError(
        f"the image `{path}` {said}: images over {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx are refused before decoding",
        notes=["a huge size in a small file is a decompression bomb; no network input is that large"],
        hints=["shrink the image to about the network's input size first"],
    )


# --- batches and augmentation ------------------------------------------------------------
def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches `batches` yields for `n` examples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    start: int = 0,
    rows: slice | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `(x[idx], y[idx])` batches of `batch_size` (the last one smaller unless
    `drop_last`). The order is a permutation drawn from `(seed, epoch)` alone, so a run
    resumed at batch `start` of an epoch sees exactly the batches it would have seen.
    `rows`: only those rows of each batch are read (one process's shard of a global batch)."""
    if batch_size < 1:
        raise DataError(f"the batch size must be at least 1, got {batch_size}")
    n = len(x)
    order = np.random.default_rng((seed, epoch)).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(start * batch_size, stop, batch_size):
        idx = order[i : i + batch_size]
        if rows is not None:
            idx = idx[rows]
        yield x[idx], y[idx]


def random_crop(
    x: np.ndarray,
    rng: np.random.Generator,
    padding: int,
    *,
    fill: float | np.ndarray = 0.0,
    part: tuple[slice, int] | None = None,
) -> np.ndarray:
    """Pad each image of `x: (N, H, W, D)` by `padding` on every side with `fill` (a number,
    or one per channel), then crop it back to H x W at an offset drawn uniformly from the
    (2p+1)^2 choices. `part=(rows, total)`: `x` is those rows of a batch of `total`, and gets
    the offsets those rows would get (one process's shard of a global batch)."""
    _need_images(x, "random crop")
    if padding <= 0:
        return x
    n, h, w, d = x.shape
    p = padding
    padded = np.empty((n, h + 2 * p, w + 2 * p, d), x.dtype)
    padded[...] = fill
    padded[:, p : p + h, p : p + w] = x
    dy, dx = rng.integers(0, 2 * p + 1, size=(2, n if part is None else part[1]))
    if part is not None:
        dy, dx = dy[part[0]], dx[part[0]]
    rows = (dy[:, None] + np.arange(h))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + np.arange(w))[:, None, :]  # (N, 1, W)
    return padded[np.arange(n)[:, None, None], rows, cols]


def random_flip(
    x: np.ndarray, rng: np.random.Generator, *, p: float = 0.5, part: tuple[slice, int] | None = None
) -> np.ndarray:
    """Mirror each image of `x: (N, H, W, D)` left-right with probability `p` (`part`: as
    `random_crop`'s)."""
    _need_images(x, "horizontal flip")
    flip = rng.random(len(x) if part is None else part[1]) < p
    if part is not None:
        flip = flip[part[0]]
    return np.where(flip[:, None, None, None], x[:, :, ::-1], x)


def augment(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    crop: int = 0,
    flip: bool = False,
    fill: float | np.ndarray = 0.0,
    part: tuple[slice, int] | None = None,
) -> np.ndarray:
    """Random crop with `crop` pixels of padding, then a random horizontal flip.

    Deterministic given `rng`'s state; e.g. `np.random.default_rng((seed, epoch, step))`.
    `fill` pads with black: 0 for raw pixels, `norm.apply(np.zeros(D))` once normalised.
    `part=(rows, total)`: `x` is those rows of a batch of `total` and is augmented as they
    would be in the whole batch, so a process's shard matches a single-process run.
    """
    if crop:
        x = random_crop(x, rng, crop, fill=fill, part=part)
    if flip:
        x = random_flip(x, rng, part=part)
    return x


def _need_images(x: np.ndarray, what: str) -> None:
    if x.ndim != 4:
        raise DataError(
            f"{what} needs images (N, H, W, D), got an array {x.shape}",
            hints=["augmentation does not apply to a flat input"],
        )
