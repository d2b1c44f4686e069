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

Hub revisions. ``revision=`` (``from_pretrained`` / ``load_model`` / ``Segmenter``; ``--revision`` in the
CLI) takes a branch, tag or commit of a Hub repo (default ``main``). ``huggingface_hub`` resolves it to a
commit — online with a request, offline through the cache's ``refs/<revision>`` — and a converted model is
cached under that commit, ``$SEGKIT_CACHE/hub/<org>--<name>/<commit>/``: a new commit upstream (or a moved
``refs/main``) is converted again, and a pinned revision is never served from another's cache.

Offline (``SEGKIT_OFFLINE=1``, ``HF_HUB_OFFLINE=1``, or no network): files already in the caches
are used; otherwise the error names the URL or repo and the path where the file can be put by hand.
Before asking the Hub, segkit checks within :data:`HUB_PROBE_TIMEOUT` seconds that its endpoint
(``HF_ENDPOINT``) accepts connections — ``huggingface_hub``'s own retries take 25–55 s to give up — and,
when it does not, uses the cached files of the revision or says at once that the Hub could not be
reached, naming the repo, the revision, the cache folder and the download command of the installed
``huggingface_hub`` (:class:`HubUnreachableError`).

Licences: loading weights whose licence restricts their use (NVIDIA's SegFormer and MiT weights are for
non-commercial use only) prints the licence on stderr, once per process and model, whether they come by
registry name or by Hub id (the registry's licence of that repo, else the model card's ``license`` /
``license_name``, else NVIDIA's for an ``nvidia/*`` repo).
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


class HubUnreachableError(DownloadError):
    """The Hugging Face Hub could not be reached and the files are not in the local cache."""


# seconds to wait for the Hub endpoint to accept a TCP connection before deciding it is unreachable
HUB_PROBE_TIMEOUT = float(os.environ.get("SEGKIT_HUB_PROBE_TIMEOUT", "3"))
# licences that need no notice (the rest is printed when such weights are loaded)
PERMISSIVE = ("apache", "mit", "bsd", "cc-by-4.0", "cc0")
_NOTICES: set[str] = set()


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


def hub_endpoint() -> str:
    """The Hub endpoint ``huggingface_hub`` talks to (``HF_ENDPOINT``, default https://huggingface.co)."""
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_unreachable_reason(timeout: float | None = None) -> str | None:
    """``None`` if the Hub endpoint accepts a TCP connection within ``timeout`` s (default
    :data:`HUB_PROBE_TIMEOUT`; name resolution included), else why not. Skipped (``None``) when a proxy is
    configured (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``): the connection then goes through it."""
    import socket
    import threading
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    url = urlparse(hub_endpoint())
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    result: list[str | None] = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout or HUB_PROBE_TIMEOUT).close()
            result.append(None)
        except OSError as e:
            result.append(str(e) or type(e).__name__)

    t = threading.Thread(target=probe, daemon=True)  # a thread: getaddrinfo has no timeout of its own
    t.start()
    t.join((timeout or HUB_PROBE_TIMEOUT) + 0.5)
    return result[0] if result else f"no answer within {timeout or HUB_PROBE_TIMEOUT:g} s"


def download_command(repo_id: str, revision: str | None = None) -> str:
    """The shell command of the installed ``huggingface_hub`` that downloads ``repo_id`` into its cache: ``hf
    download`` (huggingface_hub >= 0.34), ``huggingface-cli download`` (older), else the Python call."""
    import importlib.util

    rev = f" --revision {revision}" if revision else ""
    if importlib.util.find_spec("huggingface_hub.cli") is not None:
        return f"hf download {repo_id}{rev}"
    if importlib.util.find_spec("huggingface_hub.commands") is not None:
        return f"huggingface-cli download {repo_id}{rev}"
    args = f"{repo_id!r}" + (f", revision={revision!r}" if revision else "")
    return f'python -c "import huggingface_hub; huggingface_hub.snapshot_download({args})"'


def hub_cache_folder(repo_id: str) -> Path:
    """Where ``huggingface_hub`` keeps ``repo_id``: ``$HF_HUB_CACHE/models--<org>--<name>``."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def _unreachable(repo_id: str, revision: str | None, reason: str) -> HubUnreachableError:
    rev = revision or "main"
    folder = hub_cache_folder(repo_id)
    return HubUnreachableError(
        f"hf://{repo_id} (revision {rev}): the Hugging Face Hub at {hub_endpoint()} could not be reached "
        f"({reason}) and the files of this revision are not in the local cache. With network access, run "
        f"`{download_command(repo_id, revision)}` (then HF_HUB_OFFLINE=1 works), or put the files by hand in "
        f"{folder}/snapshots/<commit>/ with the commit id written in {folder}/refs/{rev}; "
        f"a folder of the files also loads by its path"
    )


def download_hub(repo_id: str, filenames: tuple[str, ...], revision: str | None = None) -> Path:
    """The first of ``filenames`` that ``repo_id`` holds at ``revision`` (branch, tag or commit; default
    ``main``), through ``huggingface_hub`` (its cache, its offline mode). The path lies in the cache's
    ``snapshots/<commit>/``. When the Hub cannot be reached (:func:`hub_unreachable_reason`), the cached files
    of the revision are used; without them :class:`HubUnreachableError` is raised at once."""
    from segkit.utils import require

    hub = require("huggingface_hub", "hub", "loading weights from the Hugging Face Hub")
    import logging

    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    local_only = offline()
    unreachable = None if local_only else hub_unreachable_reason()
    if unreachable is not None:
        local_only = True
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
                        f"hf://{repo_id}: no such repository (or revision {revision or 'main'}), or no access to it "
                        f"on the Hugging Face Hub"
                    ) from None
                problems.append(f"{filename}: {type(e).__name__}")
    finally:
        hub_log.setLevel(level)
    if unreachable is not None:
        raise _unreachable(repo_id, revision, unreachable)
    where = "the Hugging Face cache (offline mode)" if local_only else "the Hugging Face Hub"
    raise DownloadError(
        f"hf://{repo_id} (revision {revision or 'main'}): none of {list(filenames)} could be fetched from {where} "
        f"({'; '.join(problems)}); to work offline, download the repository once with network access "
        f"(`{download_command(repo_id, revision)}`) or point HF_HUB_CACHE at a cache that holds it"
    )


def licence_notice(name: str, licence: str | None) -> None:
    """Print ``licence`` on stderr for weights ``name`` when it restricts their use (not :data:`PERMISSIVE`), once
    per process and name."""
    if not licence or str(licence).lower().startswith(PERMISSIVE) or name in _NOTICES:
        return
    _NOTICES.add(name)
    print(f"{name}: licence of these weights: {licence}", file=sys.stderr)


def hub_licence(repo_id: str, config: dict, snapshot: Path | None) -> str | None:
    """The licence of a Hub repo's weights: the registry's for that repo, else its model card's (``license``,
    ``license_name``, ``license_link`` of ``README.md`` when it is in the snapshot), else ``config.json``'s
    ``license``, else NVIDIA's licence for an ``nvidia/*`` repo (its SegFormer and MiT weights)."""
    for e in registry().values():
        if e.repo_id == repo_id and e.licence:
            return e.licence
    card = snapshot / "README.md" if snapshot is not None else None
    if card is not None and card.is_file():
        meta = _card_metadata(card.read_text(errors="replace"))
        lic = meta.get("license_name") or meta.get("license")
        if lic and str(lic).lower() != "other":
            return str(lic) + (f" ({meta['license_link']})" if meta.get("license_link") else "")
    if config.get("license"):
        return str(config["license"])
    if repo_id.lower().startswith("nvidia/"):
        return next(
            (e.licence for e in registry().values() if e.repo_id and e.repo_id.startswith("nvidia/") and e.licence),
            "NVIDIA Source Code License: non-commercial use only",
        )
    return None


def _card_metadata(text: str) -> dict:
    """The YAML block at the top of a model card (``---`` … ``---``), or ``{}``."""
    import yaml

    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def fetch(e: Pretrained, progress: bool = True) -> Path:
    """The verified local weights file of a registry entry (downloaded on first use; licence printed then)."""
    first_time = not _marker(e).exists()
    licence_notice(e.name, e.licence)
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
        licence_notice(name, e.licence)
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
    """A model from a Hub repo at ``revision`` (branch, tag or commit; default ``main``): a segkit folder
    (``config.json`` with ``format: segkit``, read from the Hugging Face cache's snapshot) or a transformers
    SegFormer, converted once per commit into ``$SEGKIT_CACHE/hub/<org>--<name>/<commit>/``. The licence is
    printed when it restricts use (:func:`hub_licence`)."""
    from segkit.checkpoints import from_pretrained, load_checkpoint

    config_path = download_hub(repo_id, ("config.json",), revision)  # resolves the revision to a commit
    snapshot = config_path.parent
    commit = snapshot.name
    config = json.loads(config_path.read_text())
    licence = hub_licence(repo_id, config, snapshot)
    name = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    if config.get("format") == "segkit":
        download_hub(repo_id, ("model.safetensors",), commit)
        licence_notice(name, licence)
        return from_pretrained(snapshot, map_location)
    folder = cache_dir() / "hub" / repo_id.replace("/", "--") / commit
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        licence_notice(name, licence)
        return from_pretrained(folder, map_location)
    if config.get("model_type") != "segformer":
        raise CheckpointError(
            f"hf://{repo_id}: neither a segkit model nor a transformers SegFormer "
            f"(config.json model_type={config.get('model_type')!r})"
        )
    if not (snapshot / "README.md").is_file():  # the model card, for its licence (a repo may have none)
        try:
            download_hub(repo_id, ("README.md",), commit)
        except DownloadError:
            pass
        licence = hub_licence(repo_id, config, snapshot)
    licence_notice(name, licence)
    model = _segformer_from_transformers_config(config, repo_id)
    weights = download_hub(repo_id, ("model.safetensors", "pytorch_model.bin"), commit)
    load_checkpoint(model, weights, strict=True, verbose=False)
    model.source = {
        "hub": repo_id,
        "source": f"hf://{repo_id}",
        "revision": revision or "main",
        "commit": commit,
        "licence": licence,
    }
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


def from_pretrained(spec: str | os.PathLike, map_location="cpu", revision: str | None = None):
    """A ready model (eval mode) from a ``save_pretrained`` folder, a registry name or a Hub repo id.

    ``revision``: for a Hub repo id, the branch, tag or commit to load (default ``main``; module doc:
    the converted cache is keyed by the commit it resolves to); refused for anything else.
    See the module docstring for where files go. Raises ``FileNotFoundError`` (nothing of that
    name; the nearest registry names are suggested), :class:`DownloadError` (offline / network /
    hash mismatch, naming the URL and where to put the file by hand; :class:`HubUnreachableError`
    when the Hub cannot be reached), :class:`~segkit.errors.UsageError` (a ``revision`` for a local path
    or registry name) or :class:`~segkit.errors.CheckpointError` (the weights do not fit).
    """
    from segkit.checkpoints import from_pretrained as from_folder

    path = Path(spec)
    if path.exists():
        _no_revision(spec, revision, "a local folder")
        return from_folder(path, map_location)
    return _remote(spec, map_location, revision)


def load_model(spec: str | os.PathLike, map_location="cpu", revision: str | None = None):
    """:func:`from_pretrained`, plus training checkpoints (``.pth`` written by ``segkit train``): what the
    CLI takes wherever it wants a model. ``revision``: as :func:`from_pretrained` (Hub repo ids only)."""
    from segkit.checkpoints import load_model as load_local

    if Path(spec).exists():
        _no_revision(spec, revision, "a local file or folder")
        return load_local(spec, map_location)
    return _remote(spec, map_location, revision)


def _no_revision(spec, revision, what: str) -> None:
    if revision is not None:
        from segkit.errors import UsageError

        raise UsageError(f"revision {revision!r} is for Hub repo ids (org/name); {spec} is {what}")


class UnknownSpecError(UnknownNameError, FileNotFoundError):
    """A model spec that is neither a file nor a name segkit knows, written as a name: a usage mistake (exit 2;
    the nearest names suggested), and still the ``FileNotFoundError`` that :func:`from_pretrained` documents."""


# what a checkpoint path looks like, when it is not there: a folder in it, or a weights / config suffix
_PATH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".onnx", ".json", ".yaml", ".yml")


def looks_like_path(spec) -> bool:
    """Whether ``spec`` is written as a file path (a separator or a weights file suffix) rather than a name."""
    text = str(spec)
    return os.sep in text or "/" in text or text.startswith(".") or Path(text).suffix.lower() in _PATH_SUFFIXES


def _remote(spec, map_location, revision: str | None = None):
    text = str(spec)
    if text in registry():
        _no_revision(spec, revision, "a registry name (its weights are pinned by the registry)")
        return load_registry_model(text, map_location)
    if HUB_ID.match(text) and not text.startswith((".", "/")):
        if Path(text).parent.is_dir():  # "work/final" with work/ here: a mistyped local path, not a Hub repo
            raise NotFoundError(f"{spec}: no such file or folder (in {Path(text).parent})")
        try:
            return load_hub_model(text, map_location, revision)
        except HubUnreachableError:
            raise
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
    "HubUnreachableError",
    "download_command",
    "hub_licence",
    "licence_notice",
    "sha256_of",
]
