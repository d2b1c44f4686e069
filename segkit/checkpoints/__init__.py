"""Reading and loading checkpoints safely, in every official format.

* :func:`read_state_dict` reads a file or folder into a flat ``{name: tensor}`` dict without
  ever unpickling arbitrary objects (``torch.load(weights_only=True)``; safetensors).
* :func:`load_checkpoint` converts official key names to segkit's with the converter of the
  model's family (``Family.convert``: :func:`segkit.models.segformer.convert`,
  :func:`segkit.models.segnext.convert`, :func:`segkit.models.rsseg.convert.convert`) and loads
  them, strictly by default, returning a :class:`LoadReport`.
* :func:`from_pretrained` restores a model written by ``Segmentor.save_pretrained``.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from segkit.errors import CheckpointError, NotFoundError

WRAPPER_KEYS = ("state_dict", "model", "model_state", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Flat ``{key: tensor}`` from a checkpoint file or a Hugging Face ``save_pretrained`` folder.

    Accepts ``.safetensors``; ``.pth``/``.pt``/``.bin`` pickles that hold only tensors and plain
    containers (read with ``torch.load(weights_only=True)``); mmcv/segkit wrappers (``state_dict``,
    ``model`` …); a ``module.`` prefix from DataParallel/DDP. A folder must hold
    ``model.safetensors`` or ``pytorch_model.bin``.

    Raises:
        FileNotFoundError: the path does not exist, or a folder holds no weights file.
        CheckpointError: the file needs arbitrary unpickling (refused: it could run code), is
            corrupt, or holds no tensors.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "model.pth"):
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise NotFoundError(f"{path}: folder holds no model.safetensors or pytorch_model.bin")
    if not path.is_file():
        raise NotFoundError(f"{path}: no such checkpoint file")
    kind = file_kind(path)
    if kind == "safetensors" or path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if kind != "safetensors":
            raise CheckpointError(f"{path}: not a safetensors file ({_describe_start(path)})")
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({first})") from None
    return _unwrap(torch_load(path, kind), path)


def file_kind(path: Path) -> str | None:
    """The file's format from its first bytes: ``"zip"``, ``"pickle"`` (``torch.save``), ``"safetensors"``, ``None``."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return None


def _describe_start(path: Path) -> str:
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        head = f.read(12)
    return f"{size} bytes, starting with {head!r}"


def torch_load(path: Path, kind: str | None = None):
    """``torch.load(path, weights_only=True)`` with errors that name the file and say what is wrong.

    Raises :class:`CheckpointError`: not a PyTorch checkpoint at all, truncated / corrupt, or
    holding Python objects beyond tensors (refused: unpickling them could run code).
    """
    path = Path(path)
    kind = kind if kind is not None else file_kind(path)
    if kind not in ("zip", "pickle"):
        raise CheckpointError(
            f"{path}: not a checkpoint: neither a zip/pickle state dict (torch.save) nor "
            f"safetensors ({_describe_start(path)})"
        )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = (str(e).strip().splitlines() or [""])[0]
        detail = detail.split(" Please file an issue")[0][:200]
        raise CheckpointError(
            f"{path}: refused to load: besides tensors the file holds Python objects that only full unpickling "
            f"could restore, and unpickling can run code; segkit reads checkpoints weights-only. Re-save just the "
            f"weights where the file was made (torch.save(model.state_dict(), 'clean.pth')) or use a .safetensors "
            f"file. ({detail})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError, KeyError) as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({detail})") from None


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path}: holds no tensors (keys: {sorted(obj)[:10]})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did. ``dropped`` lists checkpoint keys discarded on purpose
    (unused ``conv_seg``, ImageNet classifier …) with the reason."""

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # 3-channel input kernels adapted to the model's in_channels

    def __str__(self) -> str:
        lines = [f"checkpoint {self.source} (format: {self.format}): {len(self.loaded)} tensors loaded"]
        for title, items in (
            ("missing (left as initialised)", self.missing),
            ("unexpected (ignored)", self.unexpected),
            ("dropped", self.dropped),
        ):
            if items:
                lines.append(f"  {title}: {len(items)}: " + ", ".join(items[:8]) + (" …" if len(items) > 8 else ""))
        for k, a, b in self.mismatched[:8]:
            lines.append(f"  shape mismatch (skipped): {k} checkpoint {list(a)} vs model {list(b)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _converter(model):
    """The checkpoint converter of ``model``'s family (its ``family`` attribute), or ``None``."""
    from segkit.models.zoo import family_of

    family = family_of(model)
    return None if family is None else family.convert


def load_checkpoint(model: torch.nn.Module, path: str | Path, strict: bool = True, verbose: bool = True) -> LoadReport:
    """Load a checkpoint of any supported format into ``model`` (a zoo ``Segmentor``).

    The format is detected from the key names (official NVlabs SegFormer, Hugging Face
    SegFormer, official / mmseg-1.x SegNeXt, ImageNet ``mit_b*`` / ``mscan_*`` encoders,
    mmseg-1.x SegFormer encoder, segkit's own). With ``strict=True`` (default) these are
    errors: a missing encoder key, a key the converter cannot place, a shape mismatch, or
    missing head keys when the checkpoint carries a head. Head keys missing from an
    encoder-only checkpoint are reported and left initialised. With ``strict=False`` whatever
    fits is loaded and the rest is reported. Prints the report when ``verbose``.

    Raises:
        CheckpointError: the file is unreadable/unsafe, is for another architecture or
            variant, or (strict) does not cover the model.
    """
    state = read_state_dict(path)
    convert = _converter(model)
    fmt, dropped, notes = "segkit", [], []
    if convert is not None:
        try:
            state, fmt, dropped, notes = convert(state, model)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from e
    report = LoadReport(source=str(path), format=fmt, dropped=list(dropped), notes=list(notes))
    own = model.state_dict()
    to_load = {}
    adapted = []
    for k, v in state.items():
        if k in own and _is_input_conv_mismatch(v, own[k], getattr(model, "in_channels", 3)):
            v = adapt_input_conv(v, own[k].shape[1])
            adapted.append(k)
        if k not in own:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(own[k].shape):
            report.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            to_load[k] = v
    report.missing = [k for k in own if k not in to_load and not k.endswith("num_batches_tracked")]
    report.loaded = sorted(to_load)
    if adapted:
        n = own[adapted[0]].shape[1]
        report.notes.append(
            f"{len(adapted)} input convolution(s) adapted from 3 to {n} channels ("
            + ("RGB kernel summed" if n == 1 else f"RGB kernel repeated and scaled by 3/{n}")
            + "): "
            + ", ".join(adapted)
        )
        report.adapted = adapted
    has_head = any(k.startswith("decode_head.") for k in state)
    if strict:
        problems = []
        missing_enc = [k for k in report.missing if not k.startswith("decode_head.")]
        missing_head = [k for k in report.missing if k.startswith("decode_head.")]
        if missing_enc:
            problems.append(f"{len(missing_enc)} encoder key(s) missing, e.g. {missing_enc[:3]}")
        if has_head and missing_head:
            problems.append(f"{len(missing_head)} head key(s) missing, e.g. {missing_head[:3]}")
        if report.unexpected:
            problems.append(f"{len(report.unexpected)} unexpected key(s), e.g. {report.unexpected[:3]}")
        if report.mismatched:
            k, a, b = report.mismatched[0]
            problems.append(
                f"{len(report.mismatched)} shape mismatch(es), e.g. {k}: checkpoint {list(a)} vs model "
                f"{list(b)} (wrong variant or num_classes?)"
            )
        if problems:
            raise CheckpointError(
                f"{path} does not fit {getattr(model, 'name', type(model).__name__)} "
                f"(format {fmt}): "
                + "; ".join(problems)
                + ". Pass strict=False (segkit convert --non-strict) to load what fits."
            )
    result = model.load_state_dict(to_load, strict=False)
    # A model's load hook may fill keys from loaded ones (RSSeg's local patch embedding is
    # initialised from the ViT's): those are loaded, not missing.
    still_missing = set(result.missing_keys)
    filled = [k for k in report.missing if k not in still_missing]
    if filled:
        report.missing = [k for k in report.missing if k in still_missing]
        report.loaded = sorted(set(report.loaded) | set(filled))
        report.notes.append(f"{len(filled)} key(s) initialised by the model from loaded ones: {', '.join(filled[:4])}")
    if not has_head and any(k.startswith("decode_head.") for k in report.missing):
        report.notes.append("encoder-only checkpoint: decode_head left randomly initialised")
    if verbose:
        print(report)
    return report


def _is_input_conv_mismatch(src: torch.Tensor, dst: torch.Tensor, in_channels: int) -> bool:
    """Whether ``src`` is a 3-channel convolution kernel ``(O, 3, k, k)`` where the model, built for
    ``in_channels != 3`` input channels, holds ``(O, in_channels, k, k)``."""
    return (
        in_channels != 3
        and src.ndim == 4
        and dst.ndim == 4
        and src.shape[1] == 3
        and dst.shape[1] == in_channels
        and src.shape[0] == dst.shape[0]
        and src.shape[2:] == dst.shape[2:]
    )


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A pretrained RGB convolution kernel ``(O, 3, k, k)`` for ``in_channels`` input channels — the rule of timm's
    ``adapt_input_conv`` (``timm/models/_manipulate.py``): for 1 channel the kernel summed over RGB (a gray
    image gives the response of an RGB image with three equal channels); for N > 1 the RGB kernel repeated
    ``ceil(N / 3)`` times along the input channels, cut to N and scaled by ``3 / N``, so that the response to
    inputs of the same scale keeps its magnitude. Returns a new tensor of the input's dtype.

    Raises :class:`~segkit.errors.UsageError` for a kernel without 3 input channels or ``in_channels < 1``.
    """
    import math

    from segkit.errors import UsageError

    if weight.ndim != 4 or weight.shape[1] != 3 or int(in_channels) < 1:
        raise UsageError(
            f"expected a (O, 3, k, k) kernel and in_channels >= 1, got {tuple(weight.shape)}, {in_channels}"
        )
    w = weight.float()
    if in_channels == 1:
        out = w.sum(dim=1, keepdim=True)
    else:
        out = w.repeat(1, math.ceil(in_channels / 3), 1, 1)[:, :in_channels] * (3.0 / in_channels)
    return out.to(weight.dtype)


def model_from_description(desc: dict):
    """A freshly built model (random weights) from a ``Segmentor.config()`` dict (``config.json`` of a
    ``save_pretrained`` folder, ``meta`` of a training checkpoint): its model name, class count,
    architecture switches and metadata."""
    from segkit.models.zoo import build_model

    return build_model(
        desc["model"],
        desc["num_classes"],
        **desc.get("arch", {}),
        class_names=desc.get("class_names"),
        palette=desc.get("palette"),
        ignore_index=desc.get("ignore_index", 255),
        mean=desc.get("mean"),
        std=desc.get("std"),
        loss_avg=desc.get("loss_avg", "valid"),
        task=desc.get("task"),
        threshold=desc.get("threshold"),
        mask_values=desc.get("mask_values"),
        in_channels=desc.get("in_channels"),
    )


def from_pretrained(directory: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild and load a model saved by ``Segmentor.save_pretrained`` (``config.json`` + ``model.safetensors``).

    Raises ``FileNotFoundError`` when either file is missing and ``CheckpointError`` when the
    config is not a segkit config or the weights do not match it exactly.
    """
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise NotFoundError(f"{directory}: no config.json (expected a folder written by save_pretrained)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != "segkit":
        raise CheckpointError(f"{cfg_path}: not a segkit config (format={cfg.get('format')!r})")
    model = model_from_description(cfg)
    state = read_state_dict(directory / "model.safetensors")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{directory}: weights do not match config {cfg['model']}: missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
    model.train_config = cfg.get("train_config")
    model.test_protocol = cfg.get("test_protocol")
    model.source = cfg.get("source")
    model.eval_results = cfg.get("eval_results")
    return model.to(map_location).eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """A ready-to-use model (eval mode) from any segkit artefact.

    Accepts a ``save_pretrained`` folder (or the ``model.safetensors`` inside it) or a training
    checkpoint ``.pth`` written by the trainer (it carries the model name, classes and palette; of
    a run with ``train.ema`` it gives the weight average). Official checkpoints carry no model name:
    build the model with ``build_model`` and use :func:`load_checkpoint`, or convert them once with
    ``segkit convert``.

    Raises ``FileNotFoundError`` / :class:`CheckpointError` with the path and the problem.
    """

    path = Path(path)
    if path.is_dir() or (path.suffix == ".safetensors" and (path.parent / "config.json").is_file()):
        return from_pretrained(path if path.is_dir() else path.parent, map_location)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such checkpoint file or folder")
    if file_kind(path) == "safetensors":
        raise CheckpointError(
            f"{path}: a bare .safetensors file has no model description; give the folder that "
            f"holds it with its config.json, or build the model and use segkit.load_checkpoint"
        )
    ck = torch_load(path)
    if not (isinstance(ck, dict) and ck.get("segkit_checkpoint") and "meta" in ck):
        raise CheckpointError(
            f"{path}: not a segkit training checkpoint (no model name inside). For an official "
            f"checkpoint run `segkit convert {path} OUT_DIR --model NAME` first."
        )
    meta = ck["meta"]
    model = model_from_description(meta)
    # a run with train.ema: the weight average is what its validation scored and final/ holds
    model.load_state_dict(ck["ema"]["weights"] if isinstance(ck.get("ema"), dict) else ck["model"])
    model.train_config = ck.get("config")
    return model.to(map_location).eval()
