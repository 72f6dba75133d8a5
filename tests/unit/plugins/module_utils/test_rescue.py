"""The decisions of hetzner_rescue (module_utils/rescue.py), over real HTTP against the fake APIs on 127.0.0.1."""
import pytest

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.ansinix.nixos.plugins.module_utils import rescue
from ansible_collections.ansinix.nixos.plugins.module_utils.hetzner import CloudClient, HetznerError, RobotClient
from ansinix_test.fakehetzner import CLOUD_TOKEN, ROBOT_PASSWORD, ROBOT_USER, FakeHetzner, make_public_key


@pytest.fixture
def api():
    with FakeHetzner() as fake:
        fake.booted_log = []
        fake.on_reset = lambda kind, server, booted: fake.booted_log.append((kind, server, booted))
        yield fake


def params(fake, **given):
    """The module's parameters, validated and defaulted as AnsibleModule would."""
    given.setdefault("cloud", {"token": CLOUD_TOKEN, "endpoint": fake.cloud_url})
    given.setdefault("robot", {"user": ROBOT_USER, "password": ROBOT_PASSWORD, "endpoint": fake.robot_url})
    result = ArgumentSpecValidator(rescue.ARGUMENT_SPEC).validate(given)
    assert not result.error_messages, result.error_messages
    return result.validated_parameters


def posts(api):
    return [(r.method, r.path) for r in api.requests if r.method != "GET"]


class Clock:
    """A clock that the waits move."""

    def __init__(self):
        self.now = 0.0
        self.waits = []

    def sleep(self, seconds):
        self.waits.append(seconds)
        self.now += seconds

    def __call__(self):
        return self.now


# -- finding servers and keys ------------------------------------------------------------------------------------

def test_cloud_server_by_id_or_name(api):
    api.cloud.add_server(name="web1")
    api.cloud.add_server(name="4242")  # a name of digits: looked up as an id first, then as a name
    client = CloudClient(CLOUD_TOKEN, api.cloud_url)
    assert rescue.find_cloud_server(client, "1000")["name"] == "web1"
    assert rescue.find_cloud_server(client, " web1 ")["id"] == 1000
    assert rescue.find_cloud_server(client, "4242")["id"] == 1001
    with pytest.raises(HetznerError) as err:
        rescue.find_cloud_server(client, "77")
    assert err.value.msg == "the Hetzner Cloud project has no server with the id or name '77' (check server)"


def test_robot_server_by_number_or_unique_name(api):
    api.robot.add_server(321, "dedi1")
    api.robot.add_server(322, "twin")
    api.robot.add_server(323, "twin")
    client = RobotClient(ROBOT_USER, ROBOT_PASSWORD, api.robot_url)
    assert rescue.find_robot_server(client, 321)["server_name"] == "dedi1"
    assert rescue.find_robot_server(client, "dedi1")["server_number"] == 321
    with pytest.raises(HetznerError) as err:
        rescue.find_robot_server(client, "twin")
    assert err.value.msg == "2 Hetzner Robot servers are named 'twin' (numbers 322, 323): give server as the number"
    with pytest.raises(HetznerError) as err:
        rescue.find_robot_server(client, "999")
    assert err.value.msg == "the Hetzner Robot account has no server with the number or name '999' (check server)"


def test_keys_by_id_name_or_fingerprint_once_each(api):
    admin = api.cloud.add_ssh_key("admin", make_public_key("admin"))
    deploy = api.cloud.add_ssh_key("deploy", make_public_key("deploy"))
    client = CloudClient(CLOUD_TOKEN, api.cloud_url)
    assert rescue.cloud_key_ids(client, [deploy["fingerprint"], str(admin["id"]), "deploy"]) == [deploy["id"], admin["id"]]
    assert rescue.cloud_key_ids(client, []) == [] and api.count("/v1/ssh_keys") == 1  # no request without keys
    robot = RobotClient(ROBOT_USER, ROBOT_PASSWORD, api.robot_url)
    with pytest.raises(HetznerError) as err:
        rescue.robot_key_fingerprints(robot, ["admin"])
    assert err.value.msg == "the Hetzner Robot account has no SSH key 'admin' (its keys: none); give a key's name or fingerprint in ssh_keys"
    key = api.robot.add_key("admin", make_public_key("admin"))
    assert rescue.robot_key_fingerprints(robot, ["admin", key["fingerprint"]]) == [key["fingerprint"]]


def test_cloud_resets_are_actions_and_a_server_that_is_off_is_switched_on():
    assert rescue.cloud_reset_commands("none", "running") == ()
    assert rescue.cloud_reset_commands("hardware", "running") == ("reset",)
    assert rescue.cloud_reset_commands("software", "running") == ("reboot",)
    assert rescue.cloud_reset_commands("power", "running") == ("poweroff", "poweron")
    assert rescue.cloud_reset_commands("software", "off") == ("poweron",)
    assert rescue.cloud_reset_commands("none", "off") == ()


# -- waiting for Cloud actions -----------------------------------------------------------------------------------

def test_waits_poll_until_the_action_finishes(api):
    api.cloud.add_server()
    api.cloud.action_steps = 3
    client = CloudClient(CLOUD_TOKEN, api.cloud_url)
    clock = Clock()
    action = rescue.wait_for_action(client, client.reset(1000), 60, clock.sleep, clock)
    assert action["status"] == "success" and clock.waits == [0.5, 1, 2] and api.count("/v1/actions/") == 3


def test_waits_end_at_the_timeout_or_with_the_error(api):
    api.cloud.add_server()
    api.cloud.action_steps = 100
    client = CloudClient(CLOUD_TOKEN, api.cloud_url)
    clock = Clock()
    with pytest.raises(HetznerError) as err:
        rescue.wait_for_action(client, client.reset(1000), 5, clock.sleep, clock)
    assert err.value.msg.startswith("Hetzner Cloud action reset_server (id ") and "still running after 5 s (wait_timeout)" in err.value.msg
    assert clock.waits == [0.5, 1, 2, 1.5] and clock.now == 5
    api.cloud.action_steps = 1
    api.cloud.fail_action("reset_server", "action_failed", "boom")
    with pytest.raises(HetznerError) as err:
        rescue.wait_for_action(client, client.reset(1000), 5, clock.sleep, clock)
    assert err.value.msg.endswith("failed: action_failed: boom")


# -- the whole task ----------------------------------------------------------------------------------------------

def test_robot_replaces_a_rescue_with_other_keys_and_keeps_the_same(api):
    api.robot.add_server(321, "dedi1")
    key = api.robot.add_key("admin", make_public_key("admin"))
    first = rescue.run(params(api, api="robot", server="321"))
    assert first["changed"] and first["root_password"] == api.robot.rescue[321]["password"]
    kept = rescue.run(params(api, api="robot", server="dedi1"))
    assert not kept["changed"] and kept["root_password"] == first["root_password"] and kept["actions"] == []
    replaced = rescue.run(params(api, api="robot", server="dedi1", ssh_keys=["admin"]))
    assert replaced["changed"] and [a["command"] for a in replaced["actions"]] == ["disable_rescue", "enable_rescue"]
    assert api.robot.rescue[321]["authorized_key"][0]["key"]["fingerprint"] == key["fingerprint"]
    other_os = rescue.run(params(api, api="robot", server="dedi1", ssh_keys=["admin"], os="vkvm"), check_mode=True)
    assert other_os["changed"] and other_os["would_enable"] and not other_os["would_disable"] and other_os["root_password"] is None
    assert posts(api) == [("POST", "/robot/boot/321/rescue"), ("DELETE", "/robot/boot/321/rescue"), ("POST", "/robot/boot/321/rescue")]


def test_robot_reset_without_rescue_boots_normally(api):
    api.robot.add_server(321, "dedi1")
    result = rescue.run(params(api, api="robot", server="dedi1", rescue=False, reset="software"))
    assert result["changed"] and result["reset"] == "software" and result["root_password"] is None
    assert api.robot.resets == [(321, "sw")] and [(k, b) for k, _s, b in api.booted_log] == [("robot", None)]


def test_cloud_enable_then_power_cycle(api):
    server = api.cloud.add_server(name="web1")
    result = rescue.run(params(api, api="cloud", server="web1", reset="power"))
    assert [a["command"] for a in result["actions"]] == ["enable_rescue", "stop_server", "start_server"]
    assert api.cloud.resets == [(1000, "poweroff"), (1000, "poweron")] and server["status"] == "running"
    [(kind, booted_server, booted)] = api.booted_log
    assert (kind, booted_server["id"], booted["password"]) == ("cloud", 1000, result["root_password"])
    assert result["rescue_active"] is True and server["rescue_enabled"] is False  # the boot used it up


def test_cloud_without_wait_still_waits_before_the_reset(api):
    api.cloud.add_server(name="web1")
    api.cloud.action_steps = 1
    clock = Clock()
    client = CloudClient(CLOUD_TOKEN, api.cloud_url)
    result = rescue.cloud_rescue(client, params(api, api="cloud", server="web1", reset="hardware", wait=False), sleep=clock.sleep, clock=clock)
    assert [(a["command"], a["status"]) for a in result["actions"]] == [("enable_rescue", "success"), ("reset_server", "running")]


def test_cloud_check_mode_sends_nothing(api):
    api.cloud.add_server(name="web1", status="off", rescue_enabled=True)
    result = rescue.run(params(api, api="cloud", server="web1", rescue=False, reset="hardware"), check_mode=True)
    assert (result["would_enable"], result["would_disable"], result["would_reset"]) == (False, True, "hardware")
    assert result["changed"] and result["actions"] == [] and result["reset"] is None and posts(api) == []


def test_negative_wait_timeout_is_refused(api):
    with pytest.raises(HetznerError) as err:
        rescue.run(params(api, api="cloud", server="web1", wait_timeout=-1))
    assert err.value.msg == "wait_timeout must be 0 or more seconds, got -1" and api.requests == []


def test_robot_host_keys_and_the_password_are_returned(api):
    api.robot.add_server(321, "dedi1")
    api.robot.rescue_host_keys = True
    result = rescue.run(params(api, api="robot", server="321"))
    told = api.robot.rescue[321]["host_key"][0]["key"]["data"]
    assert result["host_keys"] == [" ".join(told.split()[:2])]
    assert result["root_password"] == api.robot.rescue[321]["password"]


@pytest.mark.parametrize("host_key, expected", [
    ([], []),
    ([{"key": {"fingerprint": "aa:bb", "type": "ED25519", "size": 256}}], []),  # a fingerprint alone cannot be pinned
    (["ssh-ed25519 %s c" % make_public_key("x").split()[1]], ["ssh-ed25519 %s" % make_public_key("x").split()[1]]),
])
def test_robot_host_key_forms(host_key, expected):
    assert rescue.robot_host_keys({"host_key": host_key}) == expected


def test_robot_host_key_that_is_no_key_fails():
    with pytest.raises(HetznerError, match="rescue host_key gave 2 lines"):
        rescue.robot_host_keys({"host_key": [{"key": {"data": make_public_key("x") + "\n@cert-authority * " + make_public_key("y")}}]})
