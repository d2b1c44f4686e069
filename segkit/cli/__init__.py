"""The ``segkit`` command line: one sub-command per Python API entry point.

    segkit models [--pretrained]          list the zoo with parameter counts
    segkit flops MODEL --shape H W        GFLOPs (multiply-adds) and parameters
    segkit train CONFIG [--set k=v ...] [--resume PATH|auto]
    segkit eval CKPT --data ROOT [--split test] [--mode whole|slide] [--crop H W --stride H W] [--scales ... --flip]
    segkit predict CKPT IMAGE_OR_DIR --out DIR
    segkit check-data ROOT [--split train]  (or --config CONFIG)
    segkit convert-data CONFIG_OR_SPEC --out DIR [--split NAME] [--set k=v ...]   (any dataset → split layout)
    segkit convert SRC DST --model NAME [--num-classes K]
    segkit benchmark MODEL_OR_CKPT --shape H W [--batch B] [--mode whole|slide] [--device auto] [--amp bf16|fp16]
    segkit robustness CKPT --data ROOT [--corruptions ...] [--severities 1 2 3 4 5] [--seed 0] [--out DIR]
    segkit export CKPT --format onnx [--shape H W] [--dynamic] [--opset 17] [--check IMAGE] --out model.onnx
    segkit predict --onnx model.onnx IMAGE_OR_DIR --out DIR   (onnxruntime, no PyTorch needed)
    segkit analyze {layers,erf,features,attention,gradcam,sizes} MODEL ... --out DIR
    segkit pretrain ENCODER --data FOLDER [--epochs N] [--set k=v ...] [--resume auto]
    segkit serve MODEL [--host 127.0.0.1] [--port 8000] [--max-batch 8] [--api-key KEY]   (HTTP API + web page)
    segkit push FOLDER ORG/NAME [--private] [--revision BRANCH] [--metrics metrics.json] [--dry-run DIR]

Every sub-command is a thin wrapper: the work is done by the functions it calls. Exit status, the
same in every sub-command (:mod:`segkit.errors`): 0 on success, 1 when the data, a file, a
checkpoint, the environment (device, memory, disk) or the run fails (one line naming the file and
the problem, no traceback; ``SEGKIT_DEBUG=1`` shows it), 2 for a usage mistake (bad flags or
values, an unknown model), 130 for Ctrl-C.

Layout: one module per command, holding its options, its example and its work together:

    NAME             the command's name (``segkit NAME``)
    add_parser(sub)  adds the command's parser to the sub-parsers ``sub`` and returns it
    run(args)        does the work and returns the exit status; heavy imports (torch, models) go here,
                     so that ``segkit --help`` stays fast

A module is named after its command, ``-`` written ``_`` (``check_data.py`` for ``check-data``),
except ``eval_.py`` for ``eval`` (not to shadow the builtin). ``common.py`` holds what several
commands share: the help formatter and examples, ``--device`` / ``--amp``, the test-protocol options.
Adding a command = one new module + its line in ``COMMANDS`` below, whose order is the order of
``segkit --help``. This module holds only the dispatch: ``build_parser`` and ``main``.
"""

from __future__ import annotations

import argparse
import os
import sys

from segkit.cli import (
    analyze,
    benchmark,
    check_data,
    convert,
    convert_data,
    eval_,
    export,
    flops,
    models,
    predict,
    pretrain,
    push,
    robustness,
    serve,
    train,
)
from segkit.cli.common import Formatter
from segkit.errors import SegkitError, UsageError
from segkit.utils import no_space_error

COMMANDS = (
    models,
    flops,
    train,
    eval_,
    predict,
    check_data,
    convert_data,
    convert,
    benchmark,
    robustness,
    export,
    analyze,
    pretrain,
    serve,
    push,
)


def build_parser() -> argparse.ArgumentParser:
    from segkit import __version__

    p = argparse.ArgumentParser(
        prog="segkit",
        formatter_class=Formatter,
        description="Semantic segmentation with SegNeXt, SegFormer and RSSeg.",
        epilog="Run `segkit COMMAND -h` for a command's options and an example.",
    )
    p.add_argument("--version", action="version", version=f"segkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(fn=command.run)
    return p


def _message(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    text = str(e) or type(e).__name__
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        # an error raised in a DataLoader worker arrives with the worker's traceback in its message:
        # keep its last line, "segkit.errors.DataError: <file>: <problem>", without the type
        last = lines[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def _plain_warnings(command: str) -> None:
    """segkit's own warnings as one line ``segkit <command>: warning: …`` (not Python's file:line form);
    warnings of other packages, and all of them under ``SEGKIT_DEBUG=1``, keep the default format."""
    import warnings

    default = warnings.showwarning
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the segkit package

    def show(message, category, filename, lineno, file=None, line=None):
        if os.environ.get("SEGKIT_DEBUG") or not os.path.abspath(filename).startswith(here):
            return default(message, category, filename, lineno, file, line)
        print(f"segkit {command}: warning: {message}", file=sys.stderr if file is None else file)

    warnings.showwarning = show


def _error(command: str, text: str) -> None:
    print(f"segkit {command}: error: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; the exit status follows one policy (segkit.errors): 0 success, 1 bad data, file or
    environment (a failed run, out of memory, no space left), 2 a usage mistake; 130 Ctrl-C."""
    args = build_parser().parse_args(argv)
    from segkit.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # glibc thresholds for large tensors; SEGKIT_MALLOC_TUNING=0 disables
    _plain_warnings(args.command)
    debug = bool(os.environ.get("SEGKIT_DEBUG"))
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UsageError as e:
        if debug:
            raise
        _error(args.command, str(e))
        return 2
    except SegkitError as e:
        if debug:
            raise
        _error(args.command, _message(e))
        return 1
    except MemoryError as e:
        if debug:
            raise
        _error(args.command, f"out of memory{f' ({e})' if str(e) else ''}: use a smaller input, batch or model")
        return 1
    except (ImportError, OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        if debug:
            raise
        full = no_space_error(e)
        if full is not None:
            where = f" writing {full.filename}" if full.filename else ""
            _error(args.command, f"no space left on device{where} ({_message(e).splitlines()[0][:200]})")
        else:
            _error(args.command, _message(e))
        return 1
    except Exception as e:  # a bug: one line that says so; SEGKIT_DEBUG=1 shows the traceback
        if debug:
            raise
        _error(
            args.command,
            f"internal error, please report it (run with SEGKIT_DEBUG=1 for the traceback): {type(e).__name__}: {e}",
        )
        return 1
    finally:
        _drop_process_group()


def _drop_process_group() -> None:
    """A ``torchrun`` rank that stops on an error (or a signal) destroys its process group before the interpreter
    exits: left to interpreter finalisation, gloo's worker threads can abort the process (SIGABRT, "terminate
    called without an active exception"; pytorch/pytorch#190489) and hide the exit status. A finished run has
    already destroyed it (:func:`segkit.engine.runs.end_distributed`)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["COMMANDS", "build_parser", "main"]
