# What hosts/NAME/hardware.json says, as NixOS settings: file systems, swap, the boot loader, software
# RAID and the static network. A plain function of the parsed JSON that needs no nixpkgs, so that it can
# be read (and tested) on its own; hardware.nix makes it part of the configuration.
facts:
let
  hw = facts.hardware;
  net = facts.network;
  has = value: value != null && value != "";
  # The EFI system partition, when the disks have one (infect finds it at /boot/efi, rescue_install
  # mounts it at /boot).
  espMount = hw.esp_mount or (if hw.file_systems ? "/boot" && hw.boot == "efi" then "/boot" else "");
  espFileSystem =
    if hw.boot == "efi" && has espMount && !(hw.file_systems ? ${espMount}) && hw.esp_devices != [ ]
    then { ${espMount} = { device = builtins.head hw.esp_devices; fsType = "vfat"; options = [ "umask=0077" ]; }; }
    else { };
  # EFI on several disks (rescue_install gives each its own ESP, at /boot, /boot-fallback, ...): GRUB goes
  # on every ESP, so that the firmware finds it on whichever disk is left.
  espMounts = hw.esp_mounts or [ ];
  mirrored = hw.boot == "efi" && builtins.length espMounts > 1;
  address = ip: "${ip.address}/${toString ip.prefix_length}";
  # A route through a gateway that may lie outside the address's subnet: Hetzner Cloud gives an IPv4
  # /32 with the gateway 172.31.1.1, and IPv6 everywhere goes through the link-local fe80::1.
  route = gateway: { Gateway = gateway; GatewayOnLink = true; };
  v4 = net.ipv4 or { };
  v6 = net.ipv6 or { };
  useV4 = has (v4.address or "");
  useV6 = has (v6.address or "");
  # Disks laid out by the configuration's disko script (raid "script"): disko's module declares the file
  # systems and swap itself, so the facts' own (the mounts, by device) would only clash with it.
  byScript = (hw.raid or "") == "script";
in
{
  # NixOS wants at least one mount option: no options is "defaults".
  fileSystems = if byScript then { } else builtins.mapAttrs
    (_mount: fs: { inherit (fs) device fsType; options = if fs.options == [ ] then [ "defaults" ] else fs.options; })
    hw.file_systems // espFileSystem;
  swapDevices = if byScript then [ ] else hw.swap_devices;

  boot.loader.grub = {
    enable = true;
    # BIOS: GRUB goes into the boot sector of every disk, so either disk of a mirror can boot alone.
    devices = if hw.boot == "bios" then hw.grub_devices else if mirrored then [ ] else [ "nodev" ];
    efiSupport = hw.boot == "efi";
    # EFI: install to the fallback path (EFI/BOOT/BOOTX64.EFI), which firmware finds without an NVRAM
    # entry: a rescue system cannot be trusted to keep one, and a disk that is left alone has none.
    efiInstallAsRemovable = hw.boot == "efi";
  } // (if mirrored then {
    # Each ESP gets the boot loader and the entries of every generation, at every switch.
    mirroredBoots = map (path: { inherit path; devices = [ "nodev" ]; efiSysMountPoint = path; }) espMounts;
  } else { });
  boot.loader.efi.efiSysMountPoint = if hw.boot == "efi" && has espMount then espMount else "/boot";

  # mdadm arrays are assembled at boot only when NixOS knows there is software RAID.
  boot.swraid.enable = hw.mdadm_arrays != [ ];
  boot.swraid.mdadmConf = if hw.mdadm_arrays != [ ] then "MAILADDR root" else "";

  # The address the server had in the rescue system, set statically on the interface with that MAC.
  # Matching by MAC matters: the rescue system calls the interface eth0, NixOS names it after its slot
  # (enp0s31f6, enp1s0, ...).
  networking.useDHCP = false;
  networking.useNetworkd = true;
  systemd.network.networks."10-uplink" = {
    matchConfig.MACAddress = net.mac;
    address = (if useV4 then [ (address v4) ] else [ ]) ++ (if useV6 then [ (address v6) ] else [ ]);
    routes = (if useV4 && has (v4.gateway or "") then [ (route v4.gateway) ] else [ ])
      ++ (if useV6 && has (v6.gateway or "") then [ (route v6.gateway) ] else [ ]);
    networkConfig.IPv6AcceptRA = false;
  };
}
