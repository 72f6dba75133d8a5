"""The Hetzner clients over real HTTP against the fake APIs on 127.0.0.1.

Waits are recorded instead of slept (``sleep=waits.append``) where a test is about the back-off
decisions; the tests that need the fake's clock to move sleep for real.
"""
import email.utils
import socket
import time

import pytest

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.ansinix.nixos.plugins.doc_fragments.hetzner import ModuleDocFragment
from ansible_collections.ansinix.nixos.plugins.module_utils import hetzner
from ansible_collections.ansinix.nixos.plugins.module_utils.hetzner import (
    CloudClient, HetznerError, RobotClient, backoff, describe, seconds_until,
)
from ansinix_test.fakehetzner import CLOUD_TOKEN, ROBOT_PASSWORD, ROBOT_USER, FakeHetzner, make_public_key

import yaml


@pytest.fixture
def api():
    with FakeHetzner() as fake:
        yield fake


def cloud(api, waits=None, **kwargs):
    return CloudClient(CLOUD_TOKEN, api.cloud_url, sleep=(waits.append if waits is not None else time.sleep), **kwargs)


def robot(api, waits=None, **kwargs):
    return RobotClient(ROBOT_USER, ROBOT_PASSWORD, api.robot_url, sleep=(waits.append if waits is not None else time.sleep), **kwargs)


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- small decisions ---------------------------------------------------------------------------------------------

def test_backoff_doubles_up_to_its_cap():
    assert [backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 32, 60]
    assert [backoff(n, base=5, cap=30) for n in range(1, 5)] == [5, 10, 20, 30]


def test_retry_after_in_seconds_or_as_a_date():
    now = 1_800_000_000
    assert seconds_until("7", now) == 7
    assert seconds_until(email.utils.formatdate(now + 30, usegmt=True), now) == 30
    assert seconds_until(email.utils.formatdate(now - 30, usegmt=True), now) == 0
    assert seconds_until("soon", now) is None and seconds_until(None, now) is None


def test_error_answers_in_a_few_words():
    assert describe(503, b'{"error": {"code": "unavailable", "message": "maintenance"}}') == "503 unavailable: maintenance"
    assert describe(502, b"<html>Bad Gateway</html>") == "502, not JSON: '<html>Bad Gateway</html>'"
    assert describe(500, b"") == "500"


# -- Cloud ---------------------------------------------------------------------------------------------------------

def test_cloud_pagination_is_followed_to_the_last_page(api):
    api.cloud.add_servers(120)
    client = cloud(api)
    servers = client.servers()
    assert [s["id"] for s in servers] == list(range(1000, 1120))
    pages = [(r.query["page"], r.query["per_page"]) for r in api.requests]
    assert pages == [(["1"], ["50"]), (["2"], ["50"]), (["3"], ["50"])]
    assert client.requests == 3


def test_cloud_label_selector_and_status_go_to_the_api(api):
    api.cloud.add_server(name="web", labels={"nixos": "web"})
    api.cloud.add_server(name="off", labels={"nixos": "db"}, status="off")
    api.cloud.add_server(name="plain")
    servers = cloud(api).servers(label_selector="nixos", status=["running", "starting"])
    assert [s["name"] for s in servers] == ["web"]
    assert api.requests[0].query["label_selector"] == ["nixos"] and api.requests[0].query["status"] == ["running", "starting"]


def test_cloud_pagination_that_does_not_advance_is_an_error(api):
    api.fail("/v1/servers", 200, {"servers": [], "meta": {"pagination": {"page": 1, "next_page": 1}}})
    with pytest.raises(HetznerError) as err:
        cloud(api).servers()
    assert "without a next page after 1 (it named 1)" in err.value.msg and api.count() == 1


def test_cloud_pagination_that_never_ends_stops_at_a_bound(api):
    api.cloud.add_servers(3)
    api.cloud.claimed_pages = 20  # not endless, so that a client without a bound fails this test instead of hanging
    client = cloud(api)
    client.max_pages = 7
    with pytest.raises(HetznerError) as err:
        client.servers()
    assert err.value.msg == ("Hetzner Cloud answered GET /servers with 7 pages and still names a next page; stopped there. "
                             "Is the Cloud endpoint (%s) the API's address?" % api.cloud_url)
    assert api.count() == 7 and hetzner.MAX_PAGES == 1000


@pytest.mark.parametrize("status", [200, 503])
def test_an_answer_longer_than_the_bound_is_not_read(api, status):
    client = cloud(api, [])
    client.max_answer_bytes = 1024 * 1024
    api.fail("/v1/servers", status, b'{"servers": [], "pad": "' + b"x" * client.max_answer_bytes + b'"}')
    with pytest.raises(HetznerError) as err:
        client.servers()
    assert err.value.msg == ("Hetzner Cloud answered GET /servers with more than 1 MiB; is the Cloud endpoint (%s) the API's "
                             "address?" % api.cloud_url)
    assert api.count() == 1 and hetzner.MAX_ANSWER_BYTES == 16 * 1024 * 1024
    # An answer of just the bound is read.
    api.cloud.add_servers(1)
    api.fail("/v1/servers", 200, b'{"servers": [], "pad": "' + b"x" * (client.max_answer_bytes - 26) + b'"}')
    assert client.servers() == []


def test_cloud_429_waits_as_told_by_retry_after(api):
    api.cloud.add_servers(3)
    api.fail("/v1/servers", 429, {"error": {"code": "rate_limit_exceeded", "message": "limit"}}, headers={"Retry-After": "7"})
    waits = []
    assert len(cloud(api, waits).servers()) == 3
    assert waits == [7] and api.count("/v1/servers") == 2


def test_cloud_429_from_an_empty_bucket_backs_off_until_it_refills(api):
    """The fake's bucket holds 2 requests and refills one a second: the 3rd page must wait, for real."""
    api.cloud.add_servers(120)
    api.cloud.set_rate_limit(2, refill_per_second=1.0)
    client = cloud(api)
    started = time.monotonic()
    assert len(client.servers()) == 120
    assert time.monotonic() - started >= 0.9
    refused = [r for r in api.requests if r.query.get("page") == ["3"]]
    assert len(refused) >= 2  # refused once, then answered


def test_cloud_rate_limit_longer_than_max_wait_fails_at_once(api):
    api.fail("/v1/servers", 429, {"error": {"code": "rate_limit_exceeded", "message": "limit"}}, headers={"Retry-After": "3600"})
    waits = []
    with pytest.raises(HetznerError) as err:
        cloud(api, waits, max_wait=120).servers()
    assert waits == [] and api.count() == 1
    assert err.value.msg == ("Hetzner Cloud: GET /servers hit the rate limit; retrying would wait 3600 s in all, more than max_wait "
                             "(120 s) allows; try again later or raise max_wait")


def test_cloud_rate_limit_reset_caps_the_back_off(api):
    client = cloud(api, clock=lambda: 1000)
    assert client._rate_limit_wait(429, {"RateLimit-Reset": "1003"}, b"", 5) == 3  # backoff would be 16
    assert client._rate_limit_wait(429, {"RateLimit-Reset": "999"}, b"", 1) == 1
    assert client._rate_limit_wait(429, {}, b"", 3) == 4
    assert client._rate_limit_wait(503, {}, b"", 1) is None


def test_server_errors_are_retried_with_back_off_then_reported(api):
    api.cloud.add_servers(1)
    api.fail("/v1/servers", 503, {"error": {"code": "unavailable", "message": "maintenance"}}, times=2)
    waits = []
    assert len(cloud(api, waits).servers()) == 1
    assert waits == [1, 2]
    api.fail("/v1/servers", 502, b"<html>bad gateway</html>", times=10)
    waits = []
    with pytest.raises(HetznerError) as err:
        cloud(api, waits, max_retries=2).servers()
    assert waits == [1, 2]
    assert err.value.msg == ("Hetzner Cloud: GET /servers still failed after 3 attempts in 3 s (last: 502, not JSON: "
                             "'<html>bad gateway</html>'); try again later")


def test_timeouts_are_retried_for_reads_but_not_for_actions(api):
    api.cloud.add_servers(2)
    api.fail("/v1/servers", 200, {"servers": [], "meta": {}}, delay=3)
    waits = []
    assert len(cloud(api, waits, timeout=1).servers()) == 2
    assert waits == [1] and api.count("/v1/servers") == 2
    api.fail("/v1/servers/1000/actions/reset", 201, {"action": {}}, delay=3)
    with pytest.raises(HetznerError) as err:
        cloud(api, waits, timeout=1).reset(1000)
    assert "POST /servers/1000/actions/reset got no answer within 1 s (timeout); it may have been carried out, so it is not sent again" \
        in err.value.msg
    assert api.count("/v1/servers/1000/actions/reset") == 1


def test_actions_are_not_repeated_after_a_server_error_but_are_after_a_rate_limit(api):
    api.cloud.add_servers(1)
    api.fail("/v1/servers/1000/actions/enable_rescue", 500, {"error": {"code": "server_error", "message": "oops"}})
    with pytest.raises(HetznerError) as err:
        cloud(api, []).enable_rescue(1000)
    assert err.value.msg == "Hetzner Cloud answered POST /servers/1000/actions/enable_rescue with 500 server_error: oops"
    assert api.count("/v1/servers/1000/actions") == 1 and api.cloud.servers[0]["rescue_enabled"] is False
    api.fail("/v1/servers/1000/actions/enable_rescue", 429, {"error": {"code": "rate_limit_exceeded", "message": "limit"}})
    key = api.cloud.add_ssh_key("admin", make_public_key("admin"))
    answer = cloud(api, []).enable_rescue(1000, ssh_keys=[key["id"]])
    assert answer["root_password"] and answer["action"]["command"] == "enable_rescue"
    assert api.cloud.servers[0]["rescue_enabled"] is True and api.requests[-1].json == {"type": "linux64", "ssh_keys": [key["id"]]}


def test_cloud_actions_and_single_server(api):
    api.cloud.add_servers(1)
    client = cloud(api)
    action = client.reset(1000)
    assert action["command"] == "reset_server" and client.action(action["id"])["status"] == "success"
    assert client.disable_rescue(1000)["command"] == "disable_rescue"
    assert client.server(1000)["name"] == "cloud000"
    with pytest.raises(HetznerError) as err:
        client.server(5)
    assert err.value.status == 404 and err.value.code == "not_found"


@pytest.mark.parametrize("body", [b"null", b"[]", b'{"server": "cloud000"}', b"{}"])
def test_answers_of_the_wrong_shape_are_named(api, body):
    api.fail("/v1/servers/1000", 200, body)
    with pytest.raises(HetznerError) as err:
        cloud(api, [], endpoint_setting="cloud.endpoint").server(1000)
    assert err.value.msg == "Hetzner Cloud answered GET /servers/1000 without a 'server' object; is cloud.endpoint (%s) the API's address?" \
        % api.cloud_url


def test_malformed_json_names_the_endpoint(api):
    api.fail("/v1/servers", 200, b"<html>captive portal</html>")
    with pytest.raises(HetznerError) as err:
        cloud(api, [], endpoint_setting="cloud.endpoint").servers()
    assert err.value.msg == ("Hetzner Cloud answered GET /servers with something that is not JSON ('<html>captive portal</html>'); "
                             "is cloud.endpoint (%s) the API's address?" % api.cloud_url)


def test_bad_token_names_the_setting_and_never_shows_the_token(api):
    secret = "wrong-token-xyz-0987"
    client = CloudClient(secret, api.cloud_url, token_setting="cloud.token (or HCLOUD_TOKEN)")
    with pytest.raises(HetznerError) as err:
        client.servers()
    assert err.value.msg == "Hetzner Cloud rejected the API token (401 unauthorized: unable to authenticate): check cloud.token (or HCLOUD_TOKEN)"
    assert err.value.status == 401 and api.count() == 1
    api.fail("/v1/servers/1/actions/reset", 403, {"error": {"code": "token_readonly", "message": "read-only token"}})
    with pytest.raises(HetznerError) as err:
        cloud(api).reset(1)
    assert err.value.msg == ("Hetzner Cloud refused POST /servers/1/actions/reset: the API token is read-only, and this needs a "
                             "Read & Write token (check the API token)")


@pytest.mark.parametrize("token,message", [
    ("", "no Hetzner Cloud API token: set cloud.token"),
    (None, "no Hetzner Cloud API token: set cloud.token"),
    ("abc def", "cloud.token is not an API token: it contains spaces"),
    ("t\u00f6ken", "cloud.token is not an API token"),
])
def test_unusable_tokens_are_refused_before_any_request(token, message):
    with pytest.raises(HetznerError) as err:
        CloudClient(token, token_setting="cloud.token")
    assert message in err.value.msg and (not token or token not in err.value.msg)


def test_a_token_read_from_a_file_may_end_in_a_newline(api):
    api.cloud.add_servers(1)
    assert len(CloudClient(CLOUD_TOKEN + "\n", api.cloud_url).servers()) == 1


@pytest.mark.parametrize("endpoint", ["api.hetzner.cloud/v1", "ftp://x", "https://user:pw@api.hetzner.cloud/v1", "http://"])
def test_endpoints_must_be_http_urls(endpoint):
    with pytest.raises(HetznerError) as err:
        CloudClient("t", endpoint, endpoint_setting="cloud.endpoint")
    assert err.value.msg == "cloud.endpoint must be an http(s) URL with no credentials in it, such as https://api.hetzner.cloud/v1"
    assert "pw" not in err.value.msg


@pytest.mark.parametrize("endpoint", ["http://api.hetzner.cloud/v1", "http://10.0.0.1/v1", "http://[::ffff:127.0.0.1]:8/v1",
                                      "http://localhost.example.org/v1", "http://127.0.0.1.nip.io/v1", "HTTP://api.hetzner.cloud/v1"])
def test_plain_http_is_refused_but_to_loopback(endpoint):
    with pytest.raises(HetznerError) as err:
        CloudClient("t", endpoint, endpoint_setting="cloud.endpoint")
    assert err.value.msg == ("cloud.endpoint must be an https URL, such as https://api.hetzner.cloud/v1: plain http would send the "
                             "credentials unencrypted (it is allowed only to a loopback address such as 127.0.0.1)")
    with pytest.raises(HetznerError):
        RobotClient("u", "p", endpoint)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8/v1", "http://127.1.2.3/v1", "http://[::1]:8/v1", "http://LocalHost:8/v1",
                                      "https://api.hetzner.cloud/v1", "https://10.0.0.1/v1"])
def test_https_and_loopback_endpoints_are_accepted(endpoint):
    assert CloudClient("t", endpoint).endpoint == endpoint


def test_refused_connections_are_not_retried():
    waits = []
    client = CloudClient("t", "http://127.0.0.1:%d/v1" % closed_port(), endpoint_setting="cloud.endpoint", sleep=waits.append)
    with pytest.raises(HetznerError) as err:
        client.servers()
    assert "GET /servers could not be reached: Connection refused (check cloud.endpoint and the network)" in err.value.msg
    assert waits == [] and client.requests == 1


# -- Robot ---------------------------------------------------------------------------------------------------------

def test_robot_servers_details_and_an_empty_account(api):
    client = robot(api)
    assert client.servers() == []  # the webservice answers 404 SERVER_NOT_FOUND
    api.robot.add_server(321, "dedi1")
    api.robot.add_server(322, "dedi2", dc="HEL1-DC2")
    assert [s["server_number"] for s in client.servers()] == [321, 322]
    assert client.server(322)["dc"] == "HEL1-DC2" and client.server(322)["reset"] is True
    with pytest.raises(HetznerError) as err:
        client.server(999)
    assert err.value.code == "SERVER_NOT_FOUND" and err.value.msg == \
        "Hetzner Robot answered GET /server/999 with 404 SERVER_NOT_FOUND: Server not found"


def test_robot_rescue_and_reset(api):
    api.robot.add_server(321, "dedi1")
    client = robot(api)
    assert client.rescue(321)["active"] is False
    keys = [api.robot.add_key(name, make_public_key(name))["fingerprint"] for name in ("a", "b")]
    rescue = client.enable_rescue(321, authorized_keys=keys)
    assert rescue["active"] is True and api.robot.rescue[321]["active"] is True and rescue["password"]
    assert api.requests[-1].form == {"os": ["linux"], "authorized_key[]": keys}
    assert client.reset(321, "hw")["type"] == "hw" and api.robot.resets == [(321, "hw")]
    assert client.rescue(321)["active"] is False  # the reset booted it: one-shot
    client.enable_rescue(321)
    assert client.disable_rescue(321)["active"] is False
    with pytest.raises(HetznerError) as err:
        client.reset(321, "kick")
    assert err.value.msg == "reset type 'kick' is not one of sw, hw, man, power, power_long" and api.robot.resets == [(321, "hw")]


def test_robot_rate_limit_waits_within_its_interval(api):
    api.robot.add_server(321, "dedi1")
    api.fail("/robot/server", 403, {"error": {"status": 403, "code": "RATE_LIMIT_EXCEEDED", "message": "Rate limit exceeded",
                                              "max_request": 200, "interval": 3}}, times=2)
    waits = []
    assert len(robot(api, waits).servers()) == 1
    assert waits == [3, 3]  # back-off would be 5, 10; the window is 3 s
    client = robot(api, [])
    assert client._rate_limit_wait(403, {}, b'{"error": {"code": "RATE_LIMIT_EXCEEDED", "interval": 3600}}', 2) == 10
    assert client._rate_limit_wait(403, {}, b'{"error": {"code": "FORBIDDEN"}}', 1) is None


def test_robot_rate_limit_window_of_the_fake_is_honoured_for_real(api):
    api.robot.add_server(321, "dedi1")
    api.robot.rate_limit = (1, 1)  # one request a second
    client = robot(api)
    started = time.monotonic()
    client.servers()
    client.rescue(321)
    assert time.monotonic() - started >= 0.9 and client.requests == 3


def test_robot_bad_credentials_name_the_settings(api):
    client = RobotClient(ROBOT_USER, "wrong-pw-4711", api.robot_url, credentials_setting="robot.user and robot.password")
    with pytest.raises(HetznerError) as err:
        client.servers()
    assert err.value.msg == "Hetzner Robot rejected the webservice user and password (401 UNAUTHORIZED: Unauthorized): check robot.user and robot.password"
    with pytest.raises(HetznerError) as err:
        RobotClient("user", None)
    assert "no Hetzner Robot webservice credentials: set the webservice user and password" in err.value.msg


def test_robot_answer_that_is_not_a_server_list(api):
    api.fail("/robot/server", 200, {"server": {"server_number": 1}})
    with pytest.raises(HetznerError) as err:
        robot(api, [], endpoint_setting="robot.endpoint").servers()
    assert "answered GET /server without a list of servers; is robot.endpoint" in err.value.msg


# -- what modules get: argument specs that match the doc fragment ---------------------------------------------------

@pytest.mark.parametrize("fragment,spec", [
    ("DOCUMENTATION", hetzner.CLIENT_ARGUMENT_SPEC),
    ("CLOUD", hetzner.CLOUD_ARGUMENT_SPEC),
    ("ROBOT", hetzner.ROBOT_ARGUMENT_SPEC),
])
def test_doc_fragments_document_the_argument_specs(fragment, spec):
    options = yaml.safe_load(getattr(ModuleDocFragment, fragment))["options"]

    def same(docs, spec):
        assert sorted(docs) == sorted(spec)
        for name, option in spec.items():
            assert docs[name]["type"] == option["type"]
            assert docs[name].get("default") == option.get("default")
            if "options" in option:
                same(docs[name]["suboptions"], option["options"])
    same(options, spec)


def test_module_parameters_build_clients_with_environment_fallbacks(api, monkeypatch):
    monkeypatch.setenv("HCLOUD_TOKEN", CLOUD_TOKEN)
    monkeypatch.setenv("HCLOUD_ENDPOINT", api.cloud_url)
    monkeypatch.setenv("HROBOT_API_USER", ROBOT_USER)
    monkeypatch.setenv("HROBOT_API_PASSWORD", ROBOT_PASSWORD)
    monkeypatch.setenv("HROBOT_API_ENDPOINT", api.robot_url)
    spec = dict(hetzner.CLIENT_ARGUMENT_SPEC, **hetzner.CLOUD_ARGUMENT_SPEC)
    spec.update(hetzner.ROBOT_ARGUMENT_SPEC)
    result = ArgumentSpecValidator(spec).validate({})
    assert result.error_messages == []
    assert CLOUD_TOKEN in result._no_log_values and ROBOT_PASSWORD in result._no_log_values
    assert CLOUD_TOKEN not in repr(spec)  # the specs are shared by every call: nothing may stick to them
    api.cloud.add_servers(1)
    api.robot.add_server(321, "dedi1")
    assert len(hetzner.cloud_client(result.validated_parameters).servers()) == 1
    assert len(hetzner.robot_client(result.validated_parameters).servers()) == 1
    monkeypatch.delenv("HCLOUD_TOKEN")
    result = ArgumentSpecValidator(spec).validate({})
    with pytest.raises(HetznerError) as err:
        hetzner.cloud_client(result.validated_parameters)
    assert "set cloud.token (or HCLOUD_TOKEN)" in err.value.msg
