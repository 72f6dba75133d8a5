"""The Hetzner clients' decisions, without a network."""
import json

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.hetzner import CloudClient, HetznerError, RobotClient
from ansible_collections.ansinix.nixos.plugins.inventory.hetzner import ipv6_host, robot_location


def test_cloud_retry_decisions():
    client = CloudClient("t", endpoint="http://127.0.0.1:1")
    assert client._retry_after(429, {"Retry-After": "3"}, b"") == 3
    assert client._retry_after(503, {}, b"") == 2
    assert client._retry_after(401, {}, b"") is None
    with pytest.raises(HetznerError) as err:
        client._error(401, b'{"error": {"message": "unable to authenticate"}}', "/servers")
    assert "check cloud.token or HCLOUD_TOKEN" in err.value.msg and "t" not in err.value.msg.split("(")[0].split()


def test_robot_rate_limit_is_retried_other_403_is_not():
    client = RobotClient("u", "p", endpoint="http://127.0.0.1:1")
    limited = json.dumps({"error": {"status": 403, "code": "RATE_LIMIT_EXCEEDED", "interval": 7}}).encode()
    assert client._retry_after(403, {}, limited) == 7
    assert client._retry_after(403, {}, b'{"error": {"code": "FORBIDDEN"}}') is None


def test_missing_credentials_say_where_to_put_them():
    with pytest.raises(HetznerError) as err:
        CloudClient("")
    assert "HCLOUD_TOKEN" in err.value.msg
    with pytest.raises(HetznerError) as err:
        RobotClient("user", None)
    assert "robot.password" in err.value.msg


def test_unreachable_endpoint_is_retried_then_explained():
    waits = []
    client = CloudClient("t", endpoint="http://127.0.0.1:1", max_retries=2, sleep=waits.append)
    with pytest.raises(HetznerError) as err:
        client.servers()
    assert "could not be reached after 3 attempts" in err.value.msg and waits == [2, 4]


def test_address_helpers():
    assert ipv6_host("2001:db8:1::/64") == "2001:db8:1::1"
    assert ipv6_host(None) is None
    assert robot_location("FSN1-DC14") == "fsn1"
