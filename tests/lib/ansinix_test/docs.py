"""The code blocks of the user documentation, and what runs them.

Every fenced block of the documents in DOCS carries a marker on the line before it that says how the test
suite runs it, so that what the docs show is what the tests run:

    <!-- doc-test: file examples/guide/flake.nix -->     the block is that file, byte for byte (a test uses it)
    <!-- doc-test: excerpt examples/ansible.cfg -->      the block is a verbatim part of that file
    <!-- doc-test: run guide -->                         tests/integration/test_docs.py runs these commands in
                                                          its scenario `guide`
    <!-- doc-test: illustration -->                      shown to explain, not to be typed as is (a fragment, a
                                                          placeholder such as /nix/store/...); nothing runs it

Every Markdown file under docs/ and every README is checked: a block without a marker fails the unit test.

tests/unit/test_doc_blocks.py checks the markers; the integration tests read the blocks from here, so a command
changed in the docs is the command the tests run.
"""
import collections
import os
import re
import shlex

from ansinix_test import REPO_ROOT


def documents():
    """Every README of the repository (roles' too) and every Markdown file under docs/, relative paths."""
    found = []
    for top, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("tests", "bench", "node_modules"))
        rel = os.path.relpath(top, REPO_ROOT)
        for name in sorted(files):
            path = name if rel == "." else os.path.join(rel, name)
            if name == "README.md" or (path.startswith("docs" + os.sep) and name.endswith(".md")):
                found.append(path.replace(os.sep, "/"))
    return found


# The documents whose blocks are checked, all of each.
DOCS = dict.fromkeys(documents())
KINDS = ("file", "excerpt", "run", "illustration")
# The scenarios that run `run` blocks: tests/integration/test_docs.py's, the demo (tests/integration/test_demo.py)
# and ci, the commands .ci/run runs (tests/unit/test_doc_blocks.py checks that it does).
SCENARIOS = ("install", "quickstart", "guide", "fleet", "inventory", "demo", "bootstrap", "ci")

Block = collections.namedtuple("Block", "doc line lang text kind arg")

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARKER = re.compile(r"^<!-- doc-test: (\S+)(?: (\S+))? -->$")


class DocError(Exception):
    """A document's code blocks do not follow the rules above."""


def blocks(doc):
    """The fenced blocks of one document (path relative to the repository)."""
    with open(os.path.join(REPO_ROOT, doc), encoding="utf-8") as f:
        lines = f.read().split("\n")
    found, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, lang, start = fence.group(1), fence.group(2), i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise DocError("%s:%d: a code block that never ends" % (doc, start + 1))
        text = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[start + 1:end]) + "\n"
        i = end + 1
        previous = lines[start - 1].strip() if start > 0 else ""
        marker = _MARKER.match(previous)
        if not marker:
            raise DocError("%s:%d: a code block without a marker; put <!-- doc-test: file|excerpt|run ... --> on the "
                           "line before it (see tests/lib/ansinix_test/docs.py)" % (doc, start + 1))
        found.append(Block(doc, start + 1, lang, text, marker.group(1), marker.group(2)))
    return found


def all_blocks():
    return [b for doc in DOCS for b in blocks(doc)]


def run_blocks(scenario):
    """The `run` blocks of a scenario, in the order of DOCS and of the text."""
    if scenario not in SCENARIOS:
        raise DocError("unknown scenario %r; the scenarios are %s" % (scenario, ", ".join(SCENARIOS)))
    return [b for b in all_blocks() if b.kind == "run" and b.arg == scenario]


def commands(block):
    """The command lines of a shell block, without comments and blank lines."""
    out = []
    for line in block.text.split("\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def check(block):
    """None if the block is what its marker says, else a one-line reason."""
    where = "%s:%d" % (block.doc, block.line)
    if block.kind not in KINDS:
        return "%s: unknown marker kind %r (one of %s)" % (where, block.kind, ", ".join(KINDS))
    if block.kind == "illustration":
        return "%s: an illustration takes no argument" % where if block.arg else None
    if block.kind == "run":
        if block.arg not in SCENARIOS:
            return "%s: unknown scenario %r (one of %s)" % (where, block.arg, ", ".join(SCENARIOS))
        if block.lang not in ("sh", "console"):
            return "%s: a run block must be ```sh" % where
        return None
    path = os.path.join(REPO_ROOT, block.arg or "")
    if not block.arg or not os.path.isfile(path):
        return "%s: %s names no file of the repository: %r" % (where, block.kind, block.arg)
    with open(path, encoding="utf-8") as f:
        content = f.read()
    if block.kind == "file" and content != block.text:
        return "%s: the block differs from %s; copy the file into the doc (or the doc into the file)" % (where, block.arg)
    if block.kind == "excerpt" and block.text not in content:
        return "%s: the block is not a verbatim part of %s" % (where, block.arg)
    return None


def adapt(line, rules):
    """A command line with what the test machine needs added: rules are (matches(words), change(words))
    pairs; the first that matches rewrites the line (its trailing comment dropped). Others stay as written."""
    words = shlex.split(line, comments=True)
    for matches, change in rules:
        if words and matches(words):
            return shlex.join(change(words))
    return line


def script(block, rules=()):
    """A block as one bash script (so that `cd`, `export` and `.` carry over), every line adapted."""
    return "set -euo pipefail\n" + "\n".join(adapt(line, rules) for line in commands(block)) + "\n"
