"""What the user documentation shows is what the tests run: every code block is marked, files match."""
import glob
import os
import re

import pytest
import yaml

from ansinix_test import REPO_ROOT, docs


def test_every_block_is_marked_and_true():
    problems = [p for p in (docs.check(b) for b in docs.all_blocks()) if p]
    assert not problems, "\n".join(problems)


def test_every_scenario_has_commands_and_a_test():
    with open(os.path.join(REPO_ROOT, "tests", "integration", "test_docs.py"), encoding="utf-8") as f:
        integration = f.read()
    for scenario in docs.SCENARIOS:
        assert docs.run_blocks(scenario), "no doc shows commands of scenario %s" % scenario
        assert re.search(r'run_blocks\("%s"\)' % scenario, integration) or scenario in ("demo", "ci"), scenario


def test_commands_in_prose_are_run():
    """An `ansible-playbook -i ...` or `ansible -i ...` in a sentence is a command a reader may type: it must be one
    that a run block shows (and a test runs), word for word."""
    run = {line for b in docs.all_blocks() if b.kind == "run" for line in docs.commands(b)}
    loose = []
    for doc in docs.DOCS:
        with open(os.path.join(REPO_ROOT, doc), encoding="utf-8") as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
        for span in re.findall(r"`((?:ansible-playbook|ansible) -i [^`]+)`", text.replace("\n", " ")):
            if not any(span in line for line in run):
                loose.append("%s: %s" % (doc, span))
    assert loose == [], "commands in prose that no run block shows: %s" % loose


def test_every_readme_and_page_is_checked():
    pages = glob.glob(os.path.join(REPO_ROOT, "docs", "**", "*.md"), recursive=True)
    readmes = [os.path.join(REPO_ROOT, "README.md")] + glob.glob(os.path.join(REPO_ROOT, "roles", "*", "README.md"))
    assert sorted(os.path.relpath(p, REPO_ROOT) for p in pages + readmes) == sorted(docs.DOCS)


def test_ci_runs_the_readme_test_command():
    """The README's whole-suite command is what .ci/run runs, word for word."""
    with open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    for block in docs.run_blocks("ci"):
        for command in docs.commands(block):
            assert re.search(r"(^|&& |exec )%s$" % re.escape(command), ci, re.M), command
            assert os.access(os.path.join(REPO_ROOT, command.split()[0]), os.X_OK), command


@pytest.mark.parametrize("role", ["rescue_install", "infect"])
def test_role_readme_lists_every_default(role):
    with open(os.path.join(REPO_ROOT, "roles", role, "defaults", "main.yml"), encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    with open(os.path.join(REPO_ROOT, "roles", role, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert [name for name in defaults if "`%s`" % name not in readme] == []


def test_demo_commands_are_what_the_demo_test_runs():
    with open(os.path.join(REPO_ROOT, "tests", "integration", "test_demo.py"), encoding="utf-8") as f:
        assert 'docs.run_blocks("demo")' in f.read()


def test_examples_shown_as_files_are_used_by_tests():
    """A file the docs show is deployed, copied or read by an integration test, not just kept in sync."""
    tests_dir = os.path.join(REPO_ROOT, "tests", "integration")
    source = "".join(open(os.path.join(tests_dir, n), encoding="utf-8").read() for n in os.listdir(tests_dir) if n.endswith(".py"))
    # The examples a doc's command copies (cp -r ~/.ansible/.../examples/guide ~/fleet), which its scenario's test runs.
    run_copies = {m.group(1) for b in docs.all_blocks() if b.kind == "run"
                  for m in re.finditer(r"^cp -r \S*/examples/(\w+) ", b.text, re.M)}
    for block in docs.all_blocks():
        if block.kind in ("file", "excerpt"):
            parts = block.arg.split("/")
            # A test names the file, or copies the example directory that holds it (copy_example("guide"), or the
            # doc's own cp command).
            named = block.arg in source or '"%s"' % parts[-1] in source
            copied = parts[0] == "examples" and (('copy_example("%s"' % parts[1]) in source or parts[1] in run_copies)
            assert named or copied, "%s:%d shows %s, which no integration test uses" % (block.doc, block.line, block.arg)


@pytest.mark.parametrize("text, message", [
    ("```sh\nls\n```\n", "without a marker"),
    ("<!-- doc-test: run nope -->\n```sh\nls\n```\n", "unknown scenario"),
    ("<!-- doc-test: file examples/fleet/nix/web.nix -->\n```nix\n{ }\n```\n", "differs from examples/fleet/nix/web.nix"),
    ("<!-- doc-test: excerpt examples/fleet/nix/web.nix -->\n```nix\nnot in it\n```\n", "not a verbatim part"),
    ("<!-- doc-test: file examples/nope.nix -->\n```nix\n{ }\n```\n", "names no file"),
    ("<!-- doc-test: illustration guide -->\n```sh\nls\n```\n", "an illustration takes no argument"),
    ("<!-- doc-test: example -->\n```sh\nls\n```\n", "unknown marker kind"),
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
