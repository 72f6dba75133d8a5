"""ansible-inventory with ansinix.nixos.hetzner against a fake Hetzner Cloud and Robot on 127.0.0.1."""
import json
import subprocess
import textwrap

import pytest

from ansinix_test.ansible import ansible_env
from ansinix_test.fakehetzner import CLOUD_TOKEN, ROBOT_PASSWORD, ROBOT_USER, FakeHetzner, robot_server


@pytest.fixture
def api():
    with FakeHetzner() as fake:
        fake.add_cloud_servers(118)
        fake.cloud_servers[0]["labels"] = {"nixos": "web", "env": "prod"}
        fake.cloud_servers[1]["labels"] = {"nixos": "mon", "env": "prod"}
        fake.networks.append({"id": 7, "name": "backend"})
        fake.add_cloud_servers(2, labels={"nixos": "web"}, location="hel1", server_type="cpx31", private={7: "10.0.0.5"})
        fake.robot_servers.append(robot_server(321, "dedi1"))
        fake.robot_servers.append(robot_server(322, "cloud005", dc="HEL1-DC2"))  # same name as a Cloud server
        fake.robot_rescue[321] = True
        yield fake


def inventory(tmp_path, config, *args, env=None):
    path = tmp_path / "test.hetzner.yml"
    path.write_text(textwrap.dedent(config))
    extra = {"HCLOUD_TOKEN": CLOUD_TOKEN, "ROBOT_USER": ROBOT_USER, "ROBOT_PASSWORD": ROBOT_PASSWORD}
    extra.update(env or {})
    proc = subprocess.run(["ansible-inventory", "-i", str(path)] + list(args or ["--list"]), env=ansible_env(extra=extra),
                          capture_output=True, text=True, timeout=300, check=False)
    return proc


def plain(value):
    """ansible-inventory --list marks values that came from outside as {"__ansible_unsafe": value}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def listed(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The only warning expected is the documented one for a name in both Cloud and Robot.
    warnings = [line for line in proc.stderr.splitlines() if "[WARNING]" in line and "both have a server named" not in line]
    assert not warnings, proc.stderr
    return plain(json.loads(proc.stdout))


def test_cloud_and_robot_hosts_groups_and_vars(api, tmp_path):
    proc = inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud:
          endpoint: %s
        robot:
          endpoint: %s
          rescue_status: true
        """ % (api.cloud_url, api.robot_url))
    data = listed(proc)
    assert "Hetzner Cloud and Robot both have a server named 'cloud005'; the Robot server is 'cloud005_robot322'" in proc.stderr
    hostvars = data["_meta"]["hostvars"]
    assert len(hostvars) == 122
    assert len(data["hetzner_cloud"]["hosts"]) == 120 and sorted(data["hetzner_robot"]["hosts"]) == ["cloud005_robot322", "dedi1"]
    # 120 servers at 50 a page: all three pages were read, and nothing else of the Cloud API.
    assert api.count("/v1/servers") == 3 and api.count("/v1/networks") == 1
    web = hostvars["cloud000"]
    assert web["ansible_host"] == "192.0.2.1" and web["nixos_configuration"] == "web"
    assert web["hetzner_kind"] == "cloud" and web["hetzner_id"] == 1000 and web["hetzner_location"] == "fsn1"
    assert web["hetzner_labels"] == {"nixos": "web", "env": "prod"} and web["hetzner_ipv6"] == "2001:db8:0::1"
    assert web["hetzner_type"] == "cx22" and web["hetzner_image"] == "debian-12" and web["hetzner_rescue"] is False
    assert hostvars["cloud119"]["hetzner_private_ipv4"] == {"backend": "10.0.0.5"}
    dedi = hostvars["dedi1"]
    assert dedi["hetzner_kind"] == "robot" and dedi["hetzner_id"] == 321 and dedi["ansible_host"] == "198.51.100.72"
    assert dedi["hetzner_location"] == "fsn1" and dedi["hetzner_rescue"] is True and dedi["hetzner_type"] == "AX41-NVMe"
    assert sorted(data["nixos"]["hosts"]) == ["cloud000", "cloud001", "cloud118", "cloud119"]
    assert "dedi1" in data["hetzner_fsn1"]["hosts"] and "cloud002" in data["hetzner_hel1"]["hosts"]
    assert set(data["hetzner"]["hosts"]) == set(hostvars)


def test_filters_constructed_and_graph(api, tmp_path):
    config = """
        plugin: ansinix.nixos.hetzner
        cloud:
          endpoint: %s
          label_selector: nixos
          locations: [hel1]
          network: backend
        connect_with: private_ipv4
        filter: "server_type.name == 'cpx31'"
        compose:
          deploy_role: "'web-' ~ hetzner_location"
        keyed_groups:
          - key: hetzner_type
            prefix: type
        """ % api.cloud_url
    data = listed(inventory(tmp_path, config))
    assert sorted(data["_meta"]["hostvars"]) == ["cloud118", "cloud119"]
    assert data["_meta"]["hostvars"]["cloud119"]["ansible_host"] == "10.0.0.5"
    assert data["_meta"]["hostvars"]["cloud119"]["deploy_role"] == "web-hel1"
    assert sorted(data["type_cpx31"]["hosts"]) == ["cloud118", "cloud119"]
    assert any("label_selector=nixos" in r for r in api.requests)
    graph = inventory(tmp_path, config, "--graph")
    assert graph.returncode == 0 and "@nixos:" in graph.stdout and "|--cloud119" in graph.stdout


def test_warm_cache_makes_no_request(api, tmp_path):
    config = """
        plugin: ansinix.nixos.hetzner
        cloud: {endpoint: %s}
        robot: {endpoint: %s}
        cache: true
        cache_plugin: ansible.builtin.jsonfile
        cache_connection: %s
        cache_timeout: 600
        """ % (api.cloud_url, api.robot_url, tmp_path / "cache")
    first = listed(inventory(tmp_path, config))
    made = len(api.requests)
    assert made >= 4
    second = listed(inventory(tmp_path, config))
    assert len(api.requests) == made
    assert second == first


def test_rate_limits_and_server_errors_are_retried(api, tmp_path):
    api.queue("/v1/servers", 429, {"error": {"code": "rate_limit_exceeded", "message": "limit"}}, headers={"Retry-After": "1"})
    api.queue("/v1/servers", 503, {"error": {"code": "unavailable", "message": "maintenance"}})
    api.queue("/robot/server", 403, {"error": {"status": 403, "code": "RATE_LIMIT_EXCEEDED", "max_request": 200, "interval": 1,
                                               "message": "Rate limit exceeded"}})
    data = listed(inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud: {endpoint: %s}
        robot: {endpoint: %s}
        """ % (api.cloud_url, api.robot_url)))
    assert len(data["_meta"]["hostvars"]) == 122
    assert api.count("/v1/servers") == 5 and api.count("/robot/server") == 2


@pytest.mark.parametrize("case,message", [
    ("bad_token", "Hetzner Cloud rejected the API token (401"),
    ("bad_robot", "Hetzner Robot rejected the webservice user and password (401)"),
    ("malformed", "is not JSON"),
    ("rate_limit_too_long", "rate limit reached for /servers; it resets in 3600 s"),
    ("no_sections", "give a cloud: section, a robot: section, or both"),
    ("unknown_key", "cloud: unknown setting(s) tokn"),
    ("bad_filter", "is not a valid JMESPath expression"),
    ("bad_network", "cloud.network 'nope': no such network"),
])
def test_bad_credentials_and_config_give_clear_messages_without_secrets(api, tmp_path, case, message):
    cloud = "cloud: {endpoint: %s}" % api.cloud_url
    robot = "robot: {endpoint: %s}" % api.robot_url
    env = {}
    extra = ""
    if case == "bad_token":
        env["HCLOUD_TOKEN"] = "wrong-token-value-xyz"
    elif case == "bad_robot":
        env["ROBOT_PASSWORD"] = "wrong-password-value-xyz"
    elif case == "malformed":
        api.queue("/v1/servers", 200, b"<html>not json</html>")
    elif case == "rate_limit_too_long":
        api.queue("/v1/servers", 429, {"error": {"code": "rate_limit_exceeded"}}, headers={"Retry-After": "3600"})
    elif case == "no_sections":
        cloud = robot = ""
    elif case == "unknown_key":
        cloud = "cloud: {endpoint: %s, tokn: x}" % api.cloud_url
    elif case == "bad_filter":
        extra = "filter: \"labels.[[[\""
    elif case == "bad_network":
        cloud = "cloud: {endpoint: %s, network: nope}" % api.cloud_url
    proc = inventory(tmp_path, "plugin: ansinix.nixos.hetzner\n%s\n%s\n%s\n" % (cloud, robot, extra), env=env)
    output = proc.stdout + proc.stderr
    assert message in output, output
    for secret in (CLOUD_TOKEN, ROBOT_PASSWORD, "wrong-token-value-xyz", "wrong-password-value-xyz"):
        assert secret not in output
    assert "Traceback" not in output


def test_templated_credentials(api, tmp_path):
    data = listed(inventory(tmp_path, """
        plugin: ansinix.nixos.hetzner
        cloud:
          endpoint: %s
          token: "{{ lookup('ansible.builtin.env', 'MY_TOKEN') }}"
          label_selector: "nixos=mon"
        """ % api.cloud_url, env={"HCLOUD_TOKEN": "", "MY_TOKEN": CLOUD_TOKEN}))
    assert list(data["_meta"]["hostvars"]) == ["cloud001"]
