"""The `train { ... }` section: settings -> a `TrainConfig`, with CLI overrides. No JAX here.

    train {
      data = "mnist:../shared/data/mnist"
      optimizer = adam(lr=0.001)
      schedule = cosine
      epochs = 8
    }

Each setting is one entry of `SETTINGS`: its name, the value it takes and a function that
reads the written value (an `ast` node) into `TrainConfig` fields. `cnndsl train` offers every
setting as an option (`--epochs 3`, `--optimizer "sgd(lr=0.1, momentum=0.9)"`); the option's
text is read as the same value would be in the file. Mistakes raise `CnnError`s that point at
the setting (file:line:col), or name the option.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..errors import ArgumentError, CnnError, CnnNameError, CnnSyntaxError, CnnWarning, Span, did_you_mean
from ..syntax import ast
from ..syntax.binder import REQUIRED, Callee, Given, P, bind
from ..syntax.values import Kind, boolean, evaluate

# Optimizers and their keyword arguments with defaults (`lr` first: a positional argument).
OPTIMIZERS: dict[str, dict[str, float | bool]] = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "nesterov": False},
    "adam": {"lr": 0.001, "b1": 0.9, "b2": 0.999, "eps": 1e-8},
    "adamw": {"lr": 0.001, "weight_decay": 1e-4, "b1": 0.9, "b2": 0.999, "eps": 1e-8},
    "rmsprop": {"lr": 0.001, "decay": 0.9, "momentum": 0.0, "eps": 1e-8},
}
# Schedules and their arguments; None marks a required one.
SCHEDULES: dict[str, dict[str, float | None]] = {
    "constant": {},
    "step": {"every": None, "gamma": 0.1},
    "cosine": {"min": 0.0},
    "warmup": {"steps": None},
}
LOSSES = ("crossentropy", "mse", "bce")
NORMALIZE = {"none": "none", "scale": "0-1", "0-1": "0-1", "standardize": "standardize"}
AUGMENTATIONS: dict[str, dict[str, float | None]] = {"crop": {"pad": 4}, "flip": {}}


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """Every training setting, resolved. `TrainConfig()` is the default recipe.

    `lr=None` means the optimizer's own `lr=` (or its default); `opt_args` and
    `schedule_args` hold only what was written.
    """

    data: str = "digits"
    classes: tuple[int, ...] | None = None
    val: float = 0.1
    normalize: str = "standardize"
    grayscale: bool = False
    resize: bool = False
    loss: str = "crossentropy"
    label_smoothing: float = 0.0
    optimizer: str = "adam"
    opt_args: tuple[tuple[str, float | bool], ...] = ()
    lr: float | None = None
    schedule: str = "constant"
    schedule_args: tuple[tuple[str, float], ...] = ()
    warmup: int = 0
    batch: int = 64
    epochs: int = 10
    seed: int = 0
    crop: int = 0
    flip: bool = False
    freeze: tuple[str, ...] = ()
    init: str | None = None

    # -- derived ------------------------------------------------------------------------
    def opt_kwargs(self) -> dict[str, float | bool]:
        """The optimizer's arguments with defaults filled in, `lr` resolved."""
        kw = dict(OPTIMIZERS[self.optimizer]) | dict(self.opt_args)
        if self.lr is not None:
            kw["lr"] = self.lr
        return kw

    def optimizer_slots(self) -> int:
        """How many arrays of the parameters' size the optimizer keeps (Adam's two moments,
        SGD's momentum), for the memory estimate made before training starts."""
        kw = self.opt_kwargs()
        if self.optimizer in ("adam", "adamw"):
            return 2
        if self.optimizer == "rmsprop":
            return 1 + bool(kw["momentum"])
        return int(bool(kw["momentum"]))

    def schedule_kwargs(self) -> dict[str, float]:
        kw = {k: v for k, v in SCHEDULES[self.schedule].items() if v is not None} | dict(self.schedule_args)
        return kw  # type: ignore[return-value]

    def describe_optimizer(self) -> str:
        kw = self.opt_kwargs()
        shown = {k: v for k, v in kw.items() if k == "lr" or v != OPTIMIZERS[self.optimizer][k]}
        return f"{self.optimizer}({', '.join(f'{k}={_fmt(v)}' for k, v in shown.items())})"

    def describe_schedule(self) -> str:
        kw = dict(self.schedule_args)
        text = self.schedule + (f"({', '.join(f'{k}={_fmt(v)}' for k, v in kw.items())})" if kw else "")
        return text + (f" after {self.warmup} warm-up steps" if self.warmup else "")

    def describe_augment(self) -> str:
        parts = ([f"crop(pad={self.crop})"] if self.crop else []) + (["flip"] if self.flip else [])
        return ", ".join(parts) or "none"

    # -- JSON (checkpoint metadata) -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["opt_args"] = dict(self.opt_args)
        d["schedule_args"] = dict(self.schedule_args)
        return json.loads(json.dumps(d))

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("opt_args", "schedule_args"):
            kw[k] = tuple(dict(kw.get(k) or {}).items())
        for k in ("freeze",):
            kw[k] = tuple(kw.get(k) or ())
        if kw.get("classes") is not None:
            kw["classes"] = tuple(kw["classes"])
        return TrainConfig(**kw)

    def diff(self, other: TrainConfig) -> list[str]:
        """`["epochs 1 -> 2", ...]`: the settings that differ from `other`."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k} {_fmt(b[k])} -> {_fmt(a[k])}" for k in a if a[k] != b[k]]


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(map(_fmt, v)) + ")"
    return str(v)


# --- reading values --------------------------------------------------------------------------
class _Where:
    """Where a value was written: a setting's span (file) or an option's name (CLI)."""

    def __init__(self, setting: ast.Setting, option: str | None = None) -> None:
        self.setting = setting
        self.option = option

    def error(self, cls: type[CnnError], message: str, node: Any = None, **kw: Any) -> CnnError:
        if self.option is not None:
            return cls(f"{self.option}: {message}", **kw)
        span = getattr(node, "span", None)
        if not isinstance(span, Span) or span.line == 0:
            span = self.setting.span
        return cls(message, span, **kw)


def _number(node: Any, w: _Where, what: str) -> Fraction:
    if isinstance(node, (ast.Num, ast.Neg, ast.BinOp)):
        return evaluate(node, {})
    raise w.error(ArgumentError, f"`{w.setting.key}` needs {what}, got {_describe(node)}", node)


# Integer settings end up in int32 step counters and schedules, or as 32-bit PRNG seeds; a
# larger value would overflow there (or, for a seed, silently alias a smaller one), so each is
# bounded here, where the setting is still known.
INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1
CROP_MAX = 1024  # pixels of padding: more than any image is wide, and it is allocated per batch
FLOAT_MAX = 1e300  # beyond this a Fraction no longer converts to a float


def _float(node: Any, w: _Where, *, lo: float | None = None, hi: float | None = None, open_hi: bool = False) -> float:
    v = _number(node, w, "a number")
    if abs(v) > FLOAT_MAX:
        raise w.error(ArgumentError, f"`{w.setting.key}` is too large a number (over {FLOAT_MAX:g})", node)
    if (lo is not None and v < lo) or (hi is not None and (v >= hi if open_hi else v > hi)):
        rng = f"at least {lo:g}" if hi is None else f"from {lo:g} to {'below ' if open_hi else ''}{hi:g}"
        raise w.error(ArgumentError, f"`{w.setting.key}` must be {rng}, got {float(v):g}", node)
    return float(v)


def _int(node: Any, w: _Where, *, lo: int = 0, hi: int = INT32_MAX, arg: str | None = None) -> int:
    v = _number(node, w, "a whole number")
    what = f"`{w.setting.key}`" + (f"'s `{arg}=`" if arg else "")
    if v.denominator != 1:
        shown = f"{float(v):g}" if abs(v) <= FLOAT_MAX else "a fraction"
        raise w.error(ArgumentError, f"{what} must be a whole number, got {shown}", node)
    if v < lo:
        raise w.error(ArgumentError, f"{what} must be at least {lo}, got {_short(int(v))}", node)
    if v > hi:
        why = {
            SEED_MAX: "seeds are 32-bit: a larger one would repeat a smaller seed's run",
            INT32_MAX: "steps and counts are kept in 32 bits in the training loop",
        }.get(hi)
        raise w.error(
            ArgumentError,
            f"{what} must be from {lo} to {hi}, got {_short(int(v))}",
            node,
            notes=[why] if why else [],
        )
    return int(v)


def _short(v: int) -> str:
    """An integer as written, or `about 1e+20` when it is too long to read."""
    return (
        str(v)
        if abs(v) < 10**16
        else f"about {float(v):.3g}"
        if abs(v) <= FLOAT_MAX
        else f"a {len(str(abs(v)))}-digit number"
    )


def _bool(node: Any, w: _Where) -> bool:
    """`true` or `false`, the words a layer's boolean option takes (`values.BOOLEANS`)."""
    b = boolean(node)
    if b is not None:
        return b
    raise w.error(ArgumentError, f"`{w.setting.key}` is `true` or `false`, got {_describe(node)}", node)


def _text(node: Any, w: _Where, what: str) -> str:
    if isinstance(node, ast.Str):
        return node.value
    if isinstance(node, ast.Var):
        return node.name
    raise w.error(ArgumentError, f"`{w.setting.key}` needs {what}, got {_describe(node)}", node)


def _choice(node: Any, w: _Where, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    name = _text(node, w, "a name: " + ", ".join(f"`{c}`" for c in choices))
    if name not in choices:
        raise w.error(
            CnnNameError,
            f"unknown {w.setting.key} `{name}`",
            node,
            notes=["choose one of " + ", ".join(f"`{c}`" for c in choices)],
            hints=did_you_mean(name, choices),
        )
    return name


# How one argument of a `train` call is read (`_float(v, w, lo=0)`, `_bool`).
Read = Callable[[Any, _Where], Any]


def _call(
    node: Any, w: _Where, table: Mapping[str, Mapping[str, Any]], what: str, read: Callable[[str, str], Read]
) -> tuple[str, dict[str, Any]]:
    """`name` or `name(a, key=b)`, bound by the one binder to `table[name]`'s arguments (in
    order; a default of None: required), each value read by `read(name, key)`; only the
    arguments written are returned."""
    if isinstance(node, ast.SettingCall):
        name, args, kwargs = node.name, node.args, node.kwargs
    else:
        name, args, kwargs = _text(node, w, f"a {what} name"), (), ()
    if name not in table:
        raise w.error(
            CnnNameError,
            f"unknown {what} `{name}`",
            node,
            notes=["choose one of " + ", ".join(f"`{c}`" for c in table)],
            hints=did_you_mean(name, table),
        )
    known = table[name]
    required = [k for k, v in known.items() if v is None]
    params = tuple(
        P(k, _kind(read(name, k), w), REQUIRED if d is None else d, positional=True, doc=f"`{k}=`")
        for k, d in known.items()
    )
    callee = Callee(
        name,
        params,
        usage=(f"e.g. `{name}({required[0]}=10)`",) if required else (),
        unknown_notes=(f"`{name}` takes " + (", ".join(f"`{k}`" for k in known) or "no arguments"),),
        unknown_hints=lambda key: _other_spelling(key, known),
        error=w.error,
    )
    given = [*(Given(None, v, v) for v in args), *(Given(k, v, v) for k, v in kwargs)]
    return name, bind(callee, given, {}, node, defaults=False)


def _kind(read: Read, w: _Where) -> Kind:
    """A value kind reading a `train` value at `w` (its messages name the setting)."""
    return Kind("a value", lambda v, env, span: read(v, w))


# Other libraries' names for the arguments (Keras, PyTorch, optax), for the hint.
_SPELLINGS = {
    "learning_rate": "lr",
    "learningrate": "lr",
    "rate": "lr",
    "beta_1": "b1",
    "beta1": "b1",
    "beta_2": "b2",
    "beta2": "b2",
    "epsilon": "eps",
    "wd": "weight_decay",
    "alpha": "decay",  # PyTorch's RMSprop smoothing constant
    "rho": "decay",  # Keras's
    "step_size": "every",
    "warmup_steps": "steps",
}


def _other_spelling(key: str, known: Mapping[str, Any]) -> list[str]:
    """`["write `lr=` (Keras and optax call it `learning_rate`)"]` where another library's name was used."""
    mine = _SPELLINGS.get(key.lower())
    if mine in known:
        return [f"write `{mine}=`: `{key}` is another library's name for it"]
    if key.lower() == "betas" and {"b1", "b2"} <= set(known):
        return ["write `b1=0.9, b2=0.999`: PyTorch's `betas=(b1, b2)` is two arguments here"]
    return []


def _describe(node: Any) -> str:
    match node:
        case ast.Str(value=v):
            return f'the string "{v}"'
        case ast.Var(name=n):
            return f"the name `{n}`"
        case ast.Tuple():
            return "a list"
        case ast.SettingCall(name=n):
            return f"a call `{n}(...)`"
        case ast.Num(value=v):
            return f"the number {float(v):g}"
    return "a value of another kind"


def _items(node: Any) -> tuple[Any, ...]:
    return node.items if isinstance(node, ast.Tuple) else (node,)


# --- the settings ----------------------------------------------------------------------------
Reader = Callable[[Any, _Where], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SettingDef:
    """One `train` setting: its name, the form of its value, help, and its reader."""

    name: str
    form: str
    help: str
    read: Reader = field(repr=False)
    raw_cli: bool = False  # the CLI text is taken as it is (paths, patterns)


DATA_KINDS = ("digits", "mnist", "fashion-mnist")
# Suffixes of data files that are not read (only `.npz` archives are): a spec naming one is a mistake of form.
_UNREAD_DATA_SUFFIXES = (".npy", ".csv", ".pt", ".pth", ".pkl", ".pickle", ".h5", ".hdf5", ".mat", ".parquet")
_DATA_FORMS = 'a data set: `digits`, "mnist:DIR", "fashion-mnist:DIR", "FILE.npz" or "DIR"'


def _read_data(v: Any, w: _Where) -> dict[str, Any]:
    return {"data": check_data_form(_text(v, w, _DATA_FORMS), v, w)}


def check_data_form(spec: str, node: Any, w: _Where) -> str:
    """`spec` when its form is one `load_dataset` reads. Only the form is checked (the folder
    may exist only where training runs): an empty spec, `digits:...`, a misspelt kind before
    a colon (`mnsit:DIR`) and a data file of a kind never read (`x.npy`) are errors."""
    forms = ["data can be " + _DATA_FORMS.removeprefix("a data set: ")]
    if not spec.strip():
        raise w.error(ArgumentError, "`data` is empty", node, notes=forms)
    kind, colon, _rest = spec.partition(":")
    if colon and kind == "digits":
        raise w.error(
            ArgumentError,
            f"`digits` takes no folder, got `{spec}`",
            node,
            notes=["`digits` is scikit-learn's built-in 8x8 digits"],
            hints=["write `data = digits`"],
        )
    if colon and kind not in DATA_KINDS and len(kind) > 1 and "/" not in kind and "\\" not in kind:
        near = did_you_mean(kind, DATA_KINDS)
        if near:  # `mnsit:DIR`; a one-letter `C:` (a drive) or a path is left to the loader
            raise w.error(CnnNameError, f"unknown data set `{kind}` in `{spec}`", node, notes=forms, hints=near)
    suffix = "." + spec.rsplit(".", 1)[-1].lower() if "." in spec.rsplit("/", 1)[-1] else ""
    if suffix in _UNREAD_DATA_SUFFIXES:
        raise w.error(
            ArgumentError,
            f"`{spec}`: `{suffix}` files are not read as data",
            node,
            notes=forms,
            hints=['save the arrays with `np.savez("data.npz", x=images, y=labels)` and give the `.npz`'],
        )
    return spec


def _read_classes(v: Any, w: _Where) -> dict[str, Any]:
    if isinstance(v, ast.Var) and v.name == "all":
        return {"classes": None}
    classes = tuple(_int(x, w) for x in _items(v))
    if len(set(classes)) != len(classes):
        raise w.error(ArgumentError, "`classes` lists a class twice", v)
    return {"classes": classes}


def _read_normalize(v: Any, w: _Where) -> dict[str, Any]:
    return {"normalize": NORMALIZE[_choice(v, w, NORMALIZE)]}


def _optimizer_arg(name: str, k: str) -> Read:
    if isinstance(OPTIMIZERS[name][k], bool):
        return _bool
    if k == "lr":
        return lambda v, w: _float(v, w, lo=0)
    return lambda v, w: _float(v, w, lo=0, hi=1, open_hi=k in ("b1", "b2", "decay", "momentum"))


def _read_optimizer(v: Any, w: _Where) -> dict[str, Any]:
    name, args = _call(v, w, OPTIMIZERS, "optimizer", _optimizer_arg)
    if name == "sgd" and args.get("nesterov") and not args.get("momentum"):
        raise w.error(
            ArgumentError,
            "`nesterov=true` needs a momentum",
            v,
            hints=["e.g. `sgd(lr=0.1, momentum=0.9, nesterov=true)`"],
        )
    return {"optimizer": name, "opt_args": tuple(args.items())}


def _schedule_arg(name: str, k: str) -> Read:
    if k in ("every", "steps"):
        return lambda v, w: float(_int(v, w, lo=1, arg=k))
    if k == "gamma":
        return lambda v, w: _float(v, w, lo=0, hi=1)
    return lambda v, w: _float(v, w, lo=0)


def _read_schedule(v: Any, w: _Where) -> dict[str, Any]:
    name, args = _call(v, w, SCHEDULES, "schedule", _schedule_arg)
    if name == "warmup":  # `schedule = warmup(steps=N)`: a constant rate after N warm-up steps
        return {"schedule": "constant", "schedule_args": (), "warmup": int(args["steps"])}
    return {"schedule": name, "schedule_args": tuple(args.items())}


def _augment_arg(name: str, k: str) -> Read:
    return lambda v, w: _int(v, w, lo=1, hi=CROP_MAX, arg=k)  # `crop(pad=P)`


def _read_augment(v: Any, w: _Where) -> dict[str, Any]:
    out: dict[str, Any] = {"crop": 0, "flip": False}
    items = _items(v)
    if isinstance(v, ast.Str):
        items = _parse_list(v.value, w)
    for item in items:
        if isinstance(item, ast.Var) and item.name == "none" and len(items) == 1:
            return out
        name, kw = _call(item, w, AUGMENTATIONS, "augmentation", _augment_arg)
        if name == "crop":
            out["crop"] = kw["pad"] if "pad" in kw else int(AUGMENTATIONS["crop"]["pad"] or 0)
        else:
            out["flip"] = True
    return out


def _read_freeze(v: Any, w: _Where) -> dict[str, Any]:
    if isinstance(v, ast.Str):
        pats = tuple(p.strip() for p in v.value.split(",") if p.strip())
    else:
        pats = tuple(_text(x, w, "layer names or quoted patterns") for x in _items(v))
    return {"freeze": pats}


def _read_init(v: Any, w: _Where) -> dict[str, Any]:
    path = _text(v, w, 'a checkpoint path in quotes: init = "runs/source"')
    return {"init": None if path in ("", "none") else path}


def _simple(key: str, read: Callable[[Any, _Where], Any]) -> Reader:
    return lambda v, w: {key: read(v, w)}


SETTINGS: dict[str, SettingDef] = {
    s.name: s
    for s in (
        SettingDef(
            "data",
            'NAME or "SPEC"',
            "the data set: digits, mnist:DIR, fashion-mnist:DIR, FILE.npz, image DIR",
            _read_data,
            raw_cli=True,
        ),
        SettingDef("classes", "(C, ...)", "train on these classes only, relabelled 0.. in order", _read_classes),
        SettingDef(
            "val",
            "FRACTION",
            "share of the training set held out for validation (default 0.1)",
            _simple("val", lambda v, w: _float(v, w, lo=0, hi=1, open_hi=True)),
        ),
        SettingDef(
            "normalize",
            "standardize|scale|none",
            "pixel normalisation: per-channel mean/std, /255, or raw 0..255",
            _read_normalize,
        ),
        SettingDef("grayscale", "true|false", "convert RGB images to one channel", _simple("grayscale", _bool)),
        SettingDef("resize", "true|false", "resize folder images to the input size", _simple("resize", _bool)),
        SettingDef(
            "loss",
            "|".join(LOSSES),
            "the loss (default crossentropy)",
            _simple("loss", lambda v, w: _choice(v, w, LOSSES)),
        ),
        SettingDef(
            "label_smoothing",
            "EPS",
            "mix EPS of a uniform distribution into the targets",
            _simple("label_smoothing", lambda v, w: _float(v, w, lo=0, hi=1, open_hi=True)),
        ),
        SettingDef(
            "optimizer",
            "NAME(lr=, ...)",
            "sgd(lr, momentum, nesterov), adam(lr, b1, b2, eps), adamw(lr, weight_decay, ...), rmsprop(lr, decay, momentum, eps)",
            _read_optimizer,
        ),
        SettingDef(
            "lr",
            "RATE",
            "the peak learning rate (overrides the optimizer's lr=)",
            _simple("lr", lambda v, w: _float(v, w, lo=0)),
        ),
        SettingDef(
            "schedule",
            "NAME(...)",
            "constant, step(every=EPOCHS, gamma=0.1), cosine(min=0), warmup(steps=N)",
            _read_schedule,
        ),
        SettingDef(
            "warmup",
            "STEPS",
            "linear warm-up from 0 over this many steps, before the schedule",
            _simple("warmup", lambda v, w: _int(v, w)),
        ),
        SettingDef("batch", "N", "examples per step (default 64)", _simple("batch", lambda v, w: _int(v, w, lo=1))),
        SettingDef(
            "epochs", "N", "passes over the training set (default 10)", _simple("epochs", lambda v, w: _int(v, w))
        ),
        SettingDef(
            "seed",
            "N",
            "seeds initialisation, shuffling, augmentation, dropout and the validation split",
            _simple("seed", lambda v, w: _int(v, w, hi=SEED_MAX)),
        ),
        SettingDef(
            "augment",
            "crop(pad=P) | flip | (crop, flip) | none",
            "random crop with padding, random left-right flip",
            _read_augment,
            raw_cli=True,
        ),
        SettingDef(
            "freeze",
            '(NAME, ...) or "PATTERN, ..."',
            "layers that get no gradient and no optimizer state",
            _read_freeze,
            raw_cli=True,
        ),
        SettingDef(
            "init",
            '"CHECKPOINT"',
            "load matching layers by name from a checkpoint (transfer learning)",
            _read_init,
            raw_cli=True,
        ),
    )
}


def _parse_value(text: str, key: str) -> Any:
    """Read CLI text as a `train` value (the grammar's), e.g. `sgd(lr=0.1)` or `5,6,7`."""
    from ..syntax.parse import parse

    first: CnnSyntaxError | None = None
    for candidate in (text, f"({text})") if "," in text and not text.lstrip().startswith("(") else (text,):
        try:
            (s,) = parse(f"train {{ {key} = {candidate} }}").train
            return s.value
        except CnnSyntaxError as e:
            first = first or e
    option = f"--{key.replace('_', '-')}"
    form = f"write it as in the file's train section: {SETTINGS[key].form}"
    if first is not None and f"`{text}`" in first.message:  # the parser's own words name it (out of range)
        raise ArgumentError(f"{option}: {first.message}", hints=[*first.hints, form])
    why = f": {first.message}" if first is not None else ""
    raise ArgumentError(f"{option}: cannot read `{text}`{why}", hints=[form])


def _parse_list(text: str, w: _Where) -> tuple[Any, ...]:
    """`"crop(pad=2), flip"` -> the calls, split at top-level commas."""
    from ..syntax.parse import parse

    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            if text[start:i].strip():
                parts.append(text[start:i].strip())
            start = i + 1
    out = []
    for part in parts:
        try:
            (s,) = parse(f"train {{ x = {part} }}").train
        except CnnSyntaxError:
            raise w.error(ArgumentError, f"cannot read `{part}` in `{w.setting.key}`") from None
        out.append(s.value)
    return tuple(out)


# --- resolving -------------------------------------------------------------------------------
def settings_to_config(settings: Iterable[ast.Setting], base: TrainConfig | None = None) -> TrainConfig:
    """Apply `train { ... }` settings to `base` (default: the defaults). Raises `CnnError`s
    carrying the setting's span: attach the source with `err.with_source(net.ir.source)`."""
    cfg = base or TrainConfig()
    seen: dict[str, ast.Setting] = {}
    for s in settings:
        if s.key not in SETTINGS:
            raise CnnNameError(
                f"unknown train setting `{s.key}`",
                s.span,
                notes=["settings: " + ", ".join(SETTINGS)],
                hints=did_you_mean(s.key, SETTINGS) or ["see `cnndsl train --help`"],
            )
        if s.key in seen:
            raise ArgumentError(f"`{s.key}` is set twice", s.span, notes=[f"first set at {seen[s.key].span}"])
        seen[s.key] = s
        cfg = dataclasses.replace(cfg, **SETTINGS[s.key].read(s.value, _Where(s)))
    lr_call = "optimizer" in seen and "lr" in dict(cfg.opt_args)
    if "lr" in seen and lr_call:
        raise ArgumentError(
            "the learning rate is set twice: by `lr` and by the optimizer's `lr=`",
            seen["lr"].span,
            hints=["keep one of them"],
        )
    return cfg


def check_train_section(settings: Iterable[ast.Setting], layers: Iterable[tuple[str, int]]) -> list[CnnWarning]:
    """What `cnndsl compile` checks of a `train { ... }` section, without loading data or JAX:
    every setting and value as `settings_to_config` reads them (raising its `CnnError`s), and
    the `freeze` patterns against the network's layers `(name, trainable parameters)`. A
    pattern that matches no layer with parameters is a warning here (training refuses it)."""
    settings = tuple(settings)
    cfg = settings_to_config(settings)
    where = next((s for s in settings if s.key == "freeze"), None)
    if where is None or not cfg.freeze:
        return []
    layers = list(layers)
    trainable = [name for name, params in layers if params > 0]
    warnings: list[CnnWarning] = []
    for pattern in cfg.freeze:
        if not any(_freeze_matches(pattern, name) for name in trainable):
            empty = [name for name, _ in layers if _freeze_matches(pattern, name)]
            note = (
                f"`{empty[0]}`"
                + (f" and {len(empty) - 1} more have" if len(empty) > 1 else " has")
                + " no trainable parameters"
                if empty
                else "layers with parameters: "
                + ", ".join(trainable[:12])
                + (f" and {len(trainable) - 12} more" if len(trainable) > 12 else "")
            )
            warnings.append(
                CnnWarning(
                    f"`freeze` pattern `{pattern}` matches no layer with parameters",
                    where.span,
                    notes=[note],
                    hints=did_you_mean(pattern, trainable)
                    or ["patterns are layer names or globs over dotted paths: `conv1`, `conv*`, `stage1.*`"],
                )
            )
    return warnings


def _freeze_matches(pattern: str, layer: str) -> bool:
    """As `transfer.freeze_mask` matches: the pattern names the layer, a scope above it, or
    an array inside it (`conv1.bias`)."""
    import fnmatch

    parts = layer.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return (
        any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)
        or fnmatch.fnmatchcase(layer + ".x", pattern)
        or (pattern.startswith(layer + ".") and "." not in pattern[len(layer) + 1 :])
    )


def apply_overrides(cfg: TrainConfig, overrides: Mapping[str, str | Any]) -> TrainConfig:
    """Apply command-line overrides `{setting: text}` (`{"epochs": "3", "optimizer": "sgd(lr=0.1)"}`).

    Text is read as the file's value would be; for `data`, `init`, `freeze` and `augment` it is
    taken as written (a path, comma-separated patterns or augmentations). Non-text values
    (numbers, booleans, tuples) are used as they are.
    """
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in SETTINGS:
            raise CnnNameError(f"unknown train setting `{key}`", hints=did_you_mean(key, SETTINGS))
        option = f"--{key.replace('_', '-')}"
        text = _to_text(value)
        node = ast.Str(value=text) if SETTINGS[key].raw_cli else _parse_value(text, key)
        setting = ast.Setting(key=key, value=node)
        cfg = dataclasses.replace(cfg, **SETTINGS[key].read(node, _Where(setting, option)))
    return cfg


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ", ".join(map(_to_text, value))
    return str(value)
