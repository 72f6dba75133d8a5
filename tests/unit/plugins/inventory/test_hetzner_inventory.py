"""The inventory plugin's mapping from API objects to hosts, names and addresses."""
import pytest

from ansible_collections.ansinix.nixos.plugins.inventory.hetzner import first_line
from ansible_collections.ansinix.nixos.plugins.plugin_utils.hetzner_hosts import (
    cloud_hostvars, cloud_wanted, connection_address, first_ipv6, host_names, invalid_name_warning, ipv6_network,
    is_host_name, is_label_value, location_group, robot_hostvars, robot_location, shared_name_warning,
)
from ansinix_test.fakehetzner import CloudState, RobotState


def test_addresses_and_locations():
    assert first_ipv6("2001:db8:1::/64") == "2001:db8:1::1"
    assert first_ipv6("2a01:4f8:111:4221::") == "2a01:4f8:111:4221::1"  # Robot gives the net without a mask
    assert first_ipv6("2001:db8:0:0:0:0:0:0/64") == "2001:db8::1"
    assert first_ipv6(None) is None and first_ipv6("not-an-address") is None and first_ipv6("192.0.2.0/24") is None
    assert ipv6_network("2a01:4f8:111:4221::") == "2a01:4f8:111:4221::/64" and ipv6_network("x") is None
    assert robot_location("FSN1-DC14") == "fsn1" and robot_location(None) is None
    assert location_group("fsn1") == "hetzner_fsn1" and location_group("us-east") == "hetzner_us_east"
    assert location_group("{{ 7 * 6 }}") is None and location_group("eu.central") is None and location_group(None) is None


def test_cloud_server_variables():
    cloud = CloudState()
    backend, other = cloud.add_network("backend"), cloud.add_network("other")
    server = cloud.add_server(name="web1", labels={"nixos": "web"}, location="hel1", server_type="cpx31",
                              networks={"other": "10.1.0.2", "backend": "10.0.0.5"}, ipv4=False)
    networks = {backend["id"]: backend, other["id"]: other}
    hostvars = cloud_hostvars(server, networks, backend["id"])
    assert hostvars == {
        "hetzner_kind": "cloud", "hetzner_id": 1000, "hetzner_name": "web1", "hetzner_status": "running",
        "hetzner_location": "hel1", "hetzner_type": "cpx31", "hetzner_labels": {"nixos": "web"},
        "hetzner_ipv4": None, "hetzner_ipv6": "2001:db8::1", "hetzner_ipv6_network": "2001:db8::/64",
        "hetzner_private_ipv4": "10.0.0.5", "hetzner_private_networks": {"other": "10.1.0.2", "backend": "10.0.0.5"},
        "hetzner_image": "debian-12", "hetzner_rescue": False,
    }
    # Without a network setting, the first private network's address.
    assert cloud_hostvars(server, networks)["hetzner_private_ipv4"] == "10.1.0.2"
    # Older answers carry the location only under the datacenter.
    del server["location"]
    assert cloud_hostvars(server, networks)["hetzner_location"] == "hel1"


def test_cloud_server_of_an_odd_shape_gives_what_it_has():
    hostvars = cloud_hostvars({"id": 7, "name": "odd", "private_net": {"network": 1}, "labels": ["x"], "image": "debian",
                               "public_net": {"ipv4": "192.0.2.7", "ipv6": {"ip": "not an address"}}}, {})
    assert hostvars["hetzner_name"] == "odd" and hostvars["hetzner_labels"] == {} and hostvars["hetzner_private_networks"] == {}
    assert hostvars["hetzner_ipv4"] is None and hostvars["hetzner_ipv6"] is None and hostvars["hetzner_ipv6_network"] is None
    assert hostvars["hetzner_image"] is None


def test_cloud_settings_filter_locations_types_and_network():
    cloud = CloudState()
    net = cloud.add_network("backend")
    inside = cloud_hostvars(cloud.add_server(location="fsn1", networks={"backend": "10.0.0.2"}), {net["id"]: net}, net["id"])
    outside = cloud_hostvars(cloud.add_server(location="fsn1", server_type="cax11"), {net["id"]: net}, net["id"])
    assert cloud_wanted(inside, {"locations": ["fsn1"], "network": "backend"}, net["id"])
    assert not cloud_wanted(outside, {"network": "backend"}, net["id"])
    assert not cloud_wanted(inside, {"locations": ["nbg1"]}, None)
    assert cloud_wanted(outside, {"server_types": ["cax11"]}, None) and not cloud_wanted(inside, {"server_types": ["cax11"]}, None)


def test_robot_server_variables():
    robot = RobotState()
    server = robot.add_server(321, "dedi1", dc="HEL1-DC2")
    assert robot_hostvars(server, True) == {
        "hetzner_kind": "robot", "hetzner_id": 321, "hetzner_name": "dedi1", "hetzner_status": "ready",
        "hetzner_location": "hel1", "hetzner_type": "AX41-NVMe", "hetzner_labels": {}, "hetzner_ipv4": "198.51.100.72",
        "hetzner_ipv6": "2001:db8:ff41::1", "hetzner_ipv6_network": "2001:db8:ff41::/64", "hetzner_private_ipv4": None,
        "hetzner_private_networks": {}, "hetzner_image": None, "hetzner_rescue": True,
    }
    assert robot_hostvars(server)["hetzner_rescue"] is None  # not asked


def test_names_that_several_servers_carry_go_to_none_of_them():
    cloud = [{"id": 1, "name": "web"}, {"id": 2, "name": "db"}]
    robot = [{"server_number": 9, "server_name": "WEB"}, {"server_number": 3, "server_name": "box"},
             {"server_number": 5, "server_name": "box"}, {"server_number": 7, "server_name": ""}]
    hosts, invalid, shared = host_names(cloud, robot)
    assert [(name, kind) for name, kind, _server in hosts] == [
        ("web_cloud1", "cloud"), ("db", "cloud"), ("box_robot3", "robot"), ("box_robot5", "robot"), ("robot7", "robot"),
        ("WEB_robot9", "robot")]
    assert invalid == []  # a Robot server without a name is robotNUMBER, as documented
    assert shared == [("box", [("robot", 3, "box_robot3"), ("robot", 5, "box_robot5")]),
                      ("web", [("cloud", 1, "web_cloud1"), ("robot", 9, "WEB_robot9")])]
    # The same answer in another order gives the same names.
    assert host_names(cloud, list(reversed(robot))) == (hosts, invalid, shared)
    assert shared_name_warning(*shared[1]) == (
        "Hetzner servers share the name web: Cloud server 1 as web_cloud1 and Robot server 9 as WEB_robot9, so host_vars/web "
        "applies to none of them. Rename all but one of them, or move the variables to host_vars/web_cloud1")


@pytest.mark.parametrize("name", ["web1", "Web1", "web-1.example.org", "a" * 63, ".".join(["a" * 63] * 3) + "." + "b" * 61, "123"])
def test_host_names(name):
    assert is_host_name(name)


@pytest.mark.parametrize("name", ["", None, 17, "-web", "web-", "web_1", "a" * 64, ".".join(["a" * 63] * 4), "web..1", "web.",
                                  "web 1", "web1\n", "{{ lookup('pipe', 'id > /tmp/x') }}", "-oProxyCommand=x", "w\u00e9b",
                                  "localhost", "LocalHost", "all", "ungrouped"])
def test_not_host_names(name):
    assert not is_host_name(name)


def test_a_name_that_is_no_host_name_gives_the_fallback_and_says_how_to_rename():
    hostile = "{{ lookup('pipe', 'id > /tmp/x') }}"
    cloud = [{"id": 1000, "name": "robot456"}, {"id": 1001, "name": "\x1b[31mred"}]
    robot = [{"server_number": 456, "server_name": hostile}, {"server_number": 457, "server_name": "localhost"}]
    hosts, invalid, shared = host_names(cloud, robot)
    # robot456 is a Cloud server's name and the fallback of another server: neither gets it.
    assert [name for name, _kind, _server in hosts] == ["robot456_cloud1000", "cloud1001", "robot456_robot456", "robot457"]
    assert invalid == [("cloud", 1001, "\x1b[31mred", "cloud1001"), ("robot", 456, hostile, "robot456"),
                       ("robot", 457, "localhost", "robot457")]
    assert shared == [("robot456", [("cloud", 1000, "robot456_cloud1000"), ("robot", 456, "robot456_robot456")])]
    assert invalid_name_warning(*invalid[1]) == (
        "Hetzner Robot server 456 is named \"{{ lookup('pipe', 'id > /tmp/x') }}\", which is not a host name (letters, digits "
        "and '-' in dot-separated labels of at most 63 characters): it is listed as robot456. Rename it in Robot (Server, "
        "the server's name) to use its name")
    assert "\x1b" not in invalid_name_warning(*invalid[0]) and '"\\u001b[31mred"' in invalid_name_warning(*invalid[0])


def test_label_values():
    assert is_label_value("web") and is_label_value("web-1.prod_2") and is_label_value("W")
    for value in ("", "-web", "web ", "$(id)", "a;b", "{{ x }}", "a" * 64, None):
        assert not is_label_value(value)


@pytest.mark.parametrize("connect_with,expected", [
    ("public_ipv4", "192.0.2.1"), ("public_ipv6", "2001:db8::1"), ("private_ipv4", "10.0.0.5"), ("name", "web1"),
])
def test_connection_address(connect_with, expected):
    hostvars = {"hetzner_ipv4": "192.0.2.1", "hetzner_ipv6": "2001:db8::1", "hetzner_private_ipv4": "10.0.0.5", "hetzner_name": "web1"}
    assert connection_address(hostvars, connect_with) == expected


def test_a_name_that_is_no_host_name_is_no_address():
    hostvars = {"hetzner_ipv4": None, "hetzner_ipv6": None, "hetzner_private_ipv4": None, "hetzner_name": "-oProxyCommand=touch /tmp/x"}
    assert connection_address(hostvars, "name") is None


def test_first_line_of_errors():
    assert first_line(ValueError("Bad token\nmore")) == "Bad token"
    assert first_line(ValueError('Parse error at column 2, token "[" (LBRACKET), for expression:\n"a[["')) == \
        'Parse error at column 2, token "[" (LBRACKET)'
