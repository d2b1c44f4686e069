"""What several commands share, defined once: the help formatter and the examples epilog, the
``--device`` / ``--amp`` helpers, the ``H W`` size option, ``--overwrite`` (the output policy), and
the test-protocol options (eval, robustness, analyze sizes; predict takes the overrides) with how
they combine with a checkpoint's protocol. Cheap to import: PyTorch and the data modules are
imported inside the functions."""

from __future__ import annotations

import argparse

from segkit.errors import UsageError

AMP_HELP = "autocast dtype for the network (bf16: CPUs with avx512_bf16/amx_bf16, or GPUs; fp16: CUDA)"
DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with defaults shown (where there is one) and examples kept as written."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], "") or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def examples(*lines: str) -> str:
    """The epilog of a command's help: ``example:`` and the command lines, indented."""
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def device(name: str):
    """``--device``: :func:`segkit.runtime.resolve_device` (``auto`` → CUDA when available, else CPU; ``cpu``,
    ``cuda``, ``cuda:N``); a usage error (2) for another name, a :class:`~segkit.errors.DeviceError` (1) for
    CUDA on a machine without it."""
    from segkit.runtime import resolve_device

    return resolve_device(name, what="--device")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--max-images 0`` or ``-1`` is a usage error, exit 2)."""
    return _int_at_least(text, 1)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a test scale ratio)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def hw(s, name: str, help: str, default=None) -> None:
    """An ``H W`` option (two positive integers)."""
    s.add_argument(name, type=positive_int, nargs=2, metavar=("H", "W"), default=default, help=help)


def protocol_overrides(s) -> None:
    """Options that override a checkpoint's test protocol, and the device (eval, robustness, predict)."""
    hw(s, "--crop", "slide window (default: the protocol's, else the training crop)")
    hw(s, "--stride", "slide stride (default: the protocol's, else the crop)")
    s.add_argument(
        "--scale",
        type=int,
        nargs="+",
        metavar="PX",
        help="test resize LONG SHORT (keep ratio; default: the protocol's); 0 = no resize",
    )
    s.add_argument("--device", default="auto", help=DEVICE_HELP)


def revision_arg(s) -> None:
    """``--revision``: the branch, tag or commit of a Hub repo id (:func:`segkit.hub.load_model`)."""
    s.add_argument(
        "--revision",
        metavar="REV",
        help="for a Hub repo id: branch, tag or commit to load (default main; converted once per commit)",
    )


def eval_protocol_args(s) -> None:
    """The data to evaluate on and the test protocol (eval, robustness, analyze sizes)."""
    s.add_argument(
        "--data",
        help="dataset root (default: the data.test / data.val of the checkpoint's training "
        "config); may use ${SEGKIT_DATA}",
    )
    s.add_argument(
        "--data-type",
        default="split",
        help="dataset layout: split, folder, ade20k, cityscapes, voc, "
        "pascal_context, coco_stuff164k, coco_stuff10k, isaid",
    )
    s.add_argument("--split", default="test", help="split of --data to evaluate")
    s.add_argument(
        "--config",
        help="YAML config (or shipped config name) whose data.test / test protocol to use instead of the checkpoint's",
    )
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for --config")
    s.add_argument("--mode", choices=["whole", "slide"], help="inference mode (default: the checkpoint's protocol)")
    protocol_overrides(s)
    s.add_argument("--max-images", type=positive_int, help="evaluate only the first N images (N >= 1)")


ABSENT_HELP = (
    "classes absent from the ground truth: union = mmseg's rule, the papers' (IoU 0 if predicted, "
    "left out only if 0/0); gt = left out whenever absent (docs/protocols.md)"
)


def overwrite_arg(s, what: str = "--out", kind: str = "dir") -> None:
    """``--overwrite``: the output policy (:func:`segkit.utils.claim_output`): an output that already holds
    results is refused (exit 2) unless this flag moves it aside first."""
    if kind == "dir":
        meta = what.lstrip("-").upper()
        text = f"if {what} already holds files, move them to {meta}.prev-<time> first"
    else:
        text = f"if the {what} file exists, move it to <stem>.prev-<time><suffix> first"
    s.add_argument("--overwrite", action="store_true", help=f"{text} (default: refuse, exit 2)")


def claim_out(args, path, what: str = "--out", kind: str = "dir"):
    """:func:`segkit.utils.claim_output` of ``path`` with the command's ``--overwrite``; before any work."""
    from segkit.utils import claim_output

    return claim_output(path, overwrite=getattr(args, "overwrite", False), what=what, kind=kind)


def absent_arg(s) -> None:
    """``--absent {union,gt}``: the rule for classes absent from the ground truth (eval, robustness)."""
    s.add_argument("--absent", choices=["union", "gt"], default="union", help=ABSENT_HELP)


def protocol_source(args, model) -> str:
    """Where the protocol of ``protocol_and_spec`` came from, for the ``test protocol:`` line."""
    from segkit.data.protocol import TestProtocol

    if getattr(args, "config", None):
        return f"from {args.config}"
    return {"stored": "stored with the model", "training config": "from the model's training config"}.get(
        TestProtocol.origin(model), "segkit's default"
    )


def default_protocol_note(args, model, what: str) -> str | None:
    """One line when ``model`` stores no test protocol and the command line sets none: which one is
    applied (segkit's default, the papers' ADE20K protocol) and how to change it; else ``None``."""
    from segkit.data.protocol import DEFAULT_TEST_SCALE, TestProtocol

    if getattr(args, "config", None) or getattr(args, "scale", None) is not None or TestProtocol.origin(model):
        return None
    long, short = DEFAULT_TEST_SCALE
    return (
        f"{what} stores no test protocol: applying segkit's default (the papers' ADE20K protocol: resize "
        f"keep-ratio {long}x{short}, whole image), which may rescale your images a lot; set yours with "
        f"--scale LONG SHORT (0 = no resize), --mode / --crop / --stride, or --config CONFIG"
    )


def protocol_and_spec(args, model):
    """The model's test protocol with the command-line overrides, and the dataset spec to evaluate on."""
    import dataclasses

    from segkit.config import load_config
    from segkit.data.protocol import TestProtocol

    cfg = load_config(args.config, args.set).to_dict() if args.config else None
    protocol = TestProtocol.from_config(cfg) if cfg is not None else TestProtocol.of(model)
    if args.scale is not None:
        protocol = dataclasses.replace(protocol, scale=None if args.scale in ([0], [0, 0]) else tuple(args.scale))
    protocol = protocol.replace(
        mode=args.mode,
        crop_size=args.crop,
        stride=args.stride,
        scales=getattr(args, "scales", None),
        flip=True if getattr(args, "flip", False) else None,
    )
    if args.data:
        spec = {"type": args.data_type, "root": args.data, "split": args.split}
    else:
        data = (cfg or getattr(model, "train_config", None) or {}).get("data") or {}
        spec = data.get("test") or data.get("val")
        if spec is None:
            raise UsageError("give --data ROOT (and --split), or a --config with data.test")
    return protocol, spec
