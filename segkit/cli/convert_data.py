"""``segkit convert-data``: any dataset type (an annotation tool's export, a benchmark, a folder) written
out in segkit's split layout (index PNGs + ``meta.json`` + ``splits/<split>.txt``)."""

from __future__ import annotations

from segkit.cli.common import Formatter, examples, overwrite_arg
from segkit.errors import UsageError

NAME = "convert-data"

DESCRIPTION = """\
Write a dataset in segkit's split layout, what `type: split` reads: images/<split>/<stem><suffix>,
labels/<split>/<stem>.png (8-bit palette PNGs: value = class id after the dataset's label convention,
ignore kept, shown in the dataset's colours by an image viewer), splits/<split>.txt and meta.json.

SPEC is one of:
  a config (YAML file or shipped config name)   its data.train / data.val / data.test become the
                                                splits train / val / test
  a YAML file holding one dataset spec          {type: coco, annotations: ..., images: ...}
  a dataset spec inline (quote it)              '{type: coco, annotations: a.json, images: imgs}'
A single spec is written as one split: --split, default the spec's own split (else train).

Image files are hard-linked into the output when it is on the same file system as them (no space
used; editing one edits both), else copied (--copy: always copy); they keep their format, except
that the layout names one image suffix: images of mixed formats are written as PNG where they are
not PNG, and in-memory images (hf datasets, LabelMe's imageData) are encoded as PNG. Stems come from
the image file names (a shared stem gets _2, _3 ...). Everything is written into .<OUT>.partial-<pid>
beside OUT and renamed to OUT at the end; on an error it is removed (exit 1, one line naming the file)."""


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="write any dataset type (COCO, CVAT, LabelMe, YOLO, hf ...) in segkit's split layout",
        description=DESCRIPTION,
        epilog=examples(
            "segkit convert-data my.yaml --out data/mine                 # data.train/val/test → train/val/test",
            "segkit convert-data '{type: coco, annotations: exports/val.json, images: exports/images}' "
            "--split val --out data/mine",
            "segkit convert-data '{type: hf, path: exports/hf, split: validation}' --split val --out data/hf",
            "segkit convert-data camvid/segformer-b0_10min --split test --out camvid-test   # a shipped config",
        ),
    )
    s.add_argument("spec", metavar="SPEC", help="config file or name, dataset-spec YAML file, or inline spec")
    s.add_argument("--out", required=True, help="output folder (created; must not hold files)")
    s.add_argument(
        "--split",
        help="with a config: convert only this one of train / val / test; with a single spec: the split "
        "name to write it under (default: the spec's split, else train)",
    )
    s.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides: config keys (data.train.root=...) or, for a single spec, its keys (classes=[a,b])",
    )
    s.add_argument("--copy", action="store_true", help="copy the image files (default: hard-link where possible)")
    overwrite_arg(s)
    return s


def specs_of(args) -> dict:
    """``{split: dataset spec}`` from SPEC (module help), ``--split`` and ``--set``."""
    import yaml

    from segkit.config import apply_overrides, load_config, read_yaml, resolve_config_path

    text = args.spec
    if text.lstrip().startswith("{"):
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UsageError(f"SPEC {text!r}: not a YAML mapping ({str(e).splitlines()[0]})") from None
        where = "the inline spec"
    else:
        path = resolve_config_path(text)
        spec, where = read_yaml(path), str(path)
        if isinstance(spec, dict) and "data" in spec:
            data = load_config(path, args.set).data
            wanted = [args.split] if args.split else ["train", "val", "test"]
            for split in wanted:
                if split not in ("train", "val", "test"):
                    raise UsageError(f"--split {split}: a config has the splits train, val and test")
            specs = {split: getattr(data, split) for split in wanted if getattr(data, split)}
            if not specs:
                raise UsageError(f"{path}: no data.{' / data.'.join(wanted)} spec to convert")
            return specs
    if not isinstance(spec, dict) or "type" not in spec:
        raise UsageError(
            f"SPEC {where}: expected a config with a data: section or a dataset spec with a type: key, "
            f"e.g. '{{type: coco, annotations: a.json, images: imgs}}'"
        )
    spec = apply_overrides(dict(spec), args.set)
    own = spec.get("split")
    return {args.split or (own if isinstance(own, str) and own not in ("all", "") else "train"): spec}


def run(args) -> int:
    from pathlib import Path

    from segkit.data.convert import convert_to_split_layout

    specs = specs_of(args)
    out = convert_to_split_layout(specs, args.out, overwrite=args.overwrite, link=not args.copy, what="--out",
                                  log=print)  # fmt: skip
    first = next(iter(specs))
    print(f"wrote {out} (split layout); read it with {{type: split, root: {Path(out)}, split: {first}}}")
    return 0
