#!/usr/bin/env python3
"""Replace a generated section of a Markdown file with standard input.

    scripts/docs-section.py FILE NAME < content

The section sits between the lines
    <!-- generated: NAME (begin) -->
    <!-- generated: NAME (end) -->
and is appended at the end of FILE (under its markers) if they are not there yet.
Everything outside the markers is left as it is, so hand-written analysis and generated
figures live side by side and a rerun replaces only the figures.
"""
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path, name = sys.argv[1], sys.argv[2]
    begin = f"<!-- generated: {name} (begin) -->"
    end = f"<!-- generated: {name} (end) -->"
    content = sys.stdin.read().rstrip("\n")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    block = f"{begin}\n{content}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
