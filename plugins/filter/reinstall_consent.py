# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""reinstall_consent: which hosts this run may reset and wipe, from nixos_bootstrap_reinstall given with -e.

Consent to destroy a server counts for one run only, so it must come from the command line, never from
the inventory. Ansible does not say where a variable came from, but its precedence tells: the role sets
the variable to NOT_GIVEN in its vars/ (above inventory, below extra vars), and hostvars, which holds the
inventory and the extra vars but no role or play variables, is compared with what the role sees.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

NOT_GIVEN = "__ansinix_not_given__"
VARIABLE = "nixos_bootstrap_reinstall"


def _names(value):
    if isinstance(value, str):
        entries = value.split(",")
    elif isinstance(value, (list, tuple)):
        entries = list(value)
    else:
        return None
    if not all(isinstance(entry, str) for entry in entries):
        return None
    return [entry.strip() for entry in entries if entry.strip()]


def reinstall_consent(seen, inventory_value, inventory_hosts):
    """{"hosts": the names consented to, "error": "" or one line why the consent is refused}.

    `seen` is the variable as the role sees it, `inventory_value` the same from hostvars (NOT_GIVEN when
    unset), `inventory_hosts` every host name of the inventory (groups['all'])."""
    def refused(error):
        return {"hosts": [], "error": error}

    if seen == NOT_GIVEN:
        if inventory_value != NOT_GIVEN:
            return refused("%s is set in the inventory (host_vars, group_vars or an inventory file); consent to reset and "
                           "wipe servers counts for one run only: remove it there and give it on the command line, "
                           "-e %s=NAME,NAME" % (VARIABLE, VARIABLE))
        return {"hosts": [], "error": ""}
    if seen != inventory_value:
        return refused("%s must be given on the command line (-e %s=NAME,NAME), not as a play, role or task variable"
                       % (VARIABLE, VARIABLE))
    names = _names(seen)
    if names is None:
        return refused("%s must be inventory host names, as a list or separated by commas (-e %s=web1,web2); got %r"
                       % (VARIABLE, VARIABLE, seen))
    if "all" in names:
        return refused("%s names hosts one by one; 'all' is not accepted: list the hosts to reset and reinstall" % VARIABLE)
    unknown = [name for name in names if name not in inventory_hosts]
    if unknown:
        return refused("%s names %s, not %s of the inventory; give inventory host names (groups are not accepted)"
                       % (VARIABLE, ", ".join(unknown), "a host" if len(unknown) == 1 else "hosts"))
    return {"hosts": names, "error": ""}


def _filter(seen, inventory_value, inventory_hosts):
    if not isinstance(inventory_hosts, (list, tuple)):
        raise AnsibleFilterError("reinstall_consent: the inventory's hosts must be a list, got %r" % (inventory_hosts,))
    return reinstall_consent(seen, inventory_value, list(inventory_hosts))


class FilterModule:
    def filters(self):
        return {"reinstall_consent": _filter}
