"""``segkit pretrain``: ImageNet-style pretraining of an encoder (segkit/engine/pretrain.py)."""

from __future__ import annotations

import json
import os

from segkit.cli.common import Formatter, examples, positive_int
from segkit.errors import UsageError

NAME = "pretrain"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="ImageNet-style pretraining of an encoder (MSCAN / MiT classifier, DeiT recipe)",
        description="Classification pretraining with the DeiT recipe (segkit/engine/pretrain.py). "
        "DATA holds train/<class>/<image> and val/<class>/<image>. Writes the encoder in the official "
        "mscan_*/mit_* layout and in segkit's, both loadable as `pretrained:` of a segmentation config.",
        epilog=examples(
            "segkit pretrain mscan-t --data /data/imagenet --batch-size 128",
            "torchrun --nproc_per_node=8 -m segkit pretrain mit-b0 --data /data/imagenet",
            "segkit pretrain mscan-t --data crops --epochs 30 --input-size 96 --set rand_augment=null --work-dir w",
        ),
    )
    s.add_argument("model", nargs="?", help="mscan-t … mscan-l, mit-b0 … mit-b5 (or model: in --config)")
    s.add_argument("--data", help="folder with train/ and val/ class folders; may use ${SEGKIT_DATA}")
    s.add_argument("--config", help="YAML with PretrainConfig keys (segkit/engine/pretrain.py)")
    s.add_argument("--epochs", type=positive_int, help="training epochs (DeiT: 300, plus 10 cool-down)")
    s.add_argument("--batch-size", type=positive_int, help="images per process and step (DeiT: 1024 in total)")
    s.add_argument("--input-size", type=positive_int, help="crop side (224)")
    s.add_argument("--work-dir", help="output folder (default work_dirs/pretrain_<model>)")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="any other PretrainConfig key")
    s.add_argument("--resume", metavar="PATH|auto", help="continue from last.pth (auto: the work dir's)")
    s.add_argument("--overwrite", action="store_true", help="move an existing run in the work dir aside and start over")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    return s


def run(args) -> int:
    from segkit.config import apply_overrides, read_yaml, resolve_config_path
    from segkit.engine.pretrain import pretrain, pretrain_config

    data = dict(read_yaml(resolve_config_path(args.config))) if args.config else {}
    flags = {
        "model": args.model,
        "data": args.data,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "input_size": args.input_size,
        "work_dir": args.work_dir,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if "model" not in data:
        raise UsageError("name the encoder: segkit pretrain ENCODER --data FOLDER (mscan-t … mscan-l, mit-b0 … mit-b5)")
    cfg = _config(pretrain_config, apply_overrides(data, args.set), args)
    summary = pretrain(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))
    return 0


def _config(build, data: dict, args):
    """``build(data)``; a :class:`~segkit.errors.ConfigError` names where the bad value came from: the
    ``--set`` item that set it (or a key under it), else ``--config``'s file."""
    from segkit.config import _key_of, _related
    from segkit.errors import ConfigError

    set_keys = {item.split("=", 1)[0].strip(): item for item in args.set if "=" in item}
    try:
        return build(data)
    except ConfigError as e:
        key = getattr(e, "key", None) or _key_of(str(e))
        item = next((v for k, v in set_keys.items() if key and _related(key, k)), None)
        if item is not None:
            raise ConfigError(f"--set {item}: {e}") from None
        if args.config:
            raise ConfigError(f"{args.config}: {e}") from None
        raise
