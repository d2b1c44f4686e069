"""Small I/O helpers shared across segkit (standard library only: the torch-free ONNX path uses them)."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_open(path: str | Path):
    """Open ``path`` for writing (binary) atomically: the one home of segkit's crash-safe writes.

    Yields a file object on a temporary file next to ``path`` (``.<name>.<pid>.tmp``); on a clean
    exit the data is flushed and fsync-ed, the file renamed over ``path`` and the folder
    fsync-ed, so a crash at any moment leaves either the old file or the new one under
    ``path``, never a truncated mix. On an exception the temporary file is removed. The file
    gets the permissions ``open`` gives (``0o666`` minus the umask), like any other file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    f = open(tmp, "wb")
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        f.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(data)


def require(module: str, extra: str, feature: str):
    """Import and return an optional dependency, or raise :class:`segkit.errors.MissingDependencyError`
    with the one line that says how to install it (``pip install "segkit[<extra>]"``)."""
    import importlib

    from segkit.errors import MissingDependencyError

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f'{feature} needs the optional package {module.split(".")[0]!r} ({e}): pip install "segkit[{extra}]"'
        ) from None


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """Make sure, before any work starts, that segkit can write files into the folder ``path``.

    The folder is created if needed (with its parents) and a probe file is written and removed
    in it, so permissions, read-only file systems and files in the way are all found now rather
    than after a long run. Raises :class:`segkit.errors.OutputError` naming the path and the
    problem. Returns ``path``.
    """
    from segkit.errors import OutputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: exists and is a file, not a folder")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{what} {path}: cannot create it, {parent} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".segkit-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    return path


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """Like :func:`check_output_dir` for a file to be written: ``path`` must not be a folder, its folder
    is created and probed (an existing file is replaced when the output is written). Returns ``path``."""
    from segkit.errors import OutputError

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name (e.g. {path / 'model.onnx'})")
    check_output_dir(path.parent, what=f"{what} {path}: its folder")
    return path


def fsync_dir(directory: str | Path) -> None:
    """fsync a directory so that a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_safe(value):
    """Return ``value`` with every float NaN replaced by ``None`` (JSON ``null``), recursively.

    ``json.dumps`` would otherwise write the non-standard token ``NaN``, which strict JSON
    readers (``jq``, JavaScript) reject. Dicts, lists and tuples are walked; tuples come back
    as lists. Torch-free so the ONNX predict path and the robustness tool can share it.
    """
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


def output_stems(files) -> list[str]:
    """Stems for output names; files sharing a stem (``a.jpg``, ``a.png``) get their suffix appended (``a_jpg``)."""
    stems = [Path(f).stem for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    return [
        f"{Path(f).stem}_{Path(f).suffix.lstrip('.').lower()}" if Path(f).stem in dup else Path(f).stem for f in files
    ]


def list_images(inputs: str | Path) -> list[Path]:
    """The image files named by ``inputs``: one file, or the image files directly inside a folder (sorted).

    A folder is not searched recursively; suffixes are :data:`IMAGE_SUFFIXES` (case-insensitive).
    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for a folder without
    images (listing the accepted suffixes).
    """
    inputs = Path(inputs)
    if not inputs.exists():
        raise FileNotFoundError(f"input {inputs} does not exist")
    if inputs.is_file():
        return [inputs]
    files = sorted(p for p in inputs.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {inputs}")
    return files
