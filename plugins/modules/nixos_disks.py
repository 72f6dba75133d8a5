#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: nixos_disks
short_description: Partition, format and mount disks from a declarative layout, to install NixOS on them
version_added: 0.1.0
description:
  - Lays out whole disks for a NixOS installation and mounts the result under O(root), as the first steps of
    C(nixos-install). The C(ansinix.nixos.rescue_install) role uses it from a rescue system; it is usable on its own.
  - Every disk gets the same GPT. Partition 1 is the boot partition, an EFI system partition (ESP, FAT32) or a 1 MiB
    BIOS boot partition for GRUB. The O(partitions) follow in order.
  - With one disk, the ESP is named C(ESP) and mounted at C(/boot). With several, each disk's ESP has its own name and
    FAT label (C(ESP0), C(ESP1), ...) and mount point (C(/boot), C(/boot-fallback), C(/boot-fallback2), ...), with
    C(nofail). GRUB's C(boot.loader.grub.mirroredBoots) then puts the boot loader on each, so either disk boots alone.
  - With several disks, each partition is mirrored, with mdadm RAID1 (O(raid=mdadm), the usual set-up of a Hetzner
    dedicated server) or with btrfs's own RAID1 (O(raid=btrfs)).
  - A safety interlock checks every disk in O(disks) before the first change and fails closed, naming what it found.
  - A disk in use is never touched, not even with O(wipe=true). In use means that the disk or one of its partitions
    is mounted or used as swap; or has a holder in C(/sys/block/*/holders), followed up the chain (an active
    device-mapper device such as an LVM volume or an open LUKS or dm-crypt mapping, or an md array that is mounted or
    holds another device); or is a device of a mounted btrfs or of an imported ZFS pool; or the kernel refuses to
    open it exclusively (for example, mounted in another mount namespace). The message shows the chain and the
    commands that free it, such as C(umount), C(vgchange -an), C(cryptsetup close) or C(mdadm --stop).
  - A disk that holds data is wiped only with O(wipe=true). Data means any of the following on the disk or a
    partition the kernel lists. A signature that C(blkid -p) names (a file system, swap, a RAID or LVM member, a
    LUKS header). Several signatures that C(blkid -p) finds ambivalent (its exit 8, listed by C(wipefs --no-act)).
    A signature only C(wipefs) finds. A partition whose contents C(blkid) cannot name (raw data, plain dm-crypt).
    A partition in the partition table that the kernel has not listed.
  - A disk counts as empty only when C(blkid -p) exits 2 ("nothing found") and C(wipefs) finds no signature. An
    empty partition table is empty too. When a probe cannot run or cannot tell (an I/O error, C(blkid -p) exiting
    4, a partition without a device node), the task fails and says why, with or without O(wipe).
  - An md array that the rescue system assembled from the disks, which nothing mounts or holds, is stopped
    (C(mdadm --stop)) before wiping with O(wipe=true).
  - Disks that already carry this layout (the same partition names in order and file systems with the same
    types and labels) are not touched again. They are only mounted, so a rerun after a later failure is safe.
  - Or a script lays the disks out, for example disko's C(config.system.build.diskoScript) built from the
    configuration (O(script)). The same interlock checks O(disks) first; the script must mount the new root at
    O(root). A root with a file system mounted on it counts as laid out, and the script is not run again.
  - Returns RV(hardware), what the NixOS configuration needs to boot from these disks.
author:
  - ansinix.nixos maintainers (@ansinix)
extends_documentation_fragment:
  - ansinix.nixos.attributes
attributes:
  check_mode:
    support: full
    details: Probes the disks, runs the interlock, and returns the commands it would run in RV(plan).
  diff_mode:
    support: none
options:
  disks:
    description:
      - The whole disks to lay out, for example V(/dev/sda) or V(/dev/nvme0n1). See C(lsblk -d) on the host.
    type: list
    elements: path
    required: true
  boot:
    description:
      - The boot partition, V(efi) (an ESP) or V(bios) (a BIOS boot partition for GRUB), or V(none).
      - V(auto) picks V(efi) when the host runs on EFI firmware (C(/sys/firmware/efi) exists), else V(bios).
    type: str
    choices: [auto, efi, bios, none]
    default: auto
  esp_size:
    description: The size of the ESP with O(boot=efi).
    type: str
    default: 512M
  raid:
    description:
      - How several disks are used. V(mdadm), each partition is an mdadm RAID1 (C(/dev/md/LABEL)) across the disks.
        V(btrfs), btrfs partitions are one file system with RAID1 data and metadata. V(none), one disk only.
      - V(auto) is V(mdadm) for several disks, V(none) for one.
    type: str
    choices: [auto, none, mdadm, btrfs]
    default: auto
  partitions:
    description:
      - The partitions after the boot partition, in order, the same on every disk.
      - C(label) names the partition (GPT name) and its file system (so C(/dev/disk/by-label/LABEL) finds it).
      - C(size) like V(512M), V(8G), V(1T), or V(100%) (the default) for the rest of the disk, which only the
        last partition can take.
      - C(fs) is one of V(ext4) (default), V(xfs), V(btrfs), V(vfat), V(swap) or V(none) (left unformatted).
      - C(mount) is where the file system is mounted in the installed system; one must be V(/).
      - C(mount_options), a list such as V([noatime]).
      - Required unless O(script) is given; mutually exclusive with it.
    type: list
    elements: dict
  script:
    description:
      - A program on the host that partitions, formats and mounts O(disks) under O(root), run instead of a layout
        of O(partitions). A store path of a package with one program in C(bin/) runs that program.
      - Meant for disko. Build C(nixosConfigurations.NAME.config.system.build.diskoScript) with M(ansinix.nixos.nix_build)
        and copy it with M(ansinix.nixos.nix_copy_closure). O(disks) must list every disk the script writes to, because the
        interlock checks only those.
      - O(boot), O(raid) and O(esp_size) are then not used to lay out anything; O(boot) still goes into RV(hardware).
    type: path
  script_args:
    description: Arguments for O(script).
    type: list
    elements: str
    default: []
  wipe:
    description:
      - Allow wiping disks that hold data (see the interlock above). Their data is lost.
      - It never allows wiping a disk in use, or a disk that could not be probed.
    type: bool
    default: false
  root:
    description: Where the installed system's root is mounted.
    type: path
    default: /mnt
notes:
  - The host needs C(sgdisk) (gdisk), util-linux, the C(mkfs) of each file system, and C(mdadm) for O(raid=mdadm);
    Hetzner's rescue system has them all. A missing one is named before anything changes.
seealso:
  - module: ansinix.nixos.nixos_install
"""

EXAMPLES = r"""
- name: Two NVMe disks, mdadm RAID1, BIOS boot (a Hetzner dedicated server)
  ansinix.nixos.nixos_disks:
    disks: [/dev/nvme0n1, /dev/nvme1n1]
    boot: bios
    raid: mdadm
    partitions:
      - {label: swap, size: 8G, fs: swap}
      - {label: root, size: 100%, fs: ext4, mount: /}
    wipe: true
  register: layout

- name: One disk, EFI, btrfs root (a Hetzner Cloud server)
  ansinix.nixos.nixos_disks:
    disks: [/dev/sda]
    boot: efi
    partitions:
      - {label: root, fs: btrfs, mount: /, mount_options: [compress=zstd]}

- name: Lay the disks out with the configuration's disko script, copied to the host before
  ansinix.nixos.nixos_disks:
    disks: [/dev/sda]
    script: "{{ disko_build.out_path }}"
    wipe: true

- name: Write what the configuration imports
  ansible.builtin.copy:
    content: "{{ layout.hardware | to_nice_json }}"
    dest: "{{ playbook_dir }}/hosts/{{ inventory_hostname }}/hardware.json"
    mode: "0644"
  delegate_to: localhost
"""

RETURN = r"""
plan:
  description: The commands run (or, in check mode, that would run), in order. Empty when nothing was to do.
  returned: always
  type: list
  elements: str
laid_out:
  description: Whether the disks were partitioned and formatted (false when they already had this layout).
  returned: always
  type: bool
wiped:
  description: The devices whose signatures were wiped (or would be, in check mode).
  returned: always
  type: list
  elements: str
hardware:
  description:
    - What the configuration needs to boot from these disks. C(file_systems), mount point to C(device),
      C(fsType) and C(options), as NixOS's C(fileSystems) takes them. C(swap_devices) for C(swapDevices).
      C(boot) (V(efi) or V(bios)), C(grub_devices) for C(boot.loader.grub.devices), C(esp_devices) and
      C(esp_mounts) (the ESPs and their mount points, in the order of O(disks); one C(boot.loader.grub.mirroredBoots)
      entry per mount point when there are several),
      C(raid), C(mdadm_arrays) (set C(boot.swraid.enable) when not empty), and C(disks).
      - With O(script), C(file_systems) lists what is mounted under O(root) by device, C(swap_devices) the swap in use
        on O(disks), and C(raid) is V(script).
  returned: always
  type: dict
layout:
  description: The layout as checked, with sizes in MiB (V(null) for the rest of the disk).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ansinix.nixos.plugins.module_utils.disk_interlock import DiskError
from ansible_collections.ansinix.nixos.plugins.module_utils.disks import Disks, normalize


def main():
    module = AnsibleModule(
        argument_spec=dict(
            disks=dict(type="list", elements="path", required=True),
            boot=dict(type="str", default="auto", choices=["auto", "efi", "bios", "none"]),
            esp_size=dict(type="str", default="512M"),
            raid=dict(type="str", default="auto", choices=["auto", "none", "mdadm", "btrfs"]),
            partitions=dict(type="list", elements="dict"),
            script=dict(type="path"),
            script_args=dict(type="list", elements="str", default=[]),
            wipe=dict(type="bool", default=False),
            root=dict(type="path", default="/mnt"),
        ),
        required_one_of=[("partitions", "script")],
        mutually_exclusive=[("partitions", "script")],
        supports_check_mode=True,
    )
    try:
        layout = normalize(module.params, efi_firmware=os.path.isdir("/sys/firmware/efi"))
        result = Disks(module, layout, module.params["root"], module.params["wipe"]).apply(module.check_mode)
    except DiskError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
