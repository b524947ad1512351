"""The table layer the renderers share: a Markdown table from a header and rows of cells."""

from __future__ import annotations


def markdown_table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """The lines of a Markdown table.

    Args:
        header: Column titles.
        rows: Cells, already formatted, one list per row.
        align: One letter a column, `l` (left) or `r` (right); default: the first column left,
            the others right.
    """
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return [
        "| " + " | ".join(header) + " |",
        rule,
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
