"""ansinix.nixos.hetzner_rescue through real ansible-playbook against the fake Hetzner Cloud and Robot on 127.0.0.1.

No test hosts: the plays run on the implicit localhost, as a play delegating to localhost would. Every
play names the fake's endpoints, so nothing beyond loopback is ever asked. The rescue password is
random per enable; each test checks that a later task got it and that no output shows it.
"""
import json
import textwrap

import pytest

from ansinix_test import ansible as harness
from ansinix_test.fakehetzner import CLOUD_TOKEN, ROBOT_PASSWORD, ROBOT_USER, FakeHetzner, make_public_key

CREDENTIALS = {"HCLOUD_TOKEN": CLOUD_TOKEN, "HROBOT_API_USER": ROBOT_USER, "HROBOT_API_PASSWORD": ROBOT_PASSWORD,
               "HCLOUD_ENDPOINT": ""}
WRONG_TOKEN = "wrong-token-value-xyz"

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Rescue
      ansinix.nixos.hetzner_rescue:
        %(args)s
        cloud: %(cloud)s
        robot: %(robot)s
      register: booted

    - name: Use the password
      ansible.builtin.copy:
        content: "{{ booted.root_password | default('none', true) }}"
        dest: "%(tmp)s/password"
        mode: "0600"
      check_mode: false

    - name: Show the rest
      ansible.builtin.debug:
        var: shown
      vars:
        shown: "{{ booted | dict2items | rejectattr('key', 'equalto', 'root_password') | items2dict }}"
"""


@pytest.fixture
def api():
    with FakeHetzner() as fake:
        fake.booted_log = []
        fake.on_reset = lambda kind, server, rescue: fake.booted_log.append((kind, server["server_number" if kind == "robot" else "id"], rescue))
        fake.robot.add_server(321, "dedi1")
        fake.robot.add_server(322, "dedi2")
        fake.admin_key = make_public_key("admin@laptop")
        fake.robot.add_key("admin", fake.admin_key)
        fake.robot.add_key("deploy", make_public_key("deploy@ci"))
        fake.cloud.add_ssh_key("admin", fake.admin_key)
        fake.cloud.add_ssh_key("deploy", make_public_key("deploy@ci"))
        fake.cloud.add_server(name="web1")
        fake.cloud.add_server(name="web2")
        yield fake


class Run:
    def __init__(self, run, tmp_path):
        self.run = run
        self.output = run.stdout + run.stderr
        password = (tmp_path / "password").read_text() if (tmp_path / "password").exists() else None
        self.password = None if password in (None, "none") else password
        shown = run.results("Show the rest").get("localhost")
        self.result = shown["shown"] if shown else None
        self.recorded = run.results("Rescue")["localhost"]
        self.status = [e["status"] for e in run.events if e["task"] == "Rescue"][0]


def play(api, tmp_path, args, *options, env=None, cloud=None, robot=None):
    """Run PLAY; `cloud` and `robot` are more of those options (credentials) besides the endpoints."""
    (tmp_path / "password").unlink(missing_ok=True)
    text = PLAY % {"args": "\n        ".join(textwrap.dedent(args).strip().splitlines()), "tmp": tmp_path,
                   "cloud": json.dumps(dict(cloud or {}, endpoint=api.cloud_url)), "robot": json.dumps(dict(robot or {}, endpoint=api.robot_url))}
    extra = dict(CREDENTIALS)
    extra.update(env or {})
    return Run(harness.run_playbook(text, args=list(options), env=extra), tmp_path)


def changes(api):
    return [(r.method, r.path) for r in api.requests if r.method != "GET"]


def failed_with(outcome):
    """The one-line message of the failed task; no traceback anywhere."""
    assert outcome.run.rc == 2, outcome.run
    assert outcome.status == "failed"
    msg = outcome.recorded["msg"]
    assert "\n" not in msg and "Traceback" not in outcome.output and "Traceback" not in outcome.recorded.get("exception", ""), outcome.output
    return msg


# -- Robot ------------------------------------------------------------------------------------------------------

def test_robot_enable_and_hardware_reset_boots_the_rescue_with_the_password_hidden(api, tmp_path):
    fingerprint = api.robot.keys[0]["fingerprint"]
    out = play(api, tmp_path, """
        api: robot
        server: dedi1
        ssh_keys: [%s, deploy]
        reset: hardware
        """ % fingerprint, "-vvv")
    assert out.run.rc == 0, out.run
    assert changes(api) == [("POST", "/robot/boot/321/rescue"), ("POST", "/robot/reset/321")]
    assert api.robot.resets == [(321, "hw")]
    # The reset booted the rescue system: Robot's one-shot rescue is no longer active, and the hook was told.
    assert api.robot.rescue[321]["active"] is False
    [(kind, number, rescue)] = api.booted_log
    assert (kind, number, rescue["os"], rescue["active"]) == ("robot", 321, "linux", True)
    assert rescue["authorized_keys"] == [api.admin_key, api.robot.keys[1]["data"]]
    assert rescue["keys"] == [fingerprint, api.robot.keys[1]["fingerprint"]]
    # A later task got the password; no output shows it, and the module's result is censored for callbacks.
    assert out.password == rescue["password"] and out.password.startswith("rescue-")
    assert out.password not in out.output
    assert out.recorded["changed"] is True and "censored" in out.recorded and "root_password" not in out.recorded
    assert out.result["server"] == {"id": 321, "name": "dedi1", "ipv4": "198.51.100.72", "ipv6_network": "2001:db8:ff41::",
                                    "status": "ready"}
    assert (out.result["rescue_active"], out.result["reset"], out.result["api"]) == (True, "hardware", "robot")
    assert [a["command"] for a in out.result["actions"]] == ["enable_rescue", "reset_hw"]


def test_robot_rescue_is_kept_when_active_with_the_same_keys(api, tmp_path):
    first = play(api, tmp_path, "api: robot\nserver: 321\nssh_keys: [admin]")
    assert first.run.rc == 0 and first.recorded["changed"] is True, first.run
    second = play(api, tmp_path, "api: robot\nserver: 321\nssh_keys: [admin]")
    assert second.run.rc == 0 and second.recorded["changed"] is False, second.run
    # The active rescue's password comes from GET /boot/321/rescue; it is still hidden.
    assert second.password == first.password == api.robot.rescue[321]["password"]
    assert second.password not in second.output and "censored" in second.recorded
    assert changes(api) == [("POST", "/robot/boot/321/rescue")] and api.booted_log == []
    # Other keys: the active rescue system is replaced.
    third = play(api, tmp_path, "api: robot\nserver: 321\nssh_keys: [deploy]")
    assert third.recorded["changed"] is True and third.password != first.password
    assert changes(api)[1:] == [("DELETE", "/robot/boot/321/rescue"), ("POST", "/robot/boot/321/rescue")]
    # Disabling it, twice: a change, then none.
    off = play(api, tmp_path, "api: robot\nserver: 321\nrescue: false")
    assert (off.recorded["changed"], off.password, off.result["rescue_active"]) == (True, None, False)
    again = play(api, tmp_path, "api: robot\nserver: 321\nrescue: false")
    assert again.recorded["changed"] is False and changes(api)[3:] == [("DELETE", "/robot/boot/321/rescue")]
    assert api.robot.rescue[321]["active"] is False


# -- Cloud ------------------------------------------------------------------------------------------------------

def test_cloud_by_name_waits_for_its_actions(api, tmp_path):
    api.cloud.action_steps = 2  # each action runs for two polls
    out = play(api, tmp_path, """
        api: cloud
        server: web2
        ssh_keys: [admin, deploy]
        reset: hardware
        """)
    assert out.run.rc == 0, out.run
    web2 = api.cloud.servers[1]
    assert changes(api) == [("POST", "/v1/servers/%d/actions/enable_rescue" % web2["id"]), ("POST", "/v1/servers/%d/actions/reset" % web2["id"])]
    assert api.requests[[r.method for r in api.requests].index("POST")].json == {
        "type": "linux64", "ssh_keys": [api.cloud.ssh_keys[0]["id"], api.cloud.ssh_keys[1]["id"]]}
    assert [a["status"] for a in api.cloud.actions.values()] == ["success", "success"]
    assert api.count("/v1/actions/") == 4
    assert [(a["command"], a["status"]) for a in out.result["actions"]] == [("enable_rescue", "success"), ("reset_server", "success")]
    [(kind, server_id, rescue)] = api.booted_log
    assert (kind, server_id, rescue["os"]) == ("cloud", web2["id"], "linux64")
    assert rescue["authorized_keys"] == [api.admin_key, api.cloud.ssh_keys[1]["public_key"]]
    assert out.password == rescue["password"] and out.password not in out.output and "censored" in out.recorded
    assert web2["rescue_enabled"] is False and api.cloud.resets == [(web2["id"], "reset")]  # booted: one-shot
    assert out.result["server"]["name"] == "web2" and out.result["reset"] == "hardware"


def test_cloud_power_cycle_and_disable(api, tmp_path):
    web1 = api.cloud.servers[0]
    out = play(api, tmp_path, "api: cloud\nserver: %d\nreset: power" % web1["id"])
    assert out.run.rc == 0, out.run
    assert api.cloud.resets == [(web1["id"], "poweroff"), (web1["id"], "poweron")] and web1["status"] == "running"
    assert api.booted_log[0][2]["password"] == out.password and api.booted_log[0][2]["authorized_keys"] == []
    # Enable without a reset, then disable: a change without a password, shown in full; then nothing to do.
    assert play(api, tmp_path, "api: cloud\nserver: web1\nwait: false").recorded["changed"] is True
    assert web1["rescue_enabled"] is True
    off = play(api, tmp_path, "api: cloud\nserver: web1\nrescue: false")
    assert off.recorded["changed"] is True and "censored" not in off.recorded and off.recorded["rescue_active"] is False
    assert off.recorded["actions"][0]["command"] == "disable_rescue" and web1["rescue_enabled"] is False
    posts = len(changes(api))
    again = play(api, tmp_path, "api: cloud\nserver: web1\nrescue: false")
    assert again.recorded["changed"] is False and len(changes(api)) == posts and again.recorded["actions"] == []


# -- check mode -------------------------------------------------------------------------------------------------

def test_check_mode_changes_nothing(api, tmp_path):
    robot = play(api, tmp_path, "api: robot\nserver: dedi1\nssh_keys: [admin]\nreset: software", "--check")
    assert robot.run.rc == 0, robot.run
    assert robot.recorded["changed"] is True
    assert (robot.recorded["would_enable"], robot.recorded["would_disable"], robot.recorded["would_reset"]) == (True, False, "software")
    assert robot.recorded["reset"] is None and robot.recorded["root_password"] is None
    cloud = play(api, tmp_path, "api: cloud\nserver: web1\nssh_keys: [deploy]\nreset: hardware", "--check")
    assert cloud.recorded["changed"] is True and cloud.recorded["would_reset"] == "hardware"
    assert changes(api) == [] and api.booted_log == [] and api.robot.rescue[321]["active"] is False
    assert api.cloud.servers[0]["rescue_enabled"] is False
    # An active Robot rescue with the same keys: no change, and its password (a GET) is returned, hidden.
    api.robot.rescue[321].update(active=True, os="linux", password="rescue-already-active", authorized_key=[])
    kept = play(api, tmp_path, "api: robot\nserver: dedi1", "--check")
    assert kept.recorded["changed"] is False and kept.password == "rescue-already-active" and "censored" in kept.recorded
    assert "rescue-already-active" not in kept.output and changes(api) == []


# -- errors: one line, no traceback, nothing changed --------------------------------------------------------------

@pytest.mark.parametrize("args, env, message", [
    ("api: robot\nserver: nosuch", {}, "the Hetzner Robot account has no server named 'nosuch' (check server)"),
    ("api: cloud\nserver: web9", {}, "the Hetzner Cloud project has no server named 'web9' (check server)"),
    ("api: cloud\nserver: web1", {"HCLOUD_TOKEN": WRONG_TOKEN},
     "Hetzner Cloud rejected the API token (401 unauthorized: unable to authenticate): check cloud.token (or HCLOUD_TOKEN)"),
    ("api: robot\nserver: dedi1", {"HROBOT_API_PASSWORD": WRONG_TOKEN},
     "Hetzner Robot rejected the webservice user and password (401 UNAUTHORIZED: Unauthorized): check robot.user and "
     "robot.password (or HROBOT_API_USER and HROBOT_API_PASSWORD)"),
    ("api: cloud\nserver: web1\nssh_keys: [admin, nosuchkey]", {},
     "the Hetzner Cloud project has no SSH key 'nosuchkey' (its keys: admin, deploy); give a key's name, id or fingerprint in ssh_keys"),
    ("api: robot\nserver: dedi1\nssh_keys: ['00:11:22']", {},
     "the Hetzner Robot account has no SSH key '00:11:22' (its keys: admin, deploy); give a key's name or fingerprint in ssh_keys"),
    ("api: cloud\nserver: web1", {"HCLOUD_TOKEN": ""}, "no Hetzner Cloud API token: set cloud.token (or HCLOUD_TOKEN)"),
], ids=["robot-server", "cloud-server", "cloud-token", "robot-password", "cloud-key", "robot-key", "no-token"])
def test_errors_are_one_line(api, tmp_path, args, env, message):
    out = play(api, tmp_path, args, "-vvv", env=env)
    assert failed_with(out).startswith(message)
    assert changes(api) == [] and WRONG_TOKEN not in out.output and CLOUD_TOKEN not in out.output and ROBOT_PASSWORD not in out.output


def test_an_action_that_runs_too_long_or_fails(api, tmp_path):
    api.cloud.action_steps = 1000
    out = play(api, tmp_path, "api: cloud\nserver: web1\nreset: hardware\nwait_timeout: 2")
    msg = failed_with(out)
    assert msg.startswith("Hetzner Cloud action enable_rescue (id ") and msg.endswith(
        "was still running after 2 s (wait_timeout); it goes on, so check the server before trying again")
    assert changes(api) == [("POST", "/v1/servers/%d/actions/enable_rescue" % api.cloud.servers[0]["id"])]  # no reset
    api.cloud.action_steps = 0
    api.cloud.fail_action("reset_server", "action_failed", "the server is locked by another action")
    out = play(api, tmp_path, "api: cloud\nserver: web1\nreset: hardware")
    assert failed_with(out).endswith("failed: action_failed: the server is locked by another action")
    assert json.dumps(out.recorded).count("rescue-") == 0  # the password of the enabled rescue is not in the failure


@pytest.mark.parametrize("delegate", ["delegate_to: localhost", ""], ids=["delegated", "not-delegated"])
def test_play_on_the_server_takes_settings_from_the_action_group_and_connects_to_no_host(api, tmp_path, delegate):
    """The way a bootstrap play uses it: hosts from an inventory, the API called from the controller, with or
    without delegate_to. The server does not answer (the reason to boot its rescue system): nothing connects to it."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("dedi1 ansible_host=192.0.2.77 ansible_port=1 ansible_connection=ssh hetzner_id=321\n")
    run = harness.run_playbook("""
- hosts: dedi1
  gather_facts: false
  module_defaults:
    group/ansinix.nixos.hetzner:
      robot: {endpoint: "%s"}
      ssh_keys: [admin]
  tasks:
    - name: Rescue
      ansinix.nixos.hetzner_rescue:
        api: robot
        server: "{{ hetzner_id }}"
        reset: hardware
      %s
      register: booted

    - name: Length
      ansible.builtin.debug:
        msg: "{{ booted.root_password | length }}"
""" % (api.robot_url, delegate), args=["-i", str(inventory), "-v"], env=CREDENTIALS)
    assert run.rc == 0, run
    assert api.robot.resets == [(321, "hw")] and api.booted_log[0][2]["authorized_keys"] == [api.admin_key]
    assert str(run.result("Length", "dedi1")["msg"]) == str(len(api.booted_log[0][2]["password"]))
    assert api.booted_log[0][2]["password"] not in run.stdout + run.stderr


@pytest.mark.parametrize("api_kind, args", [
    ("robot", "api: robot\nserver: dedi1\nssh_keys: [admin]\nreset: hardware"),
    ("cloud", "api: cloud\nserver: web1\nssh_keys: [admin]\nreset: hardware"),
])
def test_neither_the_password_nor_the_credentials_are_in_ansible_debug_output(api, tmp_path, api_kind, args):
    """ANSIBLE_DEBUG prints every module's arguments and raw output whatever no_log says: no module runs."""
    api.robot.rescue_host_keys = True
    no_env = {"HCLOUD_TOKEN": "", "HROBOT_API_USER": "", "HROBOT_API_PASSWORD": "", "ANSIBLE_DEBUG": "1"}
    out = play(api, tmp_path, args, "-vvv", env=no_env, cloud={"token": CLOUD_TOKEN}, robot={"user": ROBOT_USER, "password": ROBOT_PASSWORD})
    assert out.run.rc == 0, out.run
    assert "_low_level_execute_command() done" in out.output  # the debug output is there (the copy task's module)
    [(kind, _server, rescue)] = api.booted_log
    assert kind == api_kind and out.password == rescue["password"]
    assert out.password not in out.output
    assert CLOUD_TOKEN not in out.output and ROBOT_PASSWORD not in out.output
    if api_kind == "robot":
        assert [k.split()[0] for k in out.result["host_keys"]] == ["ssh-ed25519"]
    else:
        assert out.result["host_keys"] == []  # the Cloud API tells no host key


def test_bad_options_fail_in_one_line_before_any_request(api, tmp_path):
    out = play(api, tmp_path, "api: robot\nserver: dedi1\nseal_key: '2'")
    assert failed_with(out) == ("Unsupported parameters for (ansinix.nixos.hetzner_rescue) module: seal_key. Supported parameters "
                                "include: api, cloud, max_retries, max_wait, rescue, rescue_type, reset, robot, server, ssh_keys, "
                                "timeout, wait, wait_timeout (os).")
    out = play(api, tmp_path, "api: robot\nserver: dedi1\nwait_timeout: soon", robot={"password": "not-the-password-" + WRONG_TOKEN})
    assert failed_with(out).startswith("argument 'wait_timeout' is of type") and WRONG_TOKEN not in out.output
    assert api.requests == []
