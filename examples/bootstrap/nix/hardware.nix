# The hardware part of a server's configuration, from the facts file the bootstrap roles write:
#   (import ./hardware.nix ./hosts/dedi1/hardware.json)
# takes the place of the hardware-configuration.nix that nixos-generate-config would have written.
factsFile:
{ ... }:
let
  facts =
    if builtins.pathExists factsFile then builtins.fromJSON (builtins.readFile factsFile)
    else throw ("${toString factsFile} does not exist yet. Run the bootstrap playbook, which writes it; "
      + "if this directory is a git repository, also `git add` the file, as a flake sees only files git knows.");
in
{
  imports = [ (import ./facts.nix facts) ];

  # Drivers the first stage of the boot needs to find the disks, on dedicated servers (SATA, NVMe) and on
  # Cloud servers (virtio). nixos-generate-config would have picked them from the running hardware.
  boot.initrd.availableKernelModules = [ "ahci" "nvme" "sd_mod" "xhci_pci" "usbhid" "virtio_pci" "virtio_scsi" "virtio_blk" "virtio_net" ];
}
