"""``segkit push``: publish a model folder on the Hugging Face Hub, with a model card the Hub reads (licence, pipeline
tag, data set, base model, test metrics and protocol); ``--dry-run DIR`` writes exactly the files it would upload."""

from __future__ import annotations

from segkit.cli.common import Formatter, examples, overwrite_arg
from segkit.errors import UsageError

NAME = "push"


def add_parser(sub):
    s = sub.add_parser(
        NAME,
        formatter_class=Formatter,
        help="publish a model on the Hugging Face Hub (card with licence, metrics, base model)",
        epilog=examples(
            "segkit push work_dirs/run/final me/segformer-b0-camvid --metrics work_dirs/run/test --dry-run hub_files",
            "segkit push work_dirs/run/final me/segformer-b0-camvid --metrics work_dirs/run/test --private",
        ),
    )
    s.add_argument("folder", metavar="FOLDER", help="a save_pretrained folder (a run's final/), or a checkpoint")
    s.add_argument("repo_id", metavar="ORG/NAME", help="the Hub repository (created when missing)")
    s.add_argument("--private", action="store_true", help="create the repository as private")
    s.add_argument("--revision", metavar="BRANCH", help="commit to this branch (created when missing)")
    s.add_argument(
        "--dry-run",
        metavar="DIR",
        help="write the files that would be uploaded into DIR and stop (no network)",
    )
    s.add_argument(
        "--metrics",
        nargs="+",
        default=[],
        metavar="FILE",
        help="metrics.json of `segkit eval --out` (or its folder): the card's model-index "
        "(default: the run's last validation)",
    )
    s.add_argument(
        "--license",
        metavar="ID",
        help="a Hub licence id (apache-2.0, mit, cc-by-4.0, other …); default: the weights' own, or their base "
        "weights'; required when neither is known",
    )
    s.add_argument("--license-file", metavar="FILE", help="uploaded as LICENSE (the licence's full text)")
    s.add_argument("--message", metavar="TEXT", help="commit message")
    overwrite_arg(s, what="--dry-run")
    return s


def run(args) -> int:
    from segkit.hub import load_model
    from segkit.publish import REPO_ID, push

    if not REPO_ID.match(args.repo_id):
        raise UsageError(f"{args.repo_id!r}: a Hub repository id is ORG/NAME (letters, digits, '-', '_', '.')")
    if args.overwrite and args.dry_run is None:
        raise UsageError("--overwrite is for --dry-run DIR (an upload adds a commit; it replaces nothing locally)")
    model = load_model(args.folder)
    out = push(
        model,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        dry_run=args.dry_run,
        licence=args.license,
        licence_file=args.license_file,
        metrics=args.metrics,
        commit_message=args.message,
        overwrite=args.overwrite,
        what=str(args.folder),
    )
    if args.dry_run is not None:
        for p in out:
            print(p)
    else:
        print(out)
    return 0
