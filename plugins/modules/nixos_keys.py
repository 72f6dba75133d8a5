#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: nixos_keys
short_description: Put secrets on NixOS hosts outside the Nix store, like NixOps's deployment.keys
version_added: 0.1.0
description:
  - Writes each key to its own file, by default in C(/run/keys), a tmpfs that a reboot empties. That directory
    is created as C(root:keys) C(0750) when missing. Nothing is ever written to the world-readable Nix store.
  - The content comes from the task (vault variables, lookups), from a file on the controller (vault-encrypted
    files are decrypted), or from a command run on the controller.
  - Each key is written atomically. A temporary file in the same directory that only root can open is filled,
    given its owner and mode, then renamed over the old one. At no moment can anyone read the secret whom the
    final file would not allow.
  - A key whose content, owner and mode are unchanged is not touched (same inode and mtime), so units that watch
    it are not restarted on every deploy.
  - Keys this module wrote earlier into a directory and that are no longer declared are removed (O(prune)).
    Files it did not write are never touched. It lists the keys it wrote in C(.ansinix-keys.json) in that directory.
  - The secrets travel to the host only as module arguments, over the connection's standard input
    (pipelining, used for this module whenever the connection and become method allow it, even where
    pipelining is off). So they are never in a file on the host other than the key itself.
  - Ships a NixOS module, C(nix/keys.nix) in the collection, that gives every key a C(<name>-key.service),
    which is active while the key file exists. NixOps and colmena users write C(after = [ "foo-key.service" ])
    as before.
author:
  - ansinix.nixos maintainers (@ansinix)
extends_documentation_fragment:
  - ansinix.nixos.attributes
  - ansinix.nixos.attributes.action
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Paths, owners and modes; never contents.
  action:
    support: full
    details: The action plugin reads C(src) and runs C(command) on the controller.
options:
  keys:
    description:
      - A dictionary from each key's name (its file name) to its settings, a dictionary with the following.
      - C(content), the secret itself, for example from a vault variable; or C(src), a file on the controller
        holding it (a vault-encrypted file is decrypted); or C(command), a command run on the controller by
        C(/bin/sh) whose standard output, as printed (a final newline included), is the secret. Exactly one of the three. Keys are text (UTF-8);
        base64-encode binary secrets.
      - C(user), the owner of the key file (default V(root)); C(group), its group (default the owner's primary
        group); C(permissions), its mode as an octal string (default V('0600')); C(dest_dir), its directory
        (default O(dest_dir)).
      - C(defer_owner) (default V(false)). When the user or group does not exist yet because the new system
        creates it, write the key as C(root:root) with its mode now instead of failing. Running the task again
        after the switch hands it to its owner. The deploy role runs it before and after M(ansinix.nixos.nixos_switch).
      - An empty dictionary declares no key. With O(prune) it removes every key written earlier to O(dest_dir).
    type: dict
    required: true
  contents:
    description:
      - Filled in by the action plugin with each key's secret, read from O(keys)' C(content), C(src) or C(command).
        Not to be set in tasks. It is C(no_log), so Ansible masks the secrets wherever it shows arguments.
    type: dict
  dest_dir:
    description:
      - Default directory of the keys. Created as C(root:keys) C(0750) when missing (C(root:root) without a
        C(keys) group).
      - It must not be in the Nix store, and if it exists, only its owner (root) may write to it. Anyone else
        who could write there could replace keys.
    type: path
    default: /run/keys
  prune:
    description:
      - Remove keys that this module wrote earlier into the same directories and that are no longer declared.
        Declare all keys of a directory in one task; another task writing to the same directory would remove them.
    type: bool
    default: true
notes:
  - Run with C(become) when the SSH user is not root.
  - Sources are read on the controller, also in check mode (comparing needs the content), so C(command) runs then too.
  - Ansible masks the contents in results and logs (C(no_log)). The task banner shows task arguments only with
    C(display_args_to_stdout), so leave that off, or set C(no_log) on the task.
  - Every key file is compared with its declared content, owner and mode, and left alone when they match. No
    content and no hash of it is ever returned. A hash of a short password would give the password away.
seealso:
  - module: ansinix.nixos.nixos_switch
"""

EXAMPLES = r"""
- name: Database password from vault, TLS key from an encrypted file, an API token from a password manager
  ansinix.nixos.nixos_keys:
    keys:
      db-password:
        content: "{{ vault_db_password }}"
        user: postgres
        permissions: "0400"
      tls-key:
        src: files/web1.key.vault
        user: nginx
        group: nginx
        permissions: "0440"
      api-token:
        command: pass show deploy/api-token
        user: app
        defer_owner: true
"""

RETURN = r"""
keys:
  description: Each key's name, path, owner, group, mode and whether it was written. Never its content.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "db-password", "path": "/run/keys/db-password", "owner": "postgres", "group": "postgres",
            "mode": "0400", "changed": true, "deferred": false, "wanted_owner": "postgres:postgres"}]
removed:
  description: Key files removed because they are no longer declared.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ansinix.nixos.plugins.module_utils.keys import KeysError, apply, plan


def main():
    module = AnsibleModule(
        argument_spec=dict(
            # Names, owners and modes only: the secrets come in `contents`.
            keys=dict(type="dict", required=True, no_log=False),
            contents=dict(type="dict", no_log=True),
            dest_dir=dict(type="path", default="/run/keys"),
            prune=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    keys, contents = module.params["keys"], module.params["contents"] or {}
    for name, spec in keys.items():
        if not isinstance(spec, dict) or not isinstance(contents.get(name), str):
            module.fail_json(msg="key %r: no content arrived; src and command are read on the controller by the "
                                 "action plugin, so run ansinix.nixos.nixos_keys as a task" % name)
        keys[name] = dict(spec, content=contents[name])
    try:
        planned = plan(keys, module.params["dest_dir"])
        # With no key declared, prune empties the task's dest_dir of the keys written there earlier.
        prune_dirs = [] if keys else [module.params["dest_dir"]]
        result = apply(planned, module.params["prune"], module.check_mode, prune_dirs)
    except KeysError as exc:
        module.fail_json(msg=exc.msg)
    except OSError as exc:
        module.fail_json(msg="writing keys failed: %s%s" % ("%s: " % exc.filename if exc.filename else "", exc.strerror))
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
