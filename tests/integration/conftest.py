"""Fixtures for the integration tests: real test hosts, real Ansible."""
import os

import pytest

from ansinix_test.hosts import TestHosts
from ansinix_test import ansible, systems


def pytest_configure(config):
    config.addinivalue_line("markers", "paramiko: uses the paramiko connection plugin (ansible-core 2.20 and older)")
    try:
        ansible.ansible_bin_dir()
    except RuntimeError as e:
        raise pytest.UsageError(str(e)) from None


def pytest_report_header():
    """Which ansible-core drives the hosts ($ANSINIX_ANSIBLE_CORE picks another than pytest's own)."""
    return "ansible-core %s (%s)" % (".".join(map(str, ansible.core_version())), ansible.ansible_bin_dir() or "from PATH")


def pytest_collection_modifyitems(items):
    paramiko = [item for item in items if item.get_closest_marker("paramiko")]
    if paramiko and not ansible.has_paramiko_connection():
        skip = pytest.mark.skip(reason="ansible-core %d.%d has no paramiko connection plugin" % ansible.core_version()[:2])
        for item in paramiko:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def testhosts():
    """The session's set of test hosts (prefix $ANSINIX_TESTHOSTS_PREFIX or "ax"), removed at the end."""
    hosts = TestHosts(prefix=os.environ.get("ANSINIX_TESTHOSTS_PREFIX") or "ax")
    hosts.stop()  # whatever an earlier, crashed run left
    try:
        yield hosts
    finally:
        hosts.stop()


@pytest.fixture
def fresh_hosts(testhosts):
    """Start clean hosts by name: fresh_hosts("web1", "web2", web2={"nix": False}).

    Each host named is reset to a new, empty host booted into a base fixture system unless its
    options say otherwise (system=None for no system at all).
    """
    def start(*names, **options):
        base = systems.build_system(name="base")
        opts = {}
        for name in names:
            opts[name] = {"system": base, "nix": True, "nixos": True}
            opts[name].update(options.get(name, {}))
        testhosts.start(list(names), options=opts)
        for name in names:
            testhosts[name].reset()
        testhosts.write_inventory()
        ansible.stop_ssh_masters(testhosts)
        return [testhosts[name] for name in names]
    return start


@pytest.fixture
def ansible_env(testhosts):
    """Environment for running ansible or ansible-playbook yourself against the session's hosts:
    this checkout as the collection, their inventory, host key checking on, nix without caches,
    and Ansible's local temp and SSH control sockets in the hosts' state directory."""
    return ansible.ansible_env(testhosts)


@pytest.fixture
def run_playbook(testhosts):
    def run(playbook, **kwargs):
        return ansible.run_playbook(playbook, hosts=testhosts, **kwargs)
    return run


@pytest.fixture
def run_ansible(testhosts):
    def run(args, **kwargs):
        return ansible.run_ansible(args, hosts=testhosts, **kwargs)
    return run
