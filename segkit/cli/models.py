"""``segkit models``: the zoo with parameter counts, or the published weights (``--pretrained``).

The counts come from each family's ``param_counts`` table (:func:`segkit.models.zoo.parameter_count`),
not from building the models: building the 37 models, even on the meta device, takes seconds.
``tests/test_cli.py`` checks the tables against meta-device builds of every model; a model missing
from them (a family added with ``segkit.add_family``) is built."""

from __future__ import annotations

from segkit.cli.common import Formatter, examples, positive_int

NAME = "models"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="list models with parameter counts",
        epilog=examples("segkit models --filter segnext --num-classes 19", "segkit models --pretrained"),
    )
    s.add_argument("--num-classes", type=positive_int, default=150, help="classes of the heads counted")
    s.add_argument("--filter", default="", help="only names containing this text")
    s.add_argument("--pretrained", action="store_true", help="list the published weights (the registry) instead")
    return s


def run(args) -> int:
    from segkit.models.zoo import FAMILIES, PRETRAINED, parameter_count

    if args.pretrained:
        print(f"{'name':<30}{'model':<16}{'dataset':<12}{'classes':>8}{'mIoU':>7}  source / licence")
        if args.filter and not any(args.filter in e.name for e in PRETRAINED.values()):
            _no_match(args.filter, PRETRAINED, "registry name")
        for e in PRETRAINED.values():
            if args.filter and args.filter not in e.name:
                continue
            miou = f"{e.miou:.2f}" if e.miou is not None else "-"
            k = e.num_classes or "encoder"
            print(f"{e.name:<30}{e.model:<16}{e.dataset:<12}{k:>8}{miou:>7}  {e.source}\n{'':<73}{e.licence}")
        return 0
    rows = [
        (name, family.name, f"{parameter_count(name, args.num_classes):,}")
        for family in FAMILIES.values()
        for name in family.models
        if not args.filter or args.filter in name
    ]
    if not rows:
        _no_match(args.filter, [n for f in FAMILIES.values() for n in f.models], "model name")
    header = ("model", "family", f"params ({args.num_classes} classes)")
    width = [max(len(row[i]) for row in (header, *rows)) for i in range(3)]
    for row in (header, *rows):  # columns as wide as their longest entry, two spaces apart
        print(f"{row[0]:<{width[0]}}  {row[1]:<{width[1]}}  {row[2]:>{width[2]}}")
    return 0


def _no_match(text: str, names, what: str) -> None:
    """One line on stderr when ``--filter`` leaves nothing (the empty table alone would say nothing)."""
    import sys

    from segkit.utils import suggest

    print(f"segkit models: no {what} contains {text!r}{suggest(text, names)}", file=sys.stderr)
