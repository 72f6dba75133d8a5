"""The inventory plugin's mapping from API objects to hosts, names and addresses."""
import pytest

from ansible_collections.ansinix.nixos.plugins.inventory.hetzner import (
    cloud_hostvars, cloud_wanted, connection_address, first_ipv6, first_line, group_suffix, host_names, ipv6_network, robot_hostvars,
    robot_location,
)
from ansinix_test.fakehetzner import CloudState, RobotState


def test_addresses_and_locations():
    assert first_ipv6("2001:db8:1::/64") == "2001:db8:1::1"
    assert first_ipv6("2a01:4f8:111:4221::") == "2a01:4f8:111:4221::1"  # Robot gives the net without a mask
    assert first_ipv6("2001:db8:0:0:0:0:0:0/64") == "2001:db8::1"
    assert first_ipv6(None) is None and first_ipv6("not-an-address") is None and first_ipv6("192.0.2.0/24") is None
    assert ipv6_network("2a01:4f8:111:4221::") == "2a01:4f8:111:4221::/64" and ipv6_network("x") is None
    assert robot_location("FSN1-DC14") == "fsn1" and robot_location(None) is None
    assert group_suffix("eu-central.1") == "eu_central_1"


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


def test_names_cloud_first_then_robot_by_number():
    cloud = [{"name": "web"}, {"name": "db"}]
    robot = [{"server_number": 9, "server_name": "web"}, {"server_number": 3, "server_name": "box"},
             {"server_number": 5, "server_name": "box"}, {"server_number": 7, "server_name": ""}]
    hosts, renamed = host_names(cloud, robot)
    assert [(name, kind) for name, kind, _server in hosts] == [
        ("web", "cloud"), ("db", "cloud"), ("box", "robot"), ("box_robot5", "robot"), ("robot7", "robot"), ("web_robot9", "robot")]
    assert renamed == [("box", "box_robot5"), ("web", "web_robot9")]
    # The same answer in another order gives the same names.
    assert host_names(cloud, list(reversed(robot))) == (hosts, renamed)


@pytest.mark.parametrize("connect_with,expected", [
    ("public_ipv4", "192.0.2.1"), ("public_ipv6", "2001:db8::1"), ("private_ipv4", "10.0.0.5"), ("name", "web1"),
])
def test_connection_address(connect_with, expected):
    hostvars = {"hetzner_ipv4": "192.0.2.1", "hetzner_ipv6": "2001:db8::1", "hetzner_private_ipv4": "10.0.0.5", "hetzner_name": "web1"}
    assert connection_address(hostvars, connect_with) == expected


def test_first_line_of_errors():
    assert first_line(ValueError("Bad token\nmore")) == "Bad token"
    assert first_line(ValueError('Parse error at column 2, token "[" (LBRACKET), for expression:\n"a[["')) == \
        'Parse error at column 2, token "[" (LBRACKET)'
