"""Write the table of published weights (the registry of every model family) into docs/pretrained.md.

    python scripts/make_pretrained_doc.py

``tests/test_hub.py`` checks that the document lists every entry with its source.
"""

from __future__ import annotations

from pathlib import Path

from segkit.models.zoo import FAMILIES

DOC = Path(__file__).resolve().parents[1] / "docs" / "pretrained.md"
START, END = "<!-- pretrained:start -->", "<!-- pretrained:end -->"


def table() -> str:
    lines = []
    for family in FAMILIES.values():
        if not family.pretrained:
            continue
        lines += [
            f"### {family.paper}",
            "",
            "| name | model | data set | classes | test protocol | mIoU (ss) | "
            "source | SHA-256 | licence | trained by |",
            "|---|---|---|---:|---|---:|---|---|---|---|",
        ]
        for e in family.pretrained:
            p = e.protocol or {}
            proto = (
                "—"
                if not p
                else (
                    f"{p.get('scale', ('-', '-'))[0]}×{p.get('scale', ('-', '-'))[1]}, {p['mode']}"
                    + (f" {p['crop_size'][0]}/{p['stride'][0]}" if p.get("mode") == "slide" else "")
                )
            )
            src = (
                f"[`{e.repo_id}`](https://huggingface.co/{e.repo_id})"
                if e.repo_id
                else f"[`{e.url.rsplit('/', 1)[-1]}`]({e.url})"
            )
            arch = f" ({', '.join(f'{k}={v}' for k, v in e.arch.items())})" if e.arch else ""
            lines.append(
                f"| `{e.name}` | {e.model}{arch} | {e.dataset} | {e.num_classes or 'encoder'} | {proto} | "
                f"{e.miou if e.miou is not None else '—'} | {src} | {e.sha256 or 'Hub LFS'} | {e.licence} | "
                f"{e.trained_by} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{table()}{END}{tail}")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
