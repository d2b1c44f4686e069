"""Small I/O helpers shared across segkit (standard library only: the torch-free ONNX path uses them)."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import sys
import time
from pathlib import Path


@contextlib.contextmanager
def atomic_open(path: str | Path):
    """Open ``path`` for writing (binary) atomically: the one home of segkit's crash-safe writes.

    Yields a file object on a temporary file next to ``path`` (``.<name>.<pid>.tmp``); on a clean
    exit the data is flushed and fsync-ed, the file renamed over ``path`` and the folder
    fsync-ed, so a crash at any moment leaves either the old file or the new one under
    ``path``, never a truncated mix. On an exception the temporary file is removed; a killed process
    leaves it, and :func:`remove_stale_temporaries` removes it at the next start. The file
    gets the permissions ``open`` gives (``0o666`` minus the umask), like any other file.

    A full disk (or quota) during the write, however the writer reports it (PyTorch's zip writer says
    ``inline_container.cc … unexpected pos``, with the ``OSError`` as its context), raises
    :class:`segkit.errors.OutputError` ``"no space left on device writing <path>; …"`` saying what was
    kept (the previous ``path``, or nothing) and that the partial file was removed. So does a temporary
    file that cannot be created (a read-only or missing folder: the path and the reason).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        f = open(tmp, "wb")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            if os.path.exists(tmp):
                os.unlink(tmp)
        full = no_space_error(e)
        if full is not None:
            raise _write_error(path, full) from e
        raise
    fsync_dir(path.parent)


def no_space_error(e: BaseException | None) -> OSError | None:
    """The "no space left on device" (``ENOSPC``) or "disk quota exceeded" (``EDQUOT``) ``OSError`` behind ``e``
    (itself, or in its ``__cause__`` / ``__context__`` chain), or ``None``."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e
        e = e.__cause__ or e.__context__
    return None


def _write_error(path: Path, e: OSError):
    """:class:`segkit.errors.OutputError` for a failed write of ``path``: which file, the reason, what was kept."""
    from segkit.errors import OutputError

    kept = f"{path} keeps its previous content" if path.exists() else f"nothing was written to {path}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if e.errno == errno.ENOSPC else "disk quota exceeded"
        err = OutputError(f"{what} writing {path}; {kept} (the partial file was removed); free some space and rerun")
    else:
        err = OutputError(f"cannot write {path} ({e.strerror or e}); {kept}")
    err.errno = e.errno  # (no .filename: OSError would then print "[Errno N] None: path" instead of the message)
    return err


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
    try:
        path.exists()
    except OSError as e:  # ENAMETOOLONG and the like
        raise OutputError(f"{what} {path}: cannot use this path ({e.strerror or e})") from None
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: exists and is a file, not a folder")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{what} {path}: cannot create it, {parent} is a file")
    existing = next((q for q in (path, *path.parents) if q.exists()), None)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".segkit-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or str(e)
        if existing is not None and existing != path:  # the folder had to be created, under `existing`
            first = existing / path.relative_to(existing).parts[0]
            raise OutputError(
                f"{what} {path}: cannot create {first} ({reason}); {existing} is the deepest folder of the path "
                f"that exists (a typo, or a drive that is not mounted?)"
            ) from None
        raise OutputError(f"{what} {path}: cannot write there ({reason})") from None
    if existing is not None and existing != path and _mount_parent(existing):
        import warnings

        first = existing / path.relative_to(existing).parts[0]
        warnings.warn(
            f"{what} {path}: created {first}, which did not exist; if a drive should be mounted there, it is not "
            f"(the files go to the disk that holds {existing})",
            UserWarning,
            stacklevel=3,
        )
    return path


def _mount_parent(folder: Path) -> bool:
    """Whether ``folder`` is where removable drives and network shares are mounted (``/mnt``, ``/media``,
    ``/media/<user>``, ``/run/media/<user>``, ``/Volumes``)."""
    parts = folder.resolve().parts
    return parts[1:2] in (("mnt",), ("media",), ("Volumes",)) and len(parts) <= 3 or parts[1:3] == ("run", "media")


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """Like :func:`check_output_dir` for a file to be written: ``path`` must not be a folder, its folder
    is created and probed. An existing file is not looked at: :func:`claim_output` refuses it (or moves
    it aside), the policy of every command. Returns ``path``."""
    from segkit.errors import OutputError

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name (a new name, or one inside {path}/)")
    check_output_dir(path.parent, what=f"{what} {path}: its folder")
    return path


# ----------------------------------------------------------------------------- existing outputs
# segkit's output policy (docs/reliability.md "Outputs are never silently replaced"): a command never
# writes over results that are already there. A folder that holds files, or a file that exists, is
# refused (OutputExistsError, exit 2, nothing touched) unless --overwrite / overwrite=True is given,
# which first moves the old results aside (<folder>.prev-<time>, <stem>.prev-<time><suffix>).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")  # atomic_open's ".<name>.<pid>.tmp"


def _pid_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (``True`` when that cannot be told)."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):
        return False
    except OSError:  # EPERM: it runs, under another user
        return True
    return True


def format_size(size: int) -> str:
    """``1234567`` → ``"1.2 MB"`` (decimal units, as ``ls -h --si``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def stale_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """The temporary files of :func:`atomic_open` (``.<name>.<pid>.tmp``) under ``folder`` (recursively)
    whose process no longer runs: what an interrupted save left behind. ``name``: only those of that file
    name, directly in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.iterdir() if name is not None else folder.rglob(".*.tmp")
    found = []
    for p in candidates:
        m = _TEMPORARY.match(p.name)
        if not m or (name is not None and m["name"] != name):
            continue
        if p.is_file() and not p.is_symlink() and not _pid_running(int(m["pid"])):
            found.append(p)
    return sorted(found)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def remove_stale_temporaries(folder: str | Path, name: str | None = None, log=_say) -> list[Path]:
    """Remove the :func:`stale_temporaries` under ``folder`` (an interrupted save leaves one, up to the
    size of the file it was writing), printing one line per file with its size (``log``, default
    stderr). Files that vanish meanwhile, or cannot be removed, are skipped. Returns the removed paths."""
    removed = []
    for p in stale_temporaries(folder, name):
        try:
            size = p.stat().st_size
            p.unlink()
        except OSError:
            continue
        if log:
            log(f"removed {p} ({format_size(size)}), a temporary file left by an interrupted save")
        removed.append(p)
    return removed


def aside_path(path: str | Path) -> Path:
    """Where :func:`move_aside` puts ``path``: ``<folder>.prev-<YYYYmmdd-HHMMSS>`` for a folder,
    ``<stem>.prev-<YYYYmmdd-HHMMSS><suffix>`` for a file (``model.onnx`` → ``model.prev-…onnx``);
    ``-2``, ``-3`` … appended when that name is taken."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    is_dir = path.is_dir() and not path.is_symlink()
    stem, suffix = (path.name, "") if is_dir else (path.stem, path.suffix)
    for n in range(1, 1000):
        tag = f"prev-{stamp}" if n == 1 else f"prev-{stamp}-{n}"
        target = path.with_name(f"{stem}.{tag}{suffix}")
        if not os.path.lexists(target):
            return target
    raise FileExistsError(f"{path}: no free name to move it aside")  # pragma: no cover


def move_aside(path: str | Path) -> Path:
    """Rename ``path`` (a folder or a file) to :func:`aside_path` and return the new path; a finished
    result is never deleted. :class:`segkit.errors.OutputError` naming it when the rename fails."""
    from segkit.errors import OutputError

    path = Path(path)
    target = aside_path(path)
    try:
        path.rename(target)
    except OSError as e:
        raise OutputError(f"{path}: cannot move it aside to {target} ({e.strerror or e})") from None
    fsync_dir(path.parent)
    return target


def _aside_pattern(path: Path, is_dir: bool) -> str:
    return f"{path}.prev-<time>" if is_dir else str(path.with_name(f"{path.stem}.prev-<time>{path.suffix}"))


def describe_contents(folder: str | Path, limit: int = 5, ignore=()) -> str:
    """``"12 files: metrics.json, confusion_matrix.png, …"``: the number of files under ``folder`` and
    the first ``limit`` names directly in it (folders with a trailing ``/``); ``ignore``: paths not counted."""
    folder = Path(folder)
    skip = {Path(p) for p in ignore}
    names = sorted(
        p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in folder.iterdir() if p not in skip
    )
    count = sum(1 for p in folder.rglob("*") if p not in skip and (p.is_file() or p.is_symlink()))
    shown = ", ".join(names[:limit]) + (", …" if len(names) > limit else "")
    what = f"{count} file{'s' if count != 1 else ''}" if count else f"{len(names)} empty folder(s)"
    return f"{what}: {shown}"


def _describe_file(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "a broken link"
    return f"{format_size(st.st_size)}, modified {time.strftime('%Y-%m-%d %H:%M', time.localtime(st.st_mtime))}"


def claim_output(
    path: str | Path,
    *,
    overwrite: bool = False,
    what: str = "--out",
    kind: str = "dir",
    flag: str = "--overwrite",
    elsewhere: str | None = None,
    log=_say,
) -> Path:
    """Make ``path`` free for new results before any work starts: segkit's one output policy.

    ``kind="dir"``: a folder that holds files (stale temporaries of :func:`atomic_open` aside) is
    refused with :class:`segkit.errors.OutputExistsError` naming the path, what it holds and how to
    proceed, and nothing is touched; with ``overwrite`` it is moved to ``<path>.prev-<time>``
    (:func:`move_aside`) and ``log`` says where. An empty or missing folder is fine. Then the folder is
    created and probed (:func:`check_output_dir`). ``kind="file"``: the same for an existing file,
    moved to ``<stem>.prev-<time><suffix>``; its folder is created and probed.

    Stale temporary files (an interrupted save's) are removed, one ``log`` line each, whenever the
    output is written. ``what`` names the output in messages (``"--out"``, ``"DST"``, ``""`` for the
    Python API), ``flag`` the way to overwrite (``"--overwrite"``, ``"overwrite=True"``), ``elsewhere``
    the alternative (default "choose another <what>"). Returns ``path``.
    """
    from segkit.errors import OutputError, UsageError

    if kind not in ("dir", "file"):
        raise UsageError(f"kind must be 'dir' or 'file', got {kind!r}")
    if not str(path).strip():
        raise UsageError(f"{what or 'the output path'} is empty: name a {'folder' if kind == 'dir' else 'file'}")
    path = Path(path)
    try:
        return _claim(path, overwrite, what, kind, flag, elsewhere, log)
    except OutputError:
        raise
    except OSError as e:  # a name too long, a path through a file …: the path and the reason
        raise OutputError(f"{f'{what} {path}'.strip()}: cannot use this path ({e.strerror or e})") from None


def _claim(path: Path, overwrite: bool, what: str, kind: str, flag: str, elsewhere: str | None, log) -> Path:
    from segkit.errors import OutputError, OutputExistsError

    label = f"{what} {path}".strip()
    elsewhere = elsewhere or f"choose another {what or 'path'}"
    if kind == "file":
        if path.is_dir():
            raise OutputError(f"{label}: is a folder; give a file name (a new name, or one inside {path}/)")
        if os.path.lexists(path):
            if not overwrite:
                raise OutputExistsError(
                    f"{label} already exists ({_describe_file(path)}); nothing was changed. Replace it with {flag} "
                    f"(the old file is moved to {_aside_pattern(path, False)}), or {elsewhere}"
                )
            moved = move_aside(path)
            if log:
                log(f"{flag}: moved the previous {label} to {moved}")
        remove_stale_temporaries(path.parent, name=path.name, log=log)
        check_output_dir(path.parent, what=f"{label}: its folder")
        return path
    if path.is_dir():
        stale = stale_temporaries(path)
        held = [p for p in path.iterdir() if p not in stale]
        if held:
            desc = describe_contents(path, ignore=stale)
            if not overwrite:
                raise OutputExistsError(
                    f"{label} already holds {desc}; nothing was changed. Replace them with {flag} (they are "
                    f"moved to {_aside_pattern(path, True)}), or {elsewhere}"
                )
            here = Path.cwd().resolve()
            if path.resolve() == here or path.resolve() in here.parents:
                raise OutputExistsError(
                    f"{label}: {flag} would move the current folder (or one above it) aside; {elsewhere}"
                )
            remove_stale_temporaries(path, log=log)
            moved = move_aside(path)
            if log:
                log(f"{flag}: moved the previous {label} ({desc}) to {moved}")
        else:
            remove_stale_temporaries(path, log=log)
    return check_output_dir(path, what=what or "output folder")


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


# ----------------------------------------------------------------------------- did you mean
# characters that look alike, typed for one another ("segformer-bo" for "segformer-b0"): half a substitution
_LOOKALIKE = {frozenset(p) for p in ("o0", "l1", "i1", "s5", "b8", "z2", "-_", "._", "-.")}


def edit_distance(a: str, b: str) -> float:
    """Optimal-string-alignment distance between ``a`` and ``b``: insertions, deletions, substitutions and
    transpositions of neighbours cost 1, a substitution of look-alike characters (``o``/``0``, ``l``/``1``,
    ``-``/``_`` …) 0.5."""
    rows = [[float(j) for j in range(len(b) + 1)]]
    for i in range(1, len(a) + 1):
        row = [float(i)] + [0.0] * len(b)
        for j in range(1, len(b) + 1):
            ca, cb = a[i - 1], b[j - 1]
            sub = 0.0 if ca == cb else 0.5 if frozenset((ca, cb)) in _LOOKALIKE else 1.0
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + sub)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def nearest_names(name: str, choices, n: int = 3) -> list[str]:
    """The ``choices`` nearest to ``name`` by :func:`edit_distance` (case-insensitive), at most ``n``: those
    at the smallest distance, if it is small for the name's length (up to a third of it, at least 1). A
    choice that starts with ``name`` (a model name where a registry name ``<model>_<data>`` is expected), or
    with a near spelling of it, counts as at distance ½ more than that of its start. ``[]`` when none is near."""
    key = str(name).lower()
    if not key:
        return []
    limit = max(1.0, len(key) / 3)
    scored = []
    for order, choice in enumerate(dict.fromkeys(str(c) for c in choices)):
        c = choice.lower()
        d = edit_distance(key, c)
        if len(key) >= 4:  # its start, give or take one character
            for cut in range(len(key) - 1, min(len(key) + 2, len(c))):
                d = min(d, edit_distance(key, c[:cut]) + 0.5)
        if d <= limit:
            scored.append((d, order, choice))
    if not scored:
        return []
    best = min(d for d, _, _ in scored)
    return [choice for d, _, choice in sorted(scored) if d == best][:n]


def suggest(name: str, choices, n: int = 3) -> str:
    """``" (did you mean a, b?)"`` for the :func:`nearest_names` of ``name`` in ``choices``, or ``""``."""
    close = nearest_names(name, choices, n)
    return f" (did you mean {', '.join(close)}?)" if close else ""


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def output_stems(files) -> list[str]:
    """Stems for output names; files sharing a stem (``a.jpg``, ``a.png``) get their suffix appended (``a_jpg``)."""
    stems = [Path(f).stem for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    return [
        f"{Path(f).stem}_{Path(f).suffix.lstrip('.').lower()}" if Path(f).stem in dup else Path(f).stem for f in files
    ]


def _names(paths, limit: int = 5) -> str:
    names = [p.name for p in paths]
    return ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _special_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, for messages."""
    import stat

    mode = os.stat(path).st_mode
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "a socket" if stat.S_ISSOCK(mode) else "a special file")


def list_inputs(inputs: str | Path, videos: bool = True, warn: bool = True) -> tuple[list[Path], list[Path]]:
    """``(images, videos)`` named by ``inputs``: one file, or the files directly inside a folder (sorted).

    A file is taken as given (an image, or with ``videos`` a video by its suffix, :data:`VIDEO_SUFFIXES`). In a
    folder, image files (:data:`IMAGE_SUFFIXES`, case-insensitive) and, with ``videos``, video files are taken;
    what is left out — other files, videos when ``videos`` is false, sub-folders (not searched) — is never
    dropped without a word: one ``UserWarning`` (``warn``) lists it. Hidden files (``.name``) are not counted.

    Raises :class:`~segkit.errors.NotFoundError` (a ``FileNotFoundError``) for a missing path and
    :class:`~segkit.errors.DataError` (a ``ValueError``) for a folder with nothing to read (naming what it holds).
    """
    import warnings

    from segkit.errors import DataError, NotFoundError

    inputs = Path(inputs)
    if not inputs.exists():
        why = " (a broken symbolic link)" if inputs.is_symlink() else ""
        try:
            os.stat(inputs)
        except OSError as e:
            if e.errno == errno.ELOOP:
                why = " (a symbolic link that points back to itself, a loop)"
        raise NotFoundError(f"input {inputs} does not exist{why}")
    if not inputs.is_dir() and not inputs.is_file():  # reading a FIFO would wait for a writer forever
        raise DataError(f"{inputs}: not a regular file ({_special_kind(inputs)}); give an image or video file")
    if not inputs.is_dir():
        is_video = videos and inputs.suffix.lower() in VIDEO_SUFFIXES
        return ([], [inputs]) if is_video else ([inputs], [])
    try:
        entries = sorted(p for p in inputs.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"{inputs}: cannot list the folder ({e.strerror or e})") from None
    files = [p for p in entries if p.is_file()]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    found_videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    others = [p for p in files if p not in images and p not in found_videos]
    folders = [p for p in entries if p.is_dir()]
    broken = [p for p in entries if p.is_symlink() and not p.exists()]
    special = [p for p in entries if p.exists() and not p.is_file() and not p.is_dir()]
    taken = images + (found_videos if videos else [])
    left = [f"{len(broken)} broken link(s) ({_names(broken)})"] if broken else []
    if special:
        left.append(f"{len(special)} special file(s) ({_names(special)}; {_special_kind(special[0])}, not read)")
    if found_videos and not videos:
        left.append(f"{len(found_videos)} video(s) ({_names(found_videos)}; only images are read here)")
    if others:
        left.append(f"{len(others)} file(s) that are neither images nor videos ({_names(others)})")
    if folders:
        left.append(f"{len(folders)} sub-folder(s) ({_names(folders)}; not searched)")
    if not taken:
        wanted = ", ".join(IMAGE_SUFFIXES + (VIDEO_SUFFIXES if videos else ()))
        holds = "; it holds " + ", ".join(left) if left else " (it is empty)"
        raise DataError(f"no image{' or video' if videos else ''} files ({wanted}) in folder {inputs}{holds}")
    if left and warn:
        warnings.warn(f"{inputs}: skipped " + "; ".join(left), UserWarning, stacklevel=2)
    return images, (found_videos if videos else [])


def list_images(inputs: str | Path, warn: bool = True) -> list[Path]:
    """The image files named by ``inputs``: one file, or the image files directly inside a folder (sorted);
    what else the folder holds is listed in a warning (:func:`list_inputs` with ``videos=False``).

    Raises :class:`~segkit.errors.NotFoundError` (a ``FileNotFoundError``) for a missing path and
    :class:`~segkit.errors.DataError` (a ``ValueError``) for a folder without images (listing the accepted
    suffixes and what it holds).
    """
    return list_inputs(inputs, videos=False, warn=warn)[0]
