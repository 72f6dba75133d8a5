"""ansible-inventory with ansinix.nixos.hetzner against the fake Hetzner Cloud and Robot on 127.0.0.1.

Every run is a real `ansible-inventory` with this checkout as the collection; every source names the
fake's endpoints, so nothing beyond loopback is ever asked. Failed sources make the run fail
(ANSIBLE_INVENTORY_UNPARSED_FAILED), as CI and AWX jobs are advised to configure it.
"""
import json
import os
import re
import socket
import subprocess
import textwrap

import pytest

from ansinix_test import REPO_ROOT
from ansinix_test import ansible as harness
from ansinix_test.fakehetzner import CLOUD_TOKEN, ROBOT_PASSWORD, ROBOT_USER, FakeHetzner

WRONG_TOKEN = "wrong-token-value-xyz"
WRONG_PASSWORD = "wrong-password-value-xyz"
SECRETS = (CLOUD_TOKEN, ROBOT_PASSWORD, WRONG_TOKEN, WRONG_PASSWORD)
SHARED = ("[WARNING]: Hetzner servers share the name cloud005: Cloud server 1005 as cloud005_cloud1005 and Robot server 322 as "
          "cloud005_robot322, so host_vars/cloud005 applies to none of them. Rename all but one of them, or move the variables to "
          "host_vars/cloud005_cloud1005")
NO_IPV4 = ("[WARNING]: 1 Hetzner server(s) have no public_ipv4 address and get no ansible_host (choose another connect_with, "
           "or set ansible_host with compose): cloud119")


@pytest.fixture
def api():
    """120 Cloud servers (three pages), two of them in a private network, and two Robot servers."""
    with FakeHetzner() as fake:
        backend = fake.cloud.add_network("backend", "10.0.0.0/16")
        fake.cloud.add_server(labels={"nixos": "web", "env": "prod"})
        fake.cloud.add_server(labels={"nixos": "mon", "env": "prod"})
        fake.cloud.add_servers(115)
        fake.cloud.add_server(status="off")
        fake.cloud.add_server(labels={"nixos": "web"}, location="hel1", server_type="cpx31", networks={backend["id"]: "10.0.0.5"})
        fake.cloud.add_server(labels={"nixos": "web"}, location="hel1", server_type="cpx31", networks={backend["id"]: "10.0.0.6"},
                              ipv4=False)
        fake.robot.add_server(321, "dedi1")
        fake.robot.add_server(322, "cloud005", dc="HEL1-DC2")  # the name of a Cloud server too
        fake.robot.rescue[321]["active"] = True
        yield fake


def run_inventory(tmp_path, config, *args, env=None, name="test.hetzner.yml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(config))
    extra = {"HCLOUD_TOKEN": CLOUD_TOKEN, "HROBOT_API_USER": ROBOT_USER, "HROBOT_API_PASSWORD": ROBOT_PASSWORD,
             "HCLOUD_ENDPOINT": "", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"}
    extra.update(env or {})
    return subprocess.run(["ansible-inventory", "-i", str(path)] + list(args or ["--list"]), env=harness.ansible_env(extra=extra),
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)


def plain(value):
    """ansible-inventory --list marks values from outside as {"__ansible_unsafe": value}: unwrap them."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def warnings_of(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("[WARNING]")]


def listed(proc, expected_warnings=()):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if expected_warnings is not None:
        assert sorted(warnings_of(proc)) == sorted(expected_warnings), proc.stderr
    return plain(json.loads(proc.stdout))


def hosts_of(data, group):
    return sorted(data.get(group, {}).get("hosts", []))


def plugin_error(proc):
    """The one line the plugin raised, as Ansible reports a failed source."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    found = re.findall(r"^\[WARNING\]: Failed to parse inventory with 'auto' plugin: (.*)$", proc.stderr, re.M)
    assert len(found) == 1, proc.stderr
    return found[0]


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- what the inventory holds -----------------------------------------------------------------------------------

def test_cloud_and_robot_hosts_groups_and_vars(api, tmp_path):
    data = listed(run_inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud:
          endpoint: %s
        robot:
          endpoint: %s
          rescue_status: true
        """ % (api.cloud_url, api.robot_url)), [SHARED, NO_IPV4])
    hostvars = data["_meta"]["hostvars"]
    assert len(hostvars) == 122
    assert len(hosts_of(data, "hetzner_cloud")) == 120 and hosts_of(data, "hetzner_robot") == ["cloud005_robot322", "dedi1"]
    assert hosts_of(data, "hetzner") == sorted(hostvars)
    # 120 servers at 50 a page: three pages; the network names once; Robot's list and one rescue state per server.
    assert [(r.path, r.query.get("page")) for r in api.requests if r.path.startswith("/v1")] == [
        ("/v1/servers", ["1"]), ("/v1/servers", ["2"]), ("/v1/servers", ["3"]), ("/v1/networks", ["1"])]
    assert [r.path for r in api.requests if r.path.startswith("/robot")] == [
        "/robot/server", "/robot/boot/321/rescue", "/robot/boot/322/rescue"]
    assert hostvars["cloud000"] == {
        "ansible_host": "192.0.2.1", "nixos_configuration": "web",
        "hetzner_kind": "cloud", "hetzner_id": 1000, "hetzner_name": "cloud000", "hetzner_status": "running",
        "hetzner_location": "fsn1", "hetzner_type": "cx22", "hetzner_labels": {"nixos": "web", "env": "prod"},
        "hetzner_ipv4": "192.0.2.1", "hetzner_ipv6": "2001:db8::1", "hetzner_ipv6_network": "2001:db8::/64",
        "hetzner_private_ipv4": None, "hetzner_private_networks": {}, "hetzner_image": "debian-12", "hetzner_rescue": False,
    }
    assert hostvars["dedi1"] == {
        "ansible_host": "198.51.100.72",
        "hetzner_kind": "robot", "hetzner_id": 321, "hetzner_name": "dedi1", "hetzner_status": "ready",
        "hetzner_location": "fsn1", "hetzner_type": "AX41-NVMe", "hetzner_labels": {},
        "hetzner_ipv4": "198.51.100.72", "hetzner_ipv6": "2001:db8:ff41::1", "hetzner_ipv6_network": "2001:db8:ff41::/64",
        "hetzner_private_ipv4": None, "hetzner_private_networks": {}, "hetzner_image": None, "hetzner_rescue": True,
    }
    # The name of a Cloud and a Robot server goes to neither: host_vars/cloud005 reaches no machine by accident.
    assert "cloud005" not in hostvars and hostvars["cloud005_cloud1005"]["hetzner_kind"] == "cloud"
    assert hostvars["cloud005_robot322"]["hetzner_rescue"] is False and hostvars["cloud005_robot322"]["hetzner_kind"] == "robot"
    assert hostvars["cloud118"]["hetzner_private_networks"] == {"backend": "10.0.0.5"}
    assert hostvars["cloud118"]["hetzner_private_ipv4"] == "10.0.0.5"
    assert "ansible_host" not in hostvars["cloud119"] and hostvars["cloud119"]["hetzner_ipv4"] is None
    assert hosts_of(data, "nixos") == ["cloud000", "cloud001", "cloud118", "cloud119"]
    assert "nixos_configuration" not in hostvars["cloud002"]
    # The fake places server i in fsn1, nbg1 or hel1 by i % 3; the last two Cloud servers are in hel1.
    assert hosts_of(data, "hetzner_fsn1") == sorted(["cloud%03d" % i for i in range(118) if i % 3 == 0] + ["dedi1"])
    assert hosts_of(data, "hetzner_hel1") == sorted(["cloud%03d" % i for i in range(118) if i % 3 == 2 and i != 5]
                                                    + ["cloud118", "cloud119", "cloud005_cloud1005", "cloud005_robot322"])


def test_graph_of_a_nixos_fleet(api, tmp_path):
    proc = run_inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud:
          endpoint: %s
          label_selector: nixos
          status: [running]
        robot:
          endpoint: %s
        connect_with: public_ipv6
        compose:
          nixos_configuration: "hetzner_name if hetzner_kind == 'robot' else nixos_configuration"
        """ % (api.cloud_url, api.robot_url), "--graph")
    assert proc.returncode == 0 and warnings_of(proc) == [], proc.stderr
    assert proc.stdout == textwrap.dedent("""\
        @all:
          |--@ungrouped:
          |--@hetzner:
          |  |--cloud000
          |  |--cloud001
          |  |--cloud118
          |  |--cloud119
          |  |--dedi1
          |  |--cloud005
          |--@hetzner_cloud:
          |  |--cloud000
          |  |--cloud001
          |  |--cloud118
          |  |--cloud119
          |--@hetzner_fsn1:
          |  |--cloud000
          |  |--dedi1
          |--@nixos:
          |  |--cloud000
          |  |--cloud001
          |  |--cloud118
          |  |--cloud119
          |  |--dedi1
          |  |--cloud005
          |--@hetzner_nbg1:
          |  |--cloud001
          |--@hetzner_hel1:
          |  |--cloud118
          |  |--cloud119
          |  |--cloud005
          |--@hetzner_robot:
          |  |--dedi1
          |  |--cloud005
        """)
    # The label selector and status went to the API, which answered with one page.
    assert [(r.query["label_selector"], r.query["status"]) for r in api.requests if r.path == "/v1/servers"] == [(["nixos"], ["running"])]


def test_filters_network_and_constructed(api, tmp_path):
    data = listed(run_inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud:
          endpoint: %s
          locations: [hel1, nbg1]
          server_types: [cpx31, cx22]
          network: backend
        connect_with: private_ipv4
        filter: "server_type.cores >= `2` && labels.nixos == 'web'"
        strict: true
        compose:
          deploy_zone: "'zone-' ~ hetzner_location"
        groups:
          ipv6_only: hetzner_ipv4 is none
        keyed_groups:
          - key: hetzner_type
            prefix: type
        """ % api.cloud_url))
    hostvars = data["_meta"]["hostvars"]
    assert sorted(hostvars) == ["cloud118", "cloud119"]
    assert hostvars["cloud118"]["ansible_host"] == "10.0.0.5" and hostvars["cloud119"]["ansible_host"] == "10.0.0.6"
    assert hostvars["cloud119"]["deploy_zone"] == "zone-hel1"
    assert hosts_of(data, "type_cpx31") == ["cloud118", "cloud119"] and hosts_of(data, "ipv6_only") == ["cloud119"]


def test_connect_with_name_and_a_custom_nixos_label(api, tmp_path):
    api.cloud.servers[2]["labels"] = {"role": "builder"}
    data = listed(run_inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud: {endpoint: %s}
        connect_with: name
        nixos_label: role
        """ % api.cloud_url))
    hostvars = data["_meta"]["hostvars"]
    assert hosts_of(data, "nixos") == ["cloud002"] and hostvars["cloud002"]["nixos_configuration"] == "builder"
    assert hostvars["cloud000"]["ansible_host"] == "cloud000" and "nixos_configuration" not in hostvars["cloud000"]


def test_documented_filters(api, tmp_path):
    api.cloud.servers[0]["server_type"]["cores"] = 4
    api.cloud.servers[1]["server_type"]["cores"] = 8
    api.cloud.servers[1]["labels"]["legacy"] = "yes"
    api.robot.servers[1]["cancelled"] = True
    cases = [
        ("cloud", "server_type.cores >= `4` && !contains(keys(labels), 'legacy')", ["cloud000"]),
        ("robot", "status == 'ready' && !cancelled", ["dedi1"]),
        ("both", "contains(name || server_name || '', 'dedi')", ["dedi1"]),
        ("both", "!contains(keys(labels || `{}`), 'legacy') && (server_type.cores >= `4` || server_number == `321`)",
         ["cloud000", "dedi1"]),
    ]
    for sections, expression, expected in cases:
        config = "plugin: ansinix.nixos.hetzner\nfilter: %s\n" % json.dumps(expression)
        if sections in ("cloud", "both"):
            config += "cloud: {endpoint: %s}\n" % api.cloud_url
        if sections in ("robot", "both"):
            config += "robot: {endpoint: %s}\n" % api.robot_url
        assert sorted(listed(run_inventory(tmp_path, config))["_meta"]["hostvars"]) == expected, expression
    # A Cloud-only expression on a Robot server fails with a line that names the server.
    proc = run_inventory(tmp_path, "plugin: ansinix.nixos.hetzner\nfilter: \"contains(keys(labels), 'x')\"\nrobot: {endpoint: %s}\n"
                         % api.robot_url)
    assert plugin_error(proc) == ("filter \"contains(keys(labels), 'x')\" failed on Robot server 321: In function keys(), invalid type "
                                  "for value: None, expected one of: ['object'], received: \"null\"")


def test_api_data_is_never_evaluated_as_a_template(api, tmp_path):
    api.robot.servers[0]["product"] = "{{ 6 * 7 }}"
    api.cloud.servers[0]["labels"]["env"] = "{{ lookup('ansible.builtin.env', 'HOME') }}"
    (tmp_path / "test.hetzner.yml").write_text("plugin: ansinix.nixos.hetzner\ncloud: {endpoint: %s, label_selector: env}\n"
                                               "robot: {endpoint: %s}\n" % (api.cloud_url, api.robot_url))
    proc = subprocess.run(["ansible", "dedi1:cloud000", "-i", "test.hetzner.yml", "-m", "ansible.builtin.debug", "-a",
                           "msg={{ [hetzner_type, hetzner_labels.env | default('')] }}"],
                          env=harness.ansible_env(extra={"HCLOUD_TOKEN": CLOUD_TOKEN, "HROBOT_API_USER": ROBOT_USER,
                                                         "HROBOT_API_PASSWORD": ROBOT_PASSWORD}),
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"{{ 6 * 7 }}",' in proc.stdout and "\"{{ lookup('ansible.builtin.env', 'HOME') }}\"" in proc.stdout, proc.stdout
    assert "42" not in proc.stdout


def test_a_name_that_is_no_host_name_is_never_run_and_gets_a_fallback(api, tmp_path):
    """Server names, locations and labels that are templates: no command runs, the hosts get plain names."""
    ran = tmp_path / "ran"
    api.robot.servers[0]["server_name"] = "{{ lookup('pipe', 'id > %s-robot') }}" % ran
    api.robot.servers[0]["dc"] = "{{ lookup('pipe', 'id > %s-dc') }}-DC1" % ran
    api.cloud.servers[0]["name"] = "{{ lookup('pipe', 'id > %s-cloud') }}" % ran
    api.cloud.servers[1]["name"] = "-oProxyCommand=id>%s-ssh" % ran
    api.cloud.servers[2]["labels"]["nixos"] = "$(id>%s-label)" % ran
    (tmp_path / "test.hetzner.yml").write_text("plugin: ansinix.nixos.hetzner\ncloud: {endpoint: %s, label_selector: env}\n"
                                               "robot: {endpoint: %s}\nconnect_with: name\n" % (api.cloud_url, api.robot_url))
    api.cloud.servers[2]["labels"]["env"] = "dev"
    (tmp_path / "play.yml").write_text(textwrap.dedent("""\
        - hosts: all
          gather_facts: false
          tasks:
            - ansible.builtin.debug:
                msg: "{{ inventory_hostname }} {{ hetzner_name }} {{ group_names }} {{ ansible_host | default('') }}"
        """))
    proc = subprocess.run(["ansible-playbook", "-i", "test.hetzner.yml", "play.yml"],
                          env=harness.ansible_env(extra={"HCLOUD_TOKEN": CLOUD_TOKEN, "HROBOT_API_USER": ROBOT_USER,
                                                         "HROBOT_API_PASSWORD": ROBOT_PASSWORD}),
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ran")) == []
    hosts = sorted(re.findall(r"^ok: \[(.*?)\]", proc.stdout, re.M))
    assert hosts == ["cloud002", "cloud005", "cloud1000", "cloud1001", "robot321"], proc.stdout
    stderr = " ".join(proc.stderr.split())
    # The name is shown quoted, and cut at 80 characters.
    assert re.search(r"\[WARNING\]: Hetzner Robot server 321 is named \"\{\{ lookup\('pipe', 'id > [^\"]{40,}\.\.\.\", which is not a "
                     r"host name \(letters, digits and '-' in dot-separated labels of at most 63 characters\): it is listed as robot321\. "
                     r"Rename it in Robot \(Server, the server's name\) to use its name", stderr), stderr
    assert "Hetzner Cloud server 1000 is named" in stderr and "it is listed as cloud1000. Rename it in the Cloud Console" in stderr
    assert "Hetzner Cloud server 1001 is named \"-oProxyCommand=id>" in stderr
    assert "1 Hetzner server(s) have a location that is not a location name and are in no location group: robot321" in stderr
    assert "Hetzner Cloud server cloud002: its label nixos=\"$(id>" in stderr
    # connect_with: name gives no ansible_host for a name that is no host name; the location made no group.
    data = listed(run_inventory(tmp_path, (tmp_path / "test.hetzner.yml").read_text()), None)
    hostvars = data["_meta"]["hostvars"]
    assert "ansible_host" not in hostvars["cloud1001"] and hostvars["cloud005"]["ansible_host"] == "cloud005"
    assert hostvars["cloud1001"]["hetzner_name"] == "-oProxyCommand=id>%s-ssh" % ran
    assert "nixos_configuration" not in hostvars["cloud002"] and hosts_of(data, "nixos") == ["cloud1000", "cloud1001"]
    assert [group for group in data if "lookup" in group or "{" in group] == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ran")) == []


def test_a_name_two_servers_carry_goes_to_neither_and_neither_gets_its_host_vars(api, tmp_path):
    api.cloud.servers[0]["name"] = "web1"
    api.robot.servers[0]["server_name"] = "web1"
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "web1.yml").write_text("deploy_secret: meant-for-one-machine\n")
    data = listed(run_inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud: {endpoint: %s, label_selector: env}
        robot: {endpoint: %s}
        """ % (api.cloud_url, api.robot_url)), [
        "[WARNING]: Hetzner servers share the name web1: Cloud server 1000 as web1_cloud1000 and Robot server 321 as "
        "web1_robot321, so host_vars/web1 applies to none of them. Rename all but one of them, or move the variables to "
        "host_vars/web1_cloud1000"])
    hostvars = data["_meta"]["hostvars"]
    assert sorted(hostvars) == ["cloud001", "cloud005", "web1_cloud1000", "web1_robot321"]
    assert [name for name, variables in hostvars.items() if "deploy_secret" in variables] == []


def test_pagination_that_does_not_end_stops_with_a_clear_line(api, tmp_path):
    api.cloud.claimed_pages = 1500  # more than the client's bound of 1000
    proc = run_inventory(tmp_path, "plugin: ansinix.nixos.hetzner\ncloud: {endpoint: %s}\n" % api.cloud_url)
    assert plugin_error(proc) == ("Hetzner Cloud answered GET /servers with 1000 pages and still names a next page; stopped there. "
                                  "Is cloud.endpoint (%s) the API's address?" % api.cloud_url)
    assert api.count("/v1/servers") == 1000


def test_an_answer_too_long_is_not_read(api, tmp_path):
    api.fail("/robot/server", 200, b"[" + b" " * (17 * 1024 * 1024) + b"]")
    proc = run_inventory(tmp_path, "plugin: ansinix.nixos.hetzner\nrobot: {endpoint: %s}\n" % api.robot_url)
    assert plugin_error(proc) == ("Hetzner Robot answered GET /server with more than 16 MiB; is robot.endpoint (%s) the API's "
                                  "address?" % api.robot_url)


def with_fake_endpoints(text, api, cache_dir):
    """An example source pointed at the fake APIs and a private cache directory."""
    text = re.sub(r"^cloud:.*$", lambda m: m.group(0) + "\n  endpoint: %s" % api.cloud_url, text, count=1, flags=re.M)
    text = re.sub(r"^robot:.*$", lambda m: m.group(0) + "\n  endpoint: %s" % api.robot_url, text, count=1, flags=re.M)
    return re.sub(r"^cache_connection:.*$", "cache_connection: %s" % cache_dir, text, count=1, flags=re.M)


def test_the_example_files_work(api, tmp_path):
    """inventory/hetzner.yml as it is, and with its credentials from a vault as docs/inventory.md says they may be,
    against the fake APIs."""
    api.robot.add_server(323, "old", status="ready")["cancelled"] = True
    with open(os.path.join(REPO_ROOT, "inventory", "hetzner.yml"), encoding="utf-8") as f:
        example = f.read()
    vaulted = example
    for lookup, variable in (("HCLOUD_TOKEN", "vault_hcloud_token"), ("HROBOT_API_USER", "vault_robot_user"),
                             ("HROBOT_API_PASSWORD", "vault_robot_password")):
        vaulted = vaulted.replace("\"{{ lookup('ansible.builtin.env', '%s') }}\"" % lookup, "\"{{ %s }}\"" % variable)
    assert vaulted.count("{{ vault_") == example.count("{{ vault_") + 3  # every credential replaced
    (tmp_path / "vault.yml").write_text("vault_hcloud_token: %s\nvault_robot_user: '%s'\nvault_robot_password: %s\n"
                                        % (CLOUD_TOKEN, ROBOT_USER, ROBOT_PASSWORD))
    for name, text, args in (("example", example, ()), ("vaulted", vaulted, ("-e", "@vault.yml"))):
        data = listed(run_inventory(tmp_path, with_fake_endpoints(text, api, tmp_path / ("cache-" + name)), "--list", *args,
                                    name=name + ".hetzner.yml",
                                    env={} if name == "example" else {"HCLOUD_TOKEN": "", "HROBOT_API_PASSWORD": ""}),
                      [NO_IPV4])
        hostvars = data["_meta"]["hostvars"]
        # Running servers labelled nixos, and the dedicated servers that are not cancelled.
        assert sorted(hostvars) == sorted(["cloud000", "cloud001", "cloud118", "cloud119", "cloud005", "dedi1"]), name
        assert hosts_of(data, "nixos") == sorted(hostvars), name
        assert hostvars["dedi1"]["nixos_configuration"] == "dedi1" and hostvars["cloud001"]["nixos_configuration"] == "mon"
        assert hosts_of(data, "env_prod") == ["cloud000", "cloud001"], name
        assert [r.query.get("label_selector") for r in api.requests if r.path == "/v1/servers"][-1] == ["nixos"]


# -- cache -------------------------------------------------------------------------------------------------------------

def test_warm_cache_makes_no_request_and_needs_no_credentials(api, tmp_path):
    cache_dir = tmp_path / "cache"
    config = """
        plugin: ansinix.nixos.hetzner
        cloud: {endpoint: %s, label_selector: %s}
        robot: {endpoint: %s, rescue_status: true}
        cache: true
        cache_plugin: ansible.builtin.jsonfile
        cache_connection: %s
        cache_timeout: 600
        """
    first = listed(run_inventory(tmp_path, config % (api.cloud_url, "env", api.robot_url, cache_dir)))
    made = api.count()
    assert made == 4 and sorted(first["_meta"]["hostvars"]) == ["cloud000", "cloud001", "cloud005", "dedi1"]
    cached = "".join(p.read_text() for p in cache_dir.iterdir())
    assert "dedi1" in cached and not any(secret in cached for secret in SECRETS + (ROBOT_USER,))
    # No request, and no credential needed: none is even rendered.
    second = listed(run_inventory(tmp_path, config % (api.cloud_url, "env", api.robot_url, cache_dir),
                                  env={"HCLOUD_TOKEN": "", "HROBOT_API_PASSWORD": ""}))
    assert api.count() == made and second == first
    # --flush-cache asks again; so does a changed question.
    listed(run_inventory(tmp_path, config % (api.cloud_url, "env", api.robot_url, cache_dir), "--list", "--flush-cache"))
    assert api.count() == 2 * made
    changed = listed(run_inventory(tmp_path, config % (api.cloud_url, "nixos=web", api.robot_url, cache_dir)), [NO_IPV4])
    assert api.count() == 2 * made + 5  # servers, networks (now a server is in one), Robot's list, two rescue states
    assert sorted(changed["_meta"]["hostvars"]) == ["cloud000", "cloud005", "cloud118", "cloud119", "dedi1"]


# -- rate limits, server errors and timeouts, for real --------------------------------------------------------------

def test_rate_limits_server_errors_and_timeouts_are_waited_out(api, tmp_path):
    api.fail("/v1/servers", 429, {"error": {"code": "rate_limit_exceeded", "message": "limit"}}, headers={"Retry-After": "1"})
    api.cloud.set_rate_limit(2, refill_per_second=1.0)  # then pages 1 and 2 pass, and page 3 finds the bucket empty
    api.fail("/v1/networks", 503, {"error": {"code": "unavailable", "message": "maintenance"}})
    api.robot.rate_limit = (1, 1)  # one request a second: each rescue state waits for the request before it
    api.fail("/robot/boot/321/rescue", 200, {"rescue": {"active": False}}, delay=4)  # longer than timeout: 2
    data = listed(run_inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud: {endpoint: %s}
        robot: {endpoint: %s, rescue_status: true}
        timeout: 2
        """ % (api.cloud_url, api.robot_url)), [SHARED, NO_IPV4])
    assert len(data["_meta"]["hostvars"]) == 122 and data["_meta"]["hostvars"]["dedi1"]["hetzner_rescue"] is True

    def statuses(path):
        return [status for answered, status in api.answers if answered == path]
    assert statuses("/v1/servers")[:3] == [429, 200, 200] and statuses("/v1/servers")[3:] in ([429, 200], [200])
    assert 429 in statuses("/v1/servers")[1:]  # the bucket ran dry at least once, and was waited out
    assert statuses("/v1/networks")[0] == 503 and statuses("/v1/networks")[-1] == 200
    assert statuses("/robot/server") == [200]
    assert api.count("/robot/boot/321/rescue") == 2  # the first got no answer in time
    assert statuses("/robot/boot/322/rescue") == [403, 200]  # RATE_LIMIT_EXCEEDED, then its interval waited


# -- bad input: one clear line, no secret, no traceback ------------------------------------------------------------

BAD = [
    ("bad_token", {"HCLOUD_TOKEN": WRONG_TOKEN}, "cloud: {endpoint: <CLOUD>}",
     "Hetzner Cloud rejected the API token (401 unauthorized: unable to authenticate): check cloud.token (or HCLOUD_TOKEN)"),
    ("no_token", {"HCLOUD_TOKEN": ""}, "cloud: {endpoint: <CLOUD>}",
     "no Hetzner Cloud API token: set cloud.token (or HCLOUD_TOKEN) (a project's token from Security > API tokens)"),
    ("bad_robot", {"HROBOT_API_PASSWORD": WRONG_PASSWORD}, "robot: {endpoint: <ROBOT>}",
     "Hetzner Robot rejected the webservice user and password (401 UNAUTHORIZED: Unauthorized): check robot.user and "
     "robot.password (or HROBOT_API_USER and HROBOT_API_PASSWORD)"),
    ("malformed_cloud", {}, "cloud: {endpoint: <CLOUD>}",
     "Hetzner Cloud answered GET /servers with something that is not JSON ('{\"servers\": [{\"id\": 1000, \"name\": \"cloud000\"'); is cloud.endpoint "
     "(<CLOUD>) the API's address?"),
    ("malformed_robot", {}, "robot: {endpoint: <ROBOT>}",
     "Hetzner Robot answered GET /server with something that is not JSON ('<html><body>Service Unavailable</body></html>'); is robot.endpoint "
     "(<ROBOT>) the API's address?"),
    ("rate_limit_too_long", {}, "cloud: {endpoint: <CLOUD>}",
     "Hetzner Cloud: GET /servers hit the rate limit; retrying would wait 3600 s in all, more than max_wait (120 s) allows; "
     "try again later or raise max_wait"),
    ("server_errors", {}, "cloud: {endpoint: <CLOUD>}\nmax_retries: 1",
     "Hetzner Cloud: GET /servers still failed after 2 attempts in 1 s (last: 500 server_error: oops); try again later"),
    ("unreachable", {}, "cloud: {endpoint: 'http://127.0.0.1:<CLOSED>/v1'}",
     "Hetzner Cloud at http://127.0.0.1:<CLOSED>/v1: GET /servers could not be reached: Connection refused (check cloud.endpoint "
     "and the network)"),
    ("plain_http", {}, "cloud: {endpoint: 'http://192.0.2.1:1/v1'}\ntimeout: 1\nmax_retries: 0",
     "cloud.endpoint must be an https URL, such as https://api.hetzner.cloud/v1: plain http would send the credentials "
     "unencrypted (it is allowed only to a loopback address such as 127.0.0.1)"),
    ("no_sections", {}, "connect_with: public_ipv6",
     "give a cloud: section (Hetzner Cloud), a robot: section (Hetzner Robot), or both"),
    ("unknown_option", {}, "cloud: {endpoint: <CLOUD>}\nconect_with: name",
     "unknown option 'conect_with' (did you mean connect_with?)"),
    ("unknown_setting", {}, "cloud: {endpoint: <CLOUD>, tokn: x}",
     "cloud.tokn is not a setting (did you mean token?); the settings are token, endpoint, label_selector, status, locations, "
     "server_types, network"),
    ("bad_status", {}, "cloud: {endpoint: <CLOUD>, status: [runing]}",
     "cloud.status: 'runing' is not a server status (did you mean running?); the statuses are initializing, starting, running, "
     "stopping, off, deleting, migrating, rebuilding, unknown"),
    ("bad_list", {}, "cloud: {endpoint: <CLOUD>, locations: fsn1}",
     "cloud.locations: must be a list of names, such as [fsn1, nbg1]"),
    ("bad_endpoint", {}, "robot: {endpoint: robot-ws.your-server.de}",
     "robot.endpoint must be an http(s) URL with no credentials in it, such as https://robot-ws.your-server.de"),
    ("bad_filter", {}, "cloud: {endpoint: <CLOUD>}\nfilter: 'labels.[[['",
     "filter 'labels.[[[' is not a JMESPath expression: it ends too early"),
    ("bad_filter_syntax", {}, "cloud: {endpoint: <CLOUD>}\nfilter: 'labels[[['",
     "filter 'labels[[[' is not a JMESPath expression: Expecting: star, got: lbracket at column 7"),
    ("bad_network", {}, "cloud: {endpoint: <CLOUD>, network: nope}",
     "cloud.network 'nope': the project has no such network (it has backend)"),
    ("private_without_network", {}, "cloud: {endpoint: <CLOUD>}\nconnect_with: private_ipv4",
     "connect_with: private_ipv4 needs cloud.network, the private network whose address to use"),
    ("undefined_template", {}, "cloud: {endpoint: <CLOUD>, token: '{{ vault_hcloud_token }}'}",
     "cloud.token: its value could not be rendered: 'vault_hcloud_token' is undefined"),
    ("bad_timeout", {}, "cloud: {endpoint: <CLOUD>}\ntimeout: 0",
     "timeout must be at least 1"),
]


@pytest.mark.parametrize("case,env,section,message", BAD, ids=[case[0] for case in BAD])
def test_bad_input_gives_one_clear_line_without_secrets(api, tmp_path, case, env, section, message):
    if case == "malformed_cloud":
        api.fail("/v1/servers", 200, b'{"servers": [{"id": 1000, "name": "cloud000"')
    elif case == "malformed_robot":
        api.fail("/robot/server", 200, b"<html><body>Service Unavailable</body></html>")
    elif case == "rate_limit_too_long":
        api.fail("/v1/servers", 429, {"error": {"code": "rate_limit_exceeded", "message": "limit"}}, headers={"Retry-After": "3600"})
    elif case == "server_errors":
        api.fail("/v1/servers", 500, {"error": {"code": "server_error", "message": "oops"}}, times=5)
    port = str(closed_port())
    section = section.replace("<CLOUD>", api.cloud_url).replace("<ROBOT>", api.robot_url).replace("<CLOSED>", port)
    message = message.replace("<CLOUD>", api.cloud_url).replace("<ROBOT>", api.robot_url).replace("<CLOSED>", port)
    proc = run_inventory(tmp_path, "plugin: ansinix.nixos.hetzner\n%s\n" % section, "--list", "-vvv", env=env)
    assert plugin_error(proc) == message
    output = proc.stdout + proc.stderr
    assert not [secret for secret in SECRETS if secret in output]
    assert "Traceback" not in output


# -- credentials from templates ------------------------------------------------------------------------------------

def test_credentials_from_a_lookup_extra_vars_and_inline_vault(api, tmp_path):
    lookup = listed(run_inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud:
          endpoint: %s
          token: "{{ lookup('ansible.builtin.env', 'MY_TOKEN') }}"
          label_selector: "nixos=mon"
        """ % api.cloud_url, env={"HCLOUD_TOKEN": "", "MY_TOKEN": CLOUD_TOKEN}))
    assert list(lookup["_meta"]["hostvars"]) == ["cloud001"]

    (tmp_path / "secrets.yml").write_text("robot_user: '%s'\nrobot_password: '%s'\n" % (ROBOT_USER, ROBOT_PASSWORD))
    extra = listed(run_inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        robot:
          endpoint: %s
          user: "{{ robot_user }}"
          password: "{{ robot_password }}"
        """ % api.robot_url, "--list", "-e", "@secrets.yml", env={"HROBOT_API_USER": "", "HROBOT_API_PASSWORD": ""}))
    assert sorted(extra["_meta"]["hostvars"]) == ["cloud005", "dedi1"]

    (tmp_path / "vault-pass").write_text("correct horse\n")
    encrypted = subprocess.run(["ansible-vault", "encrypt_string", "--vault-password-file", str(tmp_path / "vault-pass"),
                                CLOUD_TOKEN, "--name", "token"], env=harness.ansible_env(), capture_output=True, text=True,
                               check=True).stdout
    config = "plugin: ansinix.nixos.hetzner\ncloud:\n  endpoint: %s\n  label_selector: nixos=mon\n%s" % (
        api.cloud_url, textwrap.indent(encrypted, "  "))
    vaulted = listed(run_inventory(tmp_path, config, "--list", "--vault-password-file", str(tmp_path / "vault-pass"),
                                   env={"HCLOUD_TOKEN": ""}))
    assert list(vaulted["_meta"]["hostvars"]) == ["cloud001"]
    # Without the vault password: a clear line, and no request was made with a wrong token.
    before = api.count()
    proc = run_inventory(tmp_path, config, env={"HCLOUD_TOKEN": ""})
    assert plugin_error(proc).startswith("cloud.token: its value could not be rendered: ")
    assert plugin_error(proc).endswith("; give the vault password (--ask-vault-pass or --vault-password-file)")
    assert api.count() == before
