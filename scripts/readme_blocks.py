#!/usr/bin/env python3
"""Split README.md into what scripts/test-readme.sh runs (standard library only).

    readme_blocks.py README.md OUTDIR

Writes OUTDIR/plan (one step a line, tab-separated, in README order) and
OUTDIR/block-N (the text of code block N). Steps:

    gateways  NAME=ADDR ...        the gateways the README's example uses
    section   TITLE                a "## " heading: background blocks stop here
    run       N  DIRECTIVES...     an sh/bash block to run (see test-readme.sh)
    file      N  GATEWAY  PATH     a conf block whose first line is "# GATEWAY: PATH"
    check     NAME                 a check of test-readme.sh's own, at this point

The conventions are documented at the top of scripts/test-readme.sh. Any
mistake in them (unknown directive, a directive not followed by a code
block, a code block without a language) is an error: exit 2.
"""
import os
import re
import shlex
import sys

RUN_LANGS = {"sh", "bash"}
BLOCK_DIRECTIVES = {"skip", "setup", "background"}
BLOCK_KEYS = {"on", "wait-port", "wait-for", "retry", "timeout"}
MARKER = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
FILE_MARKER = re.compile(r"^#\s*([A-Za-z0-9_-]+):\s*(/\S+)\s*$")


def fail(line_no, msg):
    sys.stderr.write("README.md:%d: %s\n" % (line_no, msg))
    sys.exit(2)


def main():
    readme, out = sys.argv[1], sys.argv[2]
    lines = open(readme, encoding="utf-8").read().split("\n")
    plan = []
    pending = None  # (line number, directive words) waiting for its block
    n = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        m = MARKER.match(line)
        if m:
            words = shlex.split(m.group(1))
            if not words:
                fail(i + 1, "empty readme-test comment")
            if words[0] == "gateways":
                plan.append(["gateways"] + words[1:])
            elif words[0] == "check":
                plan.append(["check"] + words[1:])
            else:
                if words[0] in ("skip",):
                    words = ["skip"]  # the rest is the reason, for readers
                for w in words:
                    key = w.split("=", 1)[0]
                    if w not in BLOCK_DIRECTIVES and key not in BLOCK_KEYS:
                        fail(i + 1, "unknown readme-test directive %r" % w)
                pending = (i + 1, words)
            i += 1
            continue
        if line.startswith("## "):
            plan.append(["section", line[3:].strip()])
        if line.startswith("```"):
            lang = line[3:].strip()
            start = i + 1
            j = start
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if j == len(lines):
                fail(i + 1, "code block never closed")
            body = lines[start:j]
            if not lang:
                fail(i + 1, "code block without a language (sh runs; text, console, conf do not)")
            n += 1
            directives = []
            if pending is not None:
                directives = pending[1]
                pending = None
            if lang in RUN_LANGS:
                with open(os.path.join(out, "block-%d" % n), "w", encoding="utf-8") as f:
                    f.write("\n".join(body) + "\n")
                plan.append(["run", str(n), "line=%d" % (i + 1)] + directives)
            elif directives:
                fail(i + 1, "readme-test directives on a %r block, which never runs" % lang)
            elif lang == "conf" and body and FILE_MARKER.match(body[0]):
                gw, path = FILE_MARKER.match(body[0]).groups()
                with open(os.path.join(out, "block-%d" % n), "w", encoding="utf-8") as f:
                    f.write("\n".join(body) + "\n")
                plan.append(["file", str(n), gw, path])
            i = j + 1
            continue
        if pending is not None and line.strip():
            fail(pending[0], "a readme-test comment must come right before its code block")
        i += 1
    with open(os.path.join(out, "plan"), "w", encoding="utf-8") as f:
        for step in plan:
            if any("\t" in w or "\n" in w for w in step):
                fail(0, "tab or newline in a directive: %r" % step)
            f.write("\t".join(step) + "\n")


if __name__ == "__main__":
    main()
