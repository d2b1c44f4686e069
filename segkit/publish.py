"""Publishing a model on the Hugging Face Hub (``segkit push``): the files, and their upload.

:func:`stage` writes what goes to the Hub into a folder: ``model.safetensors`` and ``config.json`` (as
``save_pretrained``), ``README.md`` (the model card with the Hub's metadata block,
:func:`segkit.models.card.card_metadata`) and, where the weights' licence asks for its text to travel with
them, ``LICENSE``. ``segkit push --dry-run DIR`` stops there; :func:`push` stages into a temporary folder and
uploads exactly that folder with ``huggingface_hub``
(``HfApi.upload_folder``, one commit), creating the repository (and the branch of ``revision``) when missing.

What the card says and where it comes from:

* **licence**: ``--license`` (a Hub identifier: ``apache-2.0``, ``mit``, ``cc-by-4.0``, ``other`` …); else the weights'
  own (a registry or Hub model records it); else the licence of the weights the run started from (the training
  config's ``pretrained:``, looked up in the registry). Weights derived from NVIDIA's SegFormer / MiT weights stay
  under NVIDIA's Source Code License (non-commercial): another ``--license`` is refused. With no licence known
  (a model trained from scratch), ``--license`` is required: segkit does not choose one for the user.
* **base_model**: the Hub id of the weights the run started from (``pretrained: nvidia/mit-b0``, or a registry name
  whose weights live on the Hub); registry weights fetched from a URL have no Hub id and are named in the card text.
* **model-index**: the test metrics of ``--metrics`` (``metrics.json`` of ``segkit eval --out``; split from its data
  set name, ``camvid/test`` → ``test``) with the test protocol they were measured with; else the run's last
  validation stored in the folder.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

from segkit.errors import DataError, NotFoundError, SegkitError, UsageError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class HubUploadError(SegkitError, OSError):
    """The Hub refused the upload or could not be reached (the message says which, naming the repository)."""


def base_weights(model) -> dict:
    """Where the run's starting weights came from: ``{"name", "hub_id", "licence", "source"}`` (values ``None`` where
    unknown) from the training config's ``pretrained:`` — a registry name (its entry's licence; its Hub repo as
    ``hub_id`` when it has one), a Hub id, or a file (nothing known). ``{}`` when the run started from scratch."""
    from segkit.hub import HUB_ID, registry

    name = ((model.train_config or {}).get("pretrained") or "").strip()
    if not name:
        return {}
    reg = registry()
    if name in reg:
        e = reg[name]
        return {"name": name, "hub_id": e.repo_id, "licence": e.licence, "source": e.source}
    for e in reg.values():  # a Hub id that is also a registry entry's repository (nvidia/mit-b0)
        if e.repo_id and e.repo_id == name:
            return {"name": name, "hub_id": name, "licence": e.licence, "source": e.source}
    if HUB_ID.match(name) and not Path(name).exists():
        return {"name": name, "hub_id": name, "licence": None, "source": f"hf://{name}"}
    return {"name": name, "hub_id": None, "licence": None, "source": name}


def _is_nvidia(text) -> bool:
    return "nvidia" in str(text or "").lower()


def resolve_licence(model, licence: str | None, what: str) -> tuple[str, str]:
    """``(licence text for the card, where it came from)``: ``licence`` (``--license``), else the weights' own, else
    the base weights'. Raises :class:`~segkit.errors.UsageError` when none is known, or when ``licence`` would
    relicense weights derived from NVIDIA's (non-commercial) ones."""
    own = (model.source or {}).get("licence")
    base = base_weights(model)
    inherited, origin = (own, "the weights") if own else (base.get("licence"), f"its base weights {base.get('name')}")
    if licence:
        if _is_nvidia(inherited) and not _is_nvidia(licence) and licence.lower() != "other":
            raise UsageError(
                f"--license {licence}: {what} derives from NVIDIA's SegFormer weights ({origin}), which are under the "
                "NVIDIA Source Code License (non-commercial use only) and cannot be published under another licence; "
                "leave --license out"
            )
        return licence, "--license"
    if inherited:
        return str(inherited), origin
    raise UsageError(
        f"{what}: no licence is recorded for these weights (trained from scratch or from a local file): give "
        "--license ID, a Hugging Face licence identifier (apache-2.0, mit, cc-by-4.0, … or other with --license-file)"
    )


def read_metrics(paths: Sequence[str | os.PathLike]) -> list[tuple[str, dict]]:
    """``[(split, metrics)]`` of ``metrics.json`` files written by ``segkit eval --out`` (a file, or the folder that
    holds it); the split from its data set name (``camvid/test`` → ``test``; ``test`` when it has none). Raises
    :class:`~segkit.errors.NotFoundError` / :class:`~segkit.errors.DataError` naming the file."""
    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / "metrics.json"
        if not path.is_file():
            raise NotFoundError(f"{path}: no such metrics file (segkit eval --out DIR writes DIR/metrics.json)")
        try:
            res = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a JSON metrics file ({e})") from None
        if not isinstance(res, dict) or not isinstance(res.get("mIoU"), (int, float)):
            raise DataError(f"{path}: holds no mIoU: not a metrics.json of segkit eval")
        dataset = str((res.get("settings") or {}).get("dataset") or "")
        out.append((dataset.split("/", 1)[1] if "/" in dataset else "test", res))
    return out


def _licence_file_text(text: str, fields: dict, base: dict, model_name: str) -> str:
    lines = [f"The weights of this repository ({model_name}) are distributed under: {text}", ""]
    if fields.get("license_link"):
        lines += [f"Full text of the licence: {fields['license_link']}", ""]
    elif fields.get("license") and fields["license"] != "other":
        lines += [f"Full text of the licence: https://spdx.org/licenses/{fields['license'].upper()}.html", ""]
    if base:
        lines += [f"They were fine-tuned from {base.get('name')} ({base.get('source')}).", ""]
    return "\n".join(lines)


def stage(
    model,
    directory: str | os.PathLike,
    *,
    repo_id: str,
    licence: str | None = None,
    licence_file: str | os.PathLike | None = None,
    metrics: Sequence[str | os.PathLike] = (),
    what: str | None = None,
) -> list[Path]:
    """Write the files of a Hub upload of ``model`` into ``directory`` (which must be empty or new; the caller
    claims it): weights, config, the card with the metadata block (``repo_id`` names its ``model-index``), and
    ``LICENSE`` where the licence requires its text beside the weights
    (:func:`~segkit.models.card.licence_requires_file`): the file ``licence_file`` when given (its text as is),
    else a notice naming the licence and the link to its full text. Returns the written paths, sorted. Raises
    :class:`~segkit.errors.UsageError` for a bad ``repo_id`` or
    licence (:func:`resolve_licence`)."""
    from segkit.models.card import licence_fields, licence_requires_file, model_card
    from segkit.utils import atomic_write_bytes

    if not REPO_ID.match(repo_id):
        raise UsageError(f"{repo_id!r}: a Hub repository id is ORG/NAME (letters, digits, '-', '_', '.')")
    what = what or model.name
    text, _ = resolve_licence(model, licence, what)
    fields = licence_fields(text)
    base = base_weights(model)
    results = read_metrics(metrics)
    if licence_file is not None and not Path(licence_file).is_file():
        raise NotFoundError(f"--license-file {licence_file}: no such file")
    directory = Path(directory)
    model.save_pretrained(directory)  # model.safetensors + config.json + a plain card, replaced below
    card = model_card(model, repo_id=repo_id, licence=text, base_model=base.get("hub_id"), results=results)
    if base and not base.get("hub_id"):
        card = card.replace("\n## Use\n", f"\nFine-tuned from `{base['name']}` ({base['source']}).\n\n## Use\n", 1)
    atomic_write_bytes(directory / "README.md", card.encode())
    if licence_file is not None:
        atomic_write_bytes(directory / "LICENSE", Path(licence_file).read_bytes())
    elif licence_requires_file(fields):
        atomic_write_bytes(directory / "LICENSE", _licence_file_text(text, fields, base, model.name).encode())
    return sorted(p for p in directory.iterdir() if p.is_file())


def push(
    model,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    dry_run: str | os.PathLike | None = None,
    licence: str | None = None,
    licence_file: str | os.PathLike | None = None,
    metrics: Sequence[str | os.PathLike] = (),
    commit_message: str | None = None,
    token: str | None = None,
    overwrite: bool = False,
    what: str | None = None,
) -> str | list[Path]:
    """Publish ``model`` as the Hub repository ``repo_id``: the files of :func:`stage`, uploaded in one commit.

    ``private``: a new repository is private (an existing one keeps its visibility). ``revision``: the branch to
    commit to (created from the default branch when missing). ``dry_run``: write the files into this folder
    (refused if it holds files, unless ``overwrite`` moves them aside) and return their paths; no network and no
    ``huggingface_hub`` needed. Otherwise returns the commit URL. The token is ``huggingface_hub``'s (``HF_TOKEN``,
    or ``hf auth login``) unless ``token`` is given. Raises :class:`HubUploadError` naming the repository when the
    Hub refuses or cannot be reached, :class:`~segkit.errors.MissingDependencyError` without ``huggingface_hub``."""
    import tempfile

    from segkit.utils import claim_output, require

    kw = dict(repo_id=repo_id, licence=licence, licence_file=licence_file, metrics=metrics, what=what)
    if dry_run is not None:
        claim_output(dry_run, overwrite=overwrite, what="--dry-run", kind="dir")
        return stage(model, dry_run, **kw)
    hub = require("huggingface_hub", "hub", "segkit push")
    with tempfile.TemporaryDirectory(prefix="segkit-push-") as tmp:
        stage(model, tmp, **kw)  # every check and file before the first request
        api = hub.HfApi(token=token)
        message = commit_message or f"Upload {model.name} with segkit"
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(folder_path=tmp, repo_id=repo_id, commit_message=message, revision=revision)
        except Exception as e:  # HTTP errors (401, 403, 404 …), connection errors
            where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
            raise HubUploadError(f"{where}: upload failed: {_why(e)}") from None
    return str(getattr(info, "commit_url", info))


def _why(e: Exception) -> str:
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    if status in (401, 403):
        return f"not authorised (HTTP {status}): log in with `hf auth login` or set HF_TOKEN ({first})"
    if status is None and any(k in type(e).__name__ for k in ("Connect", "Timeout", "Offline")):
        return f"the Hub cannot be reached ({type(e).__name__}: {first})"
    return f"{type(e).__name__}: {first}"


__all__ = ["push", "stage", "base_weights", "resolve_licence", "read_metrics", "HubUploadError", "REPO_ID"]
