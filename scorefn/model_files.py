"""Model files as people have them: which kinds the command line takes, and why not the others.

scorefn serves LightGBM *text* models. This module reads what a user points the command line
at and returns the text model in it, or refuses with a message that says how to get one:

- a LightGBM text model (``booster.save_model("model.txt")``, also the scikit-learn API's
  ``model.booster_.save_model(...)``), plain or gzip-compressed: taken;
- an MLflow model folder (its ``MLmodel`` file, YAML, read with a safe loader that builds
  only plain data) whose ``lightgbm`` flavor's ``data`` file is a text model (what
  ``mlflow.lightgbm.save_model`` / ``log_model`` write for a Booster: ``model.lgb``): taken;
- pickles and joblib files (plain or compressed), skops files, LightGBM's JSON dump, MLflow
  folders of other flavors, anything else: refused, found by content (magic bytes), not by
  the file's name. A pickle is never unpickled: loading one runs code the file names.

Nothing here imports ``lightgbm``: files are recognised by their bytes.
"""

from __future__ import annotations

import bz2
import io
import lzma
import pickletools
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import InvalidModel

MAX_MLMODEL_BYTES = 1024 * 1024
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024  # a decompressed model beyond this is refused
_PEEK = 64 * 1024  # bytes of a compressed file decompressed to see what is inside

HOW_TO_SAVE = ('save a LightGBM text model instead: booster.save_model("model.txt"), or '
               'model.booster_.save_model("model.txt") for the scikit-learn API '
               '(LGBMClassifier, LGBMRegressor)')
HOW_TO_MLFLOW = ("mlflow.lightgbm.save_model / log_model of a Booster (model.booster_ for the "
                 "scikit-learn API) writes a text model, model.lgb")


class ModelFileError(InvalidModel):
    """A file or folder the command line does not take as a model; the message says how to
    get one it takes. (An :class:`~shared.errors.InvalidModel`: the same 422 family.)"""

    code = "unsupported_model_file"


class PickledModel(ModelFileError):
    """A pickle or joblib file (also compressed): refused, never unpickled."""

    code = "pickled_model"


class UnsupportedMlflowModel(ModelFileError):
    """An MLflow model folder without a LightGBM text model in its ``lightgbm`` flavor."""

    code = "unsupported_mlflow_model"


class InvalidMlflowModel(ModelFileError):
    """An MLflow model folder whose ``MLmodel`` file cannot be read or points outside it."""

    code = "invalid_mlflow_model"


@dataclass(frozen=True)
class ModelFile:
    """The LightGBM text model found at what the user gave, and where it came from."""

    data: bytes  # the text model (decompressed when the file was compressed)
    given: Path  # what the user gave: a file, an MLflow folder or its MLmodel file
    file: Path  # the file the model was read from
    compression: str | None = None  # "gzip", ... when the file was compressed
    mlflow_folder: Path | None = None
    flavor: str | None = None  # "lightgbm" for an MLflow folder

    def describe(self) -> str:
        """What was found, e.g. ``LightGBM text model (from MLflow folder ./m, flavor lightgbm)``."""
        notes = []
        if self.mlflow_folder is not None:
            notes.append(f"from MLflow folder {self.given}, flavor {self.flavor}, "
                         f"file {self.file.name}")
        if self.compression:
            notes.append(f"{self.compression}-compressed")
        return "LightGBM text model" + (f" ({'; '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class ModelShape:
    """What a text model is, read from its text: for the command line's summary line."""

    trees: int
    features: int
    categorical: int
    max_leaves: int


def model_shape(text: bytes) -> ModelShape:
    """Count trees, features, categorical features (their ``feature_infos`` list categories)
    and the most leaves of a tree, from a text model's header and tree headers."""
    head_end = text.find(b"\nTree=")
    header = text[:head_end if head_end >= 0 else len(text)]
    infos: list[bytes] = []
    features = 0
    for line in header.split(b"\n"):
        if line.startswith(b"feature_infos="):
            infos = line.split(b"=", 1)[1].split()
        elif line.startswith(b"max_feature_idx="):
            features = int(line.split(b"=", 1)[1]) + 1
    end = text.find(b"\nend of trees")
    trees_part = text[:end if end >= 0 else len(text)]
    leaves = [int(line.split(b"=", 1)[1]) for line in trees_part.split(b"\n")
              if line.startswith(b"num_leaves=")]
    categorical = sum(1 for info in infos if info != b"none" and not info.startswith(b"["))
    return ModelShape(trees=trees_part.count(b"\nTree="), features=features or len(infos),
                      categorical=categorical, max_leaves=max(leaves, default=0))


def read_model_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ModelFile:
    """The LightGBM text model at ``path`` (a file, an MLflow model folder or its ``MLmodel``
    file). Raises :class:`ModelFileError` (or a subclass) for anything else, and ``OSError``
    when it cannot be read."""
    if path.is_dir():
        return _read_mlflow(path, path)
    if path.name == "MLmodel":
        return _read_mlflow(path.parent, path)
    data, compression = _read_file(path, max_bytes)
    return ModelFile(data=data, given=path, file=path, compression=compression)


# -- files --------------------------------------------------------------------------------

def _read_file(path: Path, max_bytes: int, *, within: str = "") -> tuple[bytes, str | None]:
    """A text model's bytes and the compression it was stored with; refuses anything else."""
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ModelFileError(f"{path}{within} is over {max_bytes:,} bytes: too large to be a "
                             f"model scorefn loads")
    compression = _compression(data)
    if compression is None:
        _check_text_model(data, path, within)
        return data, None
    if compression == "lz4":
        raise ModelFileError(f"{path}{within} is lz4-compressed (as joblib.dump(..., "
                             f"compress='lz4') writes), not a LightGBM text model; {HOW_TO_SAVE}")
    inner = _decompress(data, compression, _PEEK)
    if not inner:  # not what its first bytes suggested (or damaged): judged as it is
        _check_text_model(data, path, within)
        return data, None
    kind = _pickle_kind(inner)
    if kind is not None:
        raise PickledModel(_pickle_message(path, within, f"a {compression}-compressed pickle "
                                           f"(as joblib.dump(..., compress=...) writes)", kind))
    if not inner.startswith(b"tree\n"):
        raise ModelFileError(f"{path}{within} is {compression}-compressed but holds no LightGBM "
                             f"text model; {HOW_TO_SAVE}")
    text = _decompress(data, compression, max_bytes + 1)
    if len(text) > max_bytes:
        raise ModelFileError(f"{path}{within} expands beyond {max_bytes:,} bytes: too large to "
                             f"be a model scorefn loads")
    return text, compression


def _check_text_model(data: bytes, path: Path, within: str) -> None:
    """Return when ``data`` starts as a LightGBM text model; else say what it is and refuse."""
    if data.startswith(b"tree\n"):
        return
    kind = _pickle_kind(data)
    if kind is not None:
        raise PickledModel(_pickle_message(path, within, "a pickle (pickle, joblib or "
                                                         "cloudpickle)", kind))
    if data.startswith(b"PK\x03\x04"):
        raise ModelFileError(_zip_message(data, path, within))
    stripped = data[:4096].lstrip()
    if stripped.startswith(b"{") and b'"tree_info"' in data:
        raise ModelFileError(f"{path}{within} is LightGBM's JSON dump (booster.dump_model()), "
                             f"which LightGBM cannot load back; {HOW_TO_SAVE}")
    if data.removeprefix(b"\xef\xbb\xbf").startswith((b"tree\n", b"tree\r\n")):
        raise ModelFileError(f"{path}{within} looks like a LightGBM text model rewritten by an "
                             f"editor (a byte order mark or CRLF line ends); use the file "
                             f"booster.save_model wrote")
    raise ModelFileError(f"{path}{within} is not a LightGBM text model (one starts with a line "
                         f"'tree'); {HOW_TO_SAVE}")


def _compression(data: bytes) -> str | None:
    """The compression ``data`` is in, by its magic bytes (joblib's compressors' formats)."""
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data.startswith(b"BZh"):
        return "bz2"
    if data.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if data.startswith(b"]\x00\x00"):
        return "lzma"
    if data.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if data.startswith(b"ZF"):  # joblib < 0.10: "ZF" and a length, then zlib
        return "zlib (old joblib)"
    if len(data) >= 2 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0:
        return "zlib"
    return None


def _decompress(data: bytes, compression: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``data`` decompressed (bounded: never a bomb)."""
    try:
        if compression == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, limit)
        if compression == "zlib":
            return zlib.decompressobj().decompress(data, limit)
        if compression == "zlib (old joblib)":  # "ZF", the length in hex, then zlib
            start = data.find(b"x", 2, 40)
            return zlib.decompressobj().decompress(data[start:], limit) if start > 0 else b""
        if compression == "bz2":
            return bz2.BZ2Decompressor().decompress(data, limit)
        if compression in ("xz", "lzma"):
            return lzma.LZMADecompressor().decompress(data, limit)
    except (zlib.error, OSError, EOFError, lzma.LZMAError):
        return b""
    return b""  # lz4: no decompressor in the standard library


# -- pickles -------------------------------------------------------------------------------

_PICKLE_START = {"PROTO", "GLOBAL", "MARK", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"}
_GLOBAL = re.compile(r"^[A-Za-z_][\w.]* [A-Za-z_][\w.]*$")  # "module qualname"
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING"}


def _pickle_kind(data: bytes) -> str | None:
    """``None`` unless ``data`` is a pickle; else the first class it names (when found),
    e.g. ``lightgbm.sklearn.LGBMClassifier``, or ``""``. Reads opcodes with
    :func:`pickletools.genops`, which decodes and never executes or imports anything."""
    if not data:
        return None
    magic = len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5
    if not magic and chr(data[0]) not in "c(}])":  # protocol 0/1 openings
        return None
    first_class = ""
    strings: list[str] = []
    try:
        for i, (op, arg, _) in enumerate(pickletools.genops(io.BytesIO(data[:_PEEK]))):
            if i == 0 and op.name not in _PICKLE_START:
                return None
            if op.name in _STRING_OPS and isinstance(arg, (str, bytes)):
                strings.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
            elif op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                if not _GLOBAL.match(arg):  # text that happens to start like a pickle
                    return None if not magic else first_class
                first_class = first_class or arg.replace(" ", ".")
            elif (op.name == "STACK_GLOBAL" and len(strings) >= 2
                  and _GLOBAL.match(f"{strings[-2]} {strings[-1]}")):
                first_class = first_class or f"{strings[-2]}.{strings[-1]}"
            if first_class.startswith("lightgbm."):
                return first_class
            if op.name == "STOP" or i > 5000:
                break
    except (ValueError, EOFError, UnicodeDecodeError):
        pass  # past what was read, or joblib's raw array bytes between pickle opcodes
    if magic or first_class:
        return first_class
    return None


def _pickle_message(path: Path, within: str, what: str, kind: str) -> str:
    of = f" of {kind}" if kind else ""
    return (f"{path}{within} is {what}{of}: scorefn never unpickles a file (loading a pickle "
            f"runs code it names); {HOW_TO_SAVE}")


def _zip_message(data: bytes, path: Path, within: str) -> str:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        names = []
    if any(n == "MLmodel" or n.endswith("/MLmodel") for n in names):
        return (f"{path}{within} is a zipped MLflow model: unzip it and give the folder that "
                f"holds MLmodel")
    if "schema.json" in names:
        return (f"{path}{within} is a skops file (a scikit-learn API model, as "
                f"mlflow.lightgbm.save_model writes an LGBMClassifier by default); {HOW_TO_SAVE}")
    return f"{path}{within} is a zip archive, not a LightGBM text model; {HOW_TO_SAVE}"


# -- MLflow folders -------------------------------------------------------------------------

def _read_mlflow(folder: Path, given: Path) -> ModelFile:
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise ModelFileError(f"{given} is a folder without an MLmodel file: give a LightGBM "
                             f"text model file, or an MLflow model folder ({HOW_TO_MLFLOW})")
    with mlmodel.open("rb") as f:
        raw = f.read(MAX_MLMODEL_BYTES + 1)
    if len(raw) > MAX_MLMODEL_BYTES:
        raise InvalidMlflowModel(f"{mlmodel} is over {MAX_MLMODEL_BYTES:,} bytes: not an "
                                 f"MLmodel file")
    doc = _load_yaml(raw, mlmodel)
    flavors = doc.get("flavors") if isinstance(doc, dict) else None
    if not isinstance(flavors, dict) or not flavors:
        raise InvalidMlflowModel(f"{mlmodel} lists no flavors: not an MLflow model")
    flavor = flavors.get("lightgbm")
    if not isinstance(flavor, dict):
        names = ", ".join(sorted(str(k) for k in flavors))
        raise UnsupportedMlflowModel(
            f"MLflow folder {given} has the flavor(s) {names}, not lightgbm: scorefn serves "
            f"LightGBM text models; {HOW_TO_MLFLOW}; or {HOW_TO_SAVE}")
    data_name = flavor.get("data", "model.lgb")
    if not isinstance(data_name, str) or not data_name:
        raise InvalidMlflowModel(f"{mlmodel}: the lightgbm flavor's data is not a file name")
    data_path = (folder / data_name)
    try:
        inside = data_path.resolve().is_relative_to(folder.resolve())
    except OSError:
        inside = False
    if Path(data_name).is_absolute() or not inside:
        raise InvalidMlflowModel(f"{mlmodel}: the lightgbm flavor's data {data_name[:80]!r} is "
                                 f"outside the folder")
    if not data_path.is_file():
        raise InvalidMlflowModel(f"MLflow folder {given}: the lightgbm flavor's data file "
                                 f"{data_name[:80]!r} is missing")
    model_class = str(flavor.get("model_class", ""))[:80]
    fmt = str(flavor.get("serialization_format", ""))[:40]
    within = f" (the lightgbm flavor's data in MLflow folder {given})"
    try:
        data, compression = _read_file(data_path, DEFAULT_MAX_BYTES, within=within)
    except ModelFileError as exc:
        if model_class and "sklearn" in model_class:
            # What MLflow writes for an LGBMClassifier/LGBMRegressor: a pickle or skops file.
            saved = f", saved as {fmt}" if fmt else ""
            raise UnsupportedMlflowModel(
                f"MLflow folder {given} holds a scikit-learn API model ({model_class}{saved} "
                f"in {data_name}), which scorefn does not load (a pickle would run code): log "
                f"its booster instead, mlflow.lightgbm.log_model(model.booster_, ...), which "
                f"writes a text model, model.lgb; or save model.booster_.save_model("
                f"\"model.txt\")") from None
        raise type(exc)(exc.message) from None
    return ModelFile(data=data, given=given, file=data_path, compression=compression,
                     mlflow_folder=folder, flavor="lightgbm")


def _load_yaml(raw: bytes, mlmodel: Path) -> Any:
    """The MLmodel document, read by PyYAML's safe loader: plain data only (no tags that
    build objects or run code)."""
    try:
        import yaml
    except ImportError:
        raise InvalidMlflowModel("reading an MLflow folder needs PyYAML (pip install PyYAML; "
                                 "it is in requirements-dev.txt)") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(raw, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidMlflowModel(f"{mlmodel} is not valid YAML{where}") from None
    except RecursionError:
        raise InvalidMlflowModel(f"{mlmodel} is nested too deeply") from None
