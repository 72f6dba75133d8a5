"""nix_copy_closure's action: what a source prints is checked before it reaches a shell, and reaches it quoted."""
import subprocess

import pytest

from ansible_collections.ansinix.nixos.plugins.action.nix_copy_closure import ActionModule, nar_sizes, shell_words, store_paths
from ansible_collections.ansinix.nixos.plugins.module_utils.nix import NixError

HASH = "0" * 32
GOOD = "/nix/store/%s-hello-2.12" % HASH
# A valid store path name may hold ? and =: unquoted, a shell would glob it.
GLOB = "/nix/store/%s-a?b=c" % HASH


@pytest.mark.parametrize("hostile", [
    "/nix/store/%s-x;touch${IFS}/tmp/pwned" % HASH,
    "/nix/store/%s-x$(id)" % HASH,
    "`reboot`",
    "/etc/passwd",
])
def test_a_builder_that_prints_no_store_path_is_refused_in_one_line(hostile):
    with pytest.raises(NixError) as err:
        store_paths("%s\n%s\n" % (GOOD, hostile), "src_host builder1")
    assert "\n" not in err.value.msg and err.value.msg.startswith("src_host builder1 answered ")
    assert "Nothing was copied" in err.value.msg


def test_store_paths_and_sizes_of_a_sane_source():
    assert store_paths("%s\n%s\n" % (GOOD, GLOB), "the controller") == [GOOD, GLOB]
    assert nar_sizes("12\n34\n", [GOOD, GLOB], "the controller") == {GOOD: 12, GLOB: 34}
    with pytest.raises(NixError):
        nar_sizes("12\n$(id)\n", [GOOD, GLOB], "src_host builder1")


def test_store_paths_reach_a_shell_as_one_word_each(tmp_path):
    # A file the unquoted glob would match: the shell must see the path itself, not the file.
    (tmp_path / ("%s-aXb=c" % HASH)).write_text("")
    words = shell_words([GOOD, GLOB.replace("/nix/store", str(tmp_path))])
    out = subprocess.run(["/bin/sh", "-c", "printf '%s\\n' " + words], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [GOOD, GLOB.replace("/nix/store", str(tmp_path))]


def test_queries_on_the_target_quote_every_path():
    class Recorder:
        commands = []

        def remote(self, cmd, what):
            self.commands.append(cmd)
            return ""

    recorder = Recorder()
    ActionModule.remote_chunked(recorder, "nix-store --check-validity --print-invalid %s", [GOOD, GLOB], "asking")
    (command,) = recorder.commands
    assert command.endswith("nix-store --check-validity --print-invalid %s '%s'" % (GOOD, GLOB))
