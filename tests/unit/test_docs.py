"""What the user documentation shows is what the tests run: every code block is marked, files match."""
import os
import re

import pytest

from ansinix_test import REPO_ROOT, docs


def test_every_block_is_marked_and_true():
    problems = [p for p in (docs.check(b) for b in docs.all_blocks()) if p]
    assert not problems, "\n".join(problems)


def test_every_scenario_has_commands_and_a_test():
    with open(os.path.join(REPO_ROOT, "tests", "integration", "test_docs.py"), encoding="utf-8") as f:
        integration = f.read()
    for scenario in docs.SCENARIOS:
        assert docs.run_blocks(scenario), "no doc shows commands of scenario %s" % scenario
        assert re.search(r'run_blocks\("%s"\)' % scenario, integration) or scenario == "demo", scenario


def test_demo_commands_are_what_the_demo_test_runs():
    with open(os.path.join(REPO_ROOT, "tests", "integration", "test_demo.py"), encoding="utf-8") as f:
        assert 'docs.run_blocks("demo")' in f.read()


def test_examples_shown_as_files_are_used_by_tests():
    """A file the docs show is deployed, copied or read by an integration test, not just kept in sync."""
    tests_dir = os.path.join(REPO_ROOT, "tests", "integration")
    source = "".join(open(os.path.join(tests_dir, n), encoding="utf-8").read() for n in os.listdir(tests_dir) if n.endswith(".py"))
    for block in docs.all_blocks():
        if block.kind in ("file", "excerpt"):
            parts = block.arg.split("/")
            # A test names the file, or copies the example directory that holds it (copy_example("guide")).
            named = block.arg in source or '"%s"' % parts[-1] in source
            copied = parts[0] == "examples" and ('copy_example("%s"' % parts[1]) in source
            assert named or copied, "%s:%d shows %s, which no integration test uses" % (block.doc, block.line, block.arg)


@pytest.mark.parametrize("text, message", [
    ("```sh\nls\n```\n", "without a marker"),
    ("<!-- doc-test: run nope -->\n```sh\nls\n```\n", "unknown scenario"),
    ("<!-- doc-test: file examples/fleet/nix/web.nix -->\n```nix\n{ }\n```\n", "differs from examples/fleet/nix/web.nix"),
    ("<!-- doc-test: excerpt examples/fleet/nix/web.nix -->\n```nix\nnot in it\n```\n", "not a verbatim part"),
    ("<!-- doc-test: file examples/nope.nix -->\n```nix\n{ }\n```\n", "names no file"),
])
def test_bad_blocks_are_named(tmp_path, monkeypatch, text, message):
    doc = tmp_path / "doc.md"
    doc.write_text("# A doc\n\n" + text)
    monkeypatch.setitem(docs.DOCS, str(doc), None)
    try:
        found = [docs.check(b) for b in docs.blocks(str(doc))]
    except docs.DocError as exc:
        found = [str(exc)]
    assert any(p and message in p for p in found), found


def test_the_file_marker_accepts_the_file_itself(tmp_path, monkeypatch):
    with open(os.path.join(REPO_ROOT, "examples", "fleet", "nix", "web.nix"), encoding="utf-8") as f:
        web = f.read()
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- doc-test: file examples/fleet/nix/web.nix -->\n```nix\n" + web + "```\n")
    monkeypatch.setitem(docs.DOCS, str(doc), None)
    assert [docs.check(b) for b in docs.blocks(str(doc))] == [None]
