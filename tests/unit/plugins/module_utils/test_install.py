"""install.py: the boot loader command inside the chroot treats the profile as one word."""
import subprocess

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.install import boot_in_chroot_argv

SYSTEM = "/nix/store/8y6pwg7rdrsbrl8x4aqk8d8jfn15p4wc-nixos-system-web1-26.11"


@pytest.mark.parametrize("name", ["with space", "semi;touch INJECTED", "quote'$(touch INJECTED)"])
def test_a_profile_with_shell_characters_is_one_word(tmp_path, name):
    profile = tmp_path / name
    (profile / "bin").mkdir(parents=True)
    switch = profile / "bin" / "switch-to-configuration"
    switch.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/ran"\n')
    switch.chmod(0o755)
    argv = boot_in_chroot_argv("/usr/sbin/chroot", "/mnt", SYSTEM, str(profile))
    assert argv[:4] == ["/usr/sbin/chroot", "/mnt", SYSTEM + "/sw/bin/sh", "-c"]
    # What the system's shell runs inside the chroot, run by this machine's shell here.
    proc = subprocess.run(["/bin/sh", "-c", argv[4]], cwd=str(tmp_path), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (profile / "bin" / "ran").read_text() == "boot\n"
    assert not (tmp_path / "INJECTED").exists()
