"""Pretrained weights in one call: the registry, downloads, verification and the converted-model cache.

``segkit.from_pretrained(x)`` accepts

* a local folder written by ``save_pretrained`` (``model.safetensors`` + ``config.json``);
* a **registry name** (``segformer-b0_ade20k-512``, ``segnext-t_ade20k-512``, ``mit-b0_imagenet``,
  ``mscan-t_imagenet`` …; ``segkit models --pretrained`` lists them, each family declares its own
  in ``Family.pretrained``);
* a **Hugging Face Hub repo id** (``org/name``) holding a segkit folder or a transformers
  SegFormer (``SegformerForSemanticSegmentation``).

Where files go. Hub files are fetched with ``huggingface_hub`` into its own cache (``HF_HOME``
/ ``HF_HUB_CACHE``); URL files with ``torch.hub.download_url_to_file`` into
``$SEGKIT_CACHE/downloads`` (``SEGKIT_CACHE`` defaults to ``~/.cache/segkit``). A downloaded file is
checked against the registry's SHA-256 (or its published prefix) before anything reads it; a
mismatch deletes it and raises. The converted model is written once to
``$SEGKIT_CACHE/models/<name>/`` (a ``save_pretrained`` folder that also records the source, the
licence and the test protocol); later calls read that folder and make no network request.

Offline (``SEGKIT_OFFLINE=1``, ``HF_HUB_OFFLINE=1``, or no network): files already in the caches
are used; otherwise the error names the URL or repo and the path where the file can be put by hand.

The first download of weights with a restrictive licence prints the licence (NVIDIA's SegFormer
weights are for non-commercial use only).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

from segkit.errors import CheckpointError, NotFoundError, SegkitError, UnknownNameError
from segkit.models.family import Pretrained

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class DownloadError(SegkitError, OSError):
    """A file could not be fetched (offline, network, missing on the server) or failed its hash check."""


# ----------------------------------------------------------------------------- locations
def cache_dir() -> Path:
    """``$SEGKIT_CACHE``, default ``~/.cache/segkit``."""
    return Path(os.environ.get("SEGKIT_CACHE") or Path.home() / ".cache" / "segkit").expanduser()


def offline() -> bool:
    """True when ``SEGKIT_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("SEGKIT_OFFLINE", "HF_HUB_OFFLINE")
    )


def registry() -> dict[str, Pretrained]:
    """Registry name → :class:`~segkit.models.family.Pretrained`, over every family of the zoo."""
    from segkit.models.zoo import PRETRAINED

    return PRETRAINED


def entry(name: str) -> Pretrained:
    """The registry entry ``name``; ``KeyError`` with the nearest names otherwise."""
    from segkit.models.zoo import suggest

    reg = registry()
    if name not in reg:
        raise UnknownNameError(
            f"no pretrained weights named {name!r}{suggest(name, reg)}; `segkit models --pretrained` lists them"
        )
    return reg[name]


# ----------------------------------------------------------------------------- downloads
def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str | None, source: str) -> None:
    """Check ``path`` against ``expected`` (full SHA-256 or a prefix); on a mismatch delete it and raise."""
    if not expected:
        return
    got = sha256_of(path)
    if not got.startswith(expected.lower()):
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{source}: the downloaded file's SHA-256 is {got[:16]}…, expected {expected}…; "
            f"the file was deleted and nothing was cached (a corrupt or changed download)"
        )


def download_url(url: str, sha256: str | None = None, progress: bool = True) -> Path:
    """A verified local copy of ``url`` in ``$SEGKIT_CACHE/downloads`` (downloaded only when missing)."""
    dest = cache_dir() / "downloads" / url.rstrip("/").rsplit("/", 1)[-1]
    if dest.is_file():
        verify(dest, sha256, url)
        return dest
    if offline():
        raise DownloadError(
            f"offline (SEGKIT_OFFLINE / HF_HUB_OFFLINE) and {url} is not in the cache: download it by "
            f"hand and put it at {dest}"
        )
    import torch.hub

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.part")
    try:
        torch.hub.download_url_to_file(url, str(tmp), hash_prefix=None, progress=progress)
    except Exception as e:  # urllib raises URLError / HTTPError / OSError / ValueError
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"cannot download {url} ({reason}); to use the file offline, download it by hand and put it at {dest}"
        ) from None
    verify(tmp, sha256, url)
    os.replace(tmp, dest)
    return dest


def download_hub(repo_id: str, filenames: tuple[str, ...], revision: str | None = None) -> Path:
    """The first of ``filenames`` that ``repo_id`` holds, through ``huggingface_hub`` (its cache, its offline mode)."""
    from segkit.utils import require

    hub = require("huggingface_hub", "hub", "loading weights from the Hugging Face Hub")
    import logging

    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    local_only = offline()
    problems = []
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings ("… thrown while requesting HEAD …"): the reason comes below
    try:
        for filename in filenames:
            try:
                return Path(hub.hf_hub_download(repo_id, filename, revision=revision, local_files_only=local_only))
            except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError in some versions: first)
                reach = "" if local_only else ", and the Hub cannot be reached (offline?)"
                problems.append(f"{filename}: not in the local cache{reach}")
            except EntryNotFoundError:
                problems.append(f"{filename}: not in the repository")
            except Exception as e:  # network errors, unknown or gated repository …
                if type(e).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError"):
                    raise DownloadError(
                        f"hf://{repo_id}: no such repository (or revision), or no access to it on the Hugging Face Hub"
                    ) from None
                problems.append(f"{filename}: {type(e).__name__}")
    finally:
        hub_log.setLevel(level)
    where = "the Hugging Face cache (offline mode)" if local_only else "the Hugging Face Hub"
    raise DownloadError(
        f"hf://{repo_id}: none of {list(filenames)} could be fetched from {where} "
        f"({'; '.join(problems)}); to work offline, download the repository once with network access "
        f"(huggingface-cli download {repo_id}) or point HF_HUB_CACHE at a cache that holds it"
    )


def fetch(e: Pretrained, progress: bool = True) -> Path:
    """The verified local weights file of a registry entry (downloaded on first use; licence printed then)."""
    first_time = not _marker(e).exists()
    if first_time and e.licence and not e.licence.lower().startswith(("apache", "mit", "bsd")):
        print(f"{e.name}: licence of these weights: {e.licence}", file=sys.stderr)
    path = download_hub(e.repo_id, e.filenames) if e.repo_id else download_url(e.url, e.sha256, progress)
    if e.repo_id and e.sha256:
        verify(path, e.sha256, e.source)
    if first_time:
        _marker(e).parent.mkdir(parents=True, exist_ok=True)
        _marker(e).write_text(json.dumps({"source": e.source, "file": str(path)}))
    return path


def _marker(e: Pretrained) -> Path:
    return cache_dir() / "fetched" / f"{e.name}.json"


# ----------------------------------------------------------------------------- models
def _dataset_meta(e: Pretrained) -> dict:
    from segkit.data import meta

    if e.dataset == "ade20k":
        return dict(class_names=list(meta.ADE20K_CLASSES), palette=[list(c) for c in meta.ADE20K_PALETTE])
    if e.dataset == "cityscapes":
        return dict(class_names=list(meta.CITYSCAPES_CLASSES), palette=[list(c) for c in meta.CITYSCAPES_PALETTE])
    return {}


def load_registry_model(name: str, map_location="cpu", progress: bool = True):
    """The model of registry entry ``name``: from the converted cache, else downloaded → verified →
    converted (strict load) → cached. Encoder-only entries are refused (they are for ``pretrained:``)."""
    from segkit.checkpoints import from_pretrained, load_checkpoint
    from segkit.models.zoo import build_model

    e = entry(name)
    if e.encoder_only:
        raise CheckpointError(
            f"{name} holds ImageNet encoder weights without a segmentation head: use it to "
            f"initialise training (config `pretrained: {name}`), or pick a segmentation entry"
        )
    folder = cache_dir() / "models" / name
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return from_pretrained(folder, map_location)
    path = fetch(e, progress)
    model = build_model(e.model, e.num_classes, **e.arch, **_dataset_meta(e))
    load_checkpoint(model, path, strict=True, verbose=False)
    model.test_protocol = dict(e.protocol) if e.protocol else None
    model.source = {
        "registry": e.name,
        "source": e.source,
        "licence": e.licence,
        "trained_by": e.trained_by,
        "miou": e.miou,
        "dataset": e.dataset,
    }
    _save_into_cache(model, folder)
    return model.to(map_location).eval()


def _save_into_cache(model, folder: Path) -> None:
    """``save_pretrained`` into a temporary folder, then one rename: the cache never holds half a model."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():  # written meanwhile by another process: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, folder)


def load_hub_model(repo_id: str, map_location="cpu", revision: str | None = None):
    """A model from a Hub repo: a segkit folder (``config.json`` with ``format: segkit``) or a transformers
    SegFormer, converted once into ``$SEGKIT_CACHE/hub/<org>--<name>``."""
    from segkit.checkpoints import from_pretrained, load_checkpoint

    folder = cache_dir() / "hub" / repo_id.replace("/", "--")
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return from_pretrained(folder, map_location)
    config_path = download_hub(repo_id, ("config.json",), revision)
    config = json.loads(config_path.read_text())
    if config.get("format") == "segkit":
        download_hub(repo_id, ("model.safetensors",), revision)
        return from_pretrained(config_path.parent, map_location)
    if config.get("model_type") != "segformer":
        raise CheckpointError(
            f"hf://{repo_id}: neither a segkit model nor a transformers SegFormer "
            f"(config.json model_type={config.get('model_type')!r})"
        )
    model = _segformer_from_transformers_config(config, repo_id)
    weights = download_hub(repo_id, ("model.safetensors", "pytorch_model.bin"), revision)
    load_checkpoint(model, weights, strict=True, verbose=False)
    model.source = {"hub": repo_id, "source": f"hf://{repo_id}", "licence": config.get("license")}
    _save_into_cache(model, folder)
    return model.to(map_location).eval()


def _segformer_from_transformers_config(config: dict, repo_id: str):
    from segkit.models.segformer import VARIANTS
    from segkit.models.zoo import build_model

    sizes, depths = list(config.get("hidden_sizes", [])), list(config.get("depths", []))
    variant = next(
        (
            v
            for v, d in VARIANTS.items()
            if list(d["encoder"]["embed_dims"]) == sizes and list(d["encoder"]["depths"]) == depths
        ),
        None,
    )
    if variant is None:
        raise CheckpointError(
            f"hf://{repo_id}: a SegFormer with hidden_sizes {sizes} and depths {depths} is not one of B0–B5"
        )
    id2label = config.get("id2label") or {}
    k = int(config.get("num_labels") or len(id2label) or 0)
    if not k:
        raise CheckpointError(f"hf://{repo_id}: config.json gives no num_labels / id2label")
    names = [str(id2label.get(str(i), id2label.get(i, f"class_{i}"))) for i in range(k)] if id2label else None
    return build_model(
        f"segformer-{variant}", k, decoder_dim=int(config.get("decoder_hidden_size", 256)), class_names=names
    )


def resolve_weights(spec: str | os.PathLike) -> Path:
    """A local weights file or folder for ``load_checkpoint``: a path as given, or a registry name's
    verified download (encoder-only ImageNet names included). Used by the config key ``pretrained:``."""
    path = Path(spec)
    if path.exists():
        return path
    if str(spec) in registry():
        return fetch(entry(str(spec)))
    if HUB_ID.match(str(spec)):
        return download_hub(str(spec), ("model.safetensors", "pytorch_model.bin"))
    raise NotFoundError(
        f"{spec}: neither a file, a folder, a registry name (segkit models --pretrained) nor a Hub repo id"
    )


def from_pretrained(spec: str | os.PathLike, map_location="cpu"):
    """A ready model (eval mode) from a ``save_pretrained`` folder, a registry name or a Hub repo id.

    See the module docstring for where files go. Raises ``FileNotFoundError`` (nothing of that
    name; the nearest registry names are suggested), :class:`DownloadError` (offline / network /
    hash mismatch, naming the URL and where to put the file by hand) or
    :class:`~segkit.errors.CheckpointError` (the weights do not fit).
    """
    from segkit.checkpoints import from_pretrained as from_folder

    path = Path(spec)
    if path.exists():
        return from_folder(path, map_location)
    return _remote(spec, map_location)


def load_model(spec: str | os.PathLike, map_location="cpu"):
    """:func:`from_pretrained`, plus training checkpoints (``.pth`` written by ``segkit train``): what the
    CLI takes wherever it wants a model."""
    from segkit.checkpoints import load_model as load_local

    if Path(spec).exists():
        return load_local(spec, map_location)
    return _remote(spec, map_location)


class UnknownSpecError(UnknownNameError, FileNotFoundError):
    """A model spec that is neither a file nor a name segkit knows, written as a name: a usage mistake (exit 2;
    the nearest names suggested), and still the ``FileNotFoundError`` that :func:`from_pretrained` documents."""


# what a checkpoint path looks like, when it is not there: a folder in it, or a weights / config suffix
_PATH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".onnx", ".json", ".yaml", ".yml")


def looks_like_path(spec) -> bool:
    """Whether ``spec`` is written as a file path (a separator or a weights file suffix) rather than a name."""
    text = str(spec)
    return os.sep in text or "/" in text or text.startswith(".") or Path(text).suffix.lower() in _PATH_SUFFIXES


def _remote(spec, map_location):
    text = str(spec)
    if text in registry():
        return load_registry_model(text, map_location)
    if HUB_ID.match(text) and not text.startswith((".", "/")):
        if Path(text).parent.is_dir():  # "work/final" with work/ here: a mistyped local path, not a Hub repo
            raise NotFoundError(f"{spec}: no such file or folder (in {Path(text).parent})")
        try:
            return load_hub_model(text, map_location)
        except DownloadError as e:
            raise DownloadError(f"{spec}: no local file or folder of that name; as a Hub repo id: {e}") from None
    raise unknown_spec_error(spec)


def unknown_spec_error(spec, zoo: bool = False) -> Exception:
    """The error for a model spec that is nothing segkit knows: :class:`~segkit.errors.NotFoundError` (exit 1) when
    it is written as a path, :class:`~segkit.errors.UnknownNameError` (exit 2) when it is a name; the nearest
    registry names are suggested (and zoo model names with ``zoo``, where a zoo name is accepted too)."""
    from segkit.models.zoo import MODELS
    from segkit.utils import nearest_names

    close = (nearest_names(str(spec), MODELS) if zoo else []) + nearest_names(str(spec), registry())
    hint = f" (did you mean {', '.join(close[:4])}?)" if close else ""
    also = "a zoo model, " if zoo else ""
    listed = "`segkit models` lists the zoo, `segkit models --pretrained` the registry"
    if looks_like_path(spec):
        return NotFoundError(f"{spec}: no such file or folder{hint}")
    arch = (
        " (it names a zoo architecture, whose weights come from a checkpoint or a registry name)"
        if not zoo and str(spec).lower() in MODELS
        else ""
    )
    return UnknownSpecError(
        f"{spec!r}: not {also}a checkpoint file or folder, a registry name or a Hub repo id (org/name){arch}{hint}; "
        f"{listed}"
    )


__all__ = [
    "cache_dir",
    "offline",
    "registry",
    "entry",
    "fetch",
    "download_url",
    "download_hub",
    "verify",
    "from_pretrained",
    "load_model",
    "load_registry_model",
    "load_hub_model",
    "resolve_weights",
    "DownloadError",
    "sha256_of",
]
