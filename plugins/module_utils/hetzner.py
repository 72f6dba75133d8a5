# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""Clients for the Hetzner Cloud API and the Hetzner Robot webservice.

Shared by the inventory plugin and the bootstrap modules (rescue systems, resets). Pure Python on
module_utils.urls. What the client does for every caller:

- retries what is worth retrying: rate limits (Cloud's 429 with Retry-After / RateLimit-Reset,
  Robot's 403 RATE_LIMIT_EXCEEDED with its interval), 5xx answers, timeouts and broken connections,
  with back-off, at most ``max_retries`` times and ``max_wait`` seconds in all; a request that may
  have changed something (POST) is only repeated when the API surely refused it;
- follows Cloud pagination to the last page, but never past MAX_PAGES pages;
- sends credentials only over https (plain http only to a loopback address, as tests do) and reads
  at most MAX_ANSWER_BYTES of an answer;
- turns every other failure into a HetznerError whose one-line message names the setting to fix
  (the caller says what its settings are called) and never contains a credential.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import ipaddress
import json
import socket
import ssl
import time
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urlparse

from ansible.module_utils.common.parameters import env_fallback
from ansible.module_utils.urls import Request

CLOUD_ENDPOINT = "https://api.hetzner.cloud/v1"
ROBOT_ENDPOINT = "https://robot-ws.your-server.de"
CLOUD_PAGE_SIZE = 50  # the most the Cloud API gives per page
CLOUD_SERVER_STATUSES = ("initializing", "starting", "running", "stopping", "off", "deleting", "migrating", "rebuilding", "unknown")
ROBOT_RESET_TYPES = ("sw", "hw", "man", "power", "power_long")
USER_AGENT = "ansinix.nixos"
# A list endpoint that still names a next page after this many pages is not the API (or is broken):
# 1000 pages of 50 are 50,000 servers, far more than a project holds.
MAX_PAGES = 1000
# The largest answer read: a page of 50 Cloud servers is about 150 KiB, Robot's list of 1000 servers 1 MiB.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

# Argument specs of modules that talk to Hetzner; doc_fragments/hetzner.py documents them
# (DOCUMENTATION for the client settings, CLOUD and ROBOT for the credentials).
CLIENT_ARGUMENT_SPEC = dict(
    timeout=dict(type="int", default=30),
    max_retries=dict(type="int", default=5),
    max_wait=dict(type="int", default=120),
)
CLOUD_ARGUMENT_SPEC = dict(
    cloud=dict(type="dict", apply_defaults=True, options=dict(
        token=dict(type="str", no_log=True, fallback=(env_fallback, ["HCLOUD_TOKEN"])),
        endpoint=dict(type="str", fallback=(env_fallback, ["HCLOUD_ENDPOINT"])),
    )),
)
ROBOT_ARGUMENT_SPEC = dict(
    robot=dict(type="dict", apply_defaults=True, options=dict(
        user=dict(type="str", fallback=(env_fallback, ["HROBOT_API_USER"])),
        password=dict(type="str", no_log=True, fallback=(env_fallback, ["HROBOT_API_PASSWORD"])),
        endpoint=dict(type="str", fallback=(env_fallback, ["HROBOT_API_ENDPOINT"])),
    )),
)


class HetznerError(Exception):
    """One line for the user: what failed and what to change. Never holds a credential."""

    def __init__(self, msg, status=None, code=None):
        super().__init__(msg)
        self.msg = msg
        self.status = status  # the HTTP status, when there was an answer
        self.code = code  # the API's error code: rate_limit_exceeded, SERVER_NOT_FOUND, ...


def backoff(retry, base=1, cap=60):
    """Seconds to wait before retry number `retry` (1, 2, ...): base, 2*base, 4*base ..., at most cap."""
    return min(base * 2 ** (retry - 1), cap)


def seconds_until(value, now):
    """A Retry-After value (delta-seconds or an HTTP date) as whole seconds from `now`; None if unreadable."""
    value = str(value if value is not None else "").strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0, int(when.timestamp() - now + 0.999))


def error_object(body):
    """The `error` object of an error answer of either API, or {}."""
    try:
        answer = json.loads(body)
    except (TypeError, ValueError):
        return {}
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, dict) else {}


def snippet(body, limit=60):
    """The start of an answer, printable, for messages about answers that are not JSON."""
    text = body[:limit].decode("utf-8", "replace") if isinstance(body, bytes) else str(body)[:limit]
    return "".join(char if char.isprintable() else " " for char in text).strip()


def describe(status, body):
    """'503 unavailable: maintenance' -- an error answer in a few words."""
    error = error_object(body)
    if error:
        words = [str(error.get("code") or ""), str(error.get("message") or "")]
        return "%d %s" % (status, ": ".join(w for w in words if w))
    if body:
        return "%d, not JSON: %r" % (status, snippet(body))
    return "%d" % status


def is_loopback(host):
    """Whether a URL's host is this machine: localhost, 127.0.0.0/8 or ::1."""
    if str(host).lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(str(host))
    except ValueError:
        return False
    # Python 3.13 counts ::ffff:127.0.0.1 as loopback, older Pythons do not: refuse it on every one.
    return address.is_loopback and not getattr(address, "ipv4_mapped", None)


def checked_endpoint(endpoint, setting, example):
    """The endpoint without a trailing slash, or a HetznerError when it is not an https URL (or http to loopback)."""
    parsed = urlparse(str(endpoint or ""))
    if parsed.scheme not in ("http", "https") or not parsed.hostname or "@" in parsed.netloc:
        raise HetznerError("%s must be an http(s) URL with no credentials in it, such as %s" % (setting, example))
    if parsed.scheme == "http" and not is_loopback(parsed.hostname):
        # Plain http would send the token or password readable to everyone on the way.
        raise HetznerError("%s must be an https URL, such as %s: plain http would send the credentials unencrypted "
                           "(it is allowed only to a loopback address such as 127.0.0.1)" % (setting, example))
    return str(endpoint).rstrip("/")


class _Failure:
    """A request that got no HTTP answer. `transient` ones (timeouts, broken connections) may be retried."""

    def __init__(self, reason, transient):
        self.reason = reason
        self.transient = transient


class _Client:
    API = "Hetzner"  # names the API in messages
    DEFAULT_ENDPOINT = ""
    FORM_ENCODED = False  # the Robot webservice takes form fields, the Cloud API JSON

    def __init__(self, endpoint, endpoint_setting, timeout=30, max_retries=5, max_wait=120, sleep=time.sleep, clock=time.time):
        self.endpoint_setting = endpoint_setting
        self.max_pages = MAX_PAGES
        self.max_answer_bytes = MAX_ANSWER_BYTES
        self.endpoint = checked_endpoint(endpoint or self.DEFAULT_ENDPOINT, endpoint_setting, self.DEFAULT_ENDPOINT)
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.sleep = sleep
        self.clock = clock
        self.requests = 0  # HTTP requests sent, retries included
        self._opener = None

    # -- what each API decides --------------------------------------------------------------------------

    def _headers(self):
        raise NotImplementedError

    def _rate_limit_wait(self, status, headers, body, retry):
        """Seconds to wait when this answer is the API's rate limit, else None."""
        raise NotImplementedError

    def _refusal(self, status, body, what):
        """The HetznerError for an answer that is final."""
        error = error_object(body)
        return HetznerError("%s answered %s with %s" % (self.API, what, describe(status, body)), status, error.get("code"))

    # -- the request loop -------------------------------------------------------------------------------

    def request(self, method, path, params=None, data=None):
        """The decoded JSON answer to METHOD endpoint+path, after the retries worth making."""
        url = self.endpoint + path + ("?" + urlencode(params, doseq=True) if params else "")
        headers = self._headers()
        payload = None
        if data is not None:
            if self.FORM_ENCODED:
                payload, headers["Content-Type"] = urlencode(data, doseq=True), "application/x-www-form-urlencoded"
            else:
                payload, headers["Content-Type"] = json.dumps(data), "application/json"
        what = "%s %s" % (method, path)
        # A request that may change something is only sent again when the API surely did not act on it.
        repeatable = method in ("GET", "HEAD", "PUT", "DELETE")
        waited, retry = 0, 0
        while True:
            self.requests += 1
            status, resp_headers, body, failure = self._send(method, url, headers, payload)
            if len(body) > self.max_answer_bytes:
                raise HetznerError("%s answered %s with more than %d MiB; is %s (%s) the API's address?"
                                   % (self.API, what, self.max_answer_bytes // (1024 * 1024), self.endpoint_setting, self.endpoint))
            if failure is None and 200 <= status < 300:
                return self._decode(body, what)
            rate_limited = False
            if failure is not None:
                if failure.transient and not repeatable:
                    raise HetznerError("%s at %s: %s %s; it may have been carried out, so it is not sent again: check the "
                                       "server's state" % (self.API, self.endpoint, what, failure.reason))
                if not failure.transient:
                    raise HetznerError("%s at %s: %s %s (check %s and the network)"
                                       % (self.API, self.endpoint, what, failure.reason, self.endpoint_setting))
                wait, last = backoff(retry + 1), failure.reason
            else:
                wait = self._rate_limit_wait(status, resp_headers, body, retry + 1)
                rate_limited = wait is not None
                if wait is None and (status in (409, 423) or (status >= 500 and repeatable)):
                    wait = backoff(retry + 1)  # conflict/locked: refused while an action runs; 5xx: a hiccup
                if wait is None:
                    raise self._refusal(status, body, what)
                last = describe(status, body)
            retry += 1
            if retry > self.max_retries:
                raise HetznerError("%s: %s still failed after %d attempts in %d s (last: %s); try again later%s"
                                   % (self.API, what, retry, waited, last,
                                      ", or raise max_retries" if rate_limited else ""), status, error_object(body).get("code"))
            if waited + wait > self.max_wait:
                raise HetznerError("%s: %s %s; retrying would wait %d s in all, more than max_wait (%d s) allows; try again later"
                                   "%s" % (self.API, what, "hit the rate limit" if rate_limited else "failed (%s)" % last,
                                           waited + wait, self.max_wait, " or raise max_wait" if rate_limited else ""),
                                   status, error_object(body).get("code"))
            self.sleep(wait)
            waited += wait

    def _send(self, method, url, headers, payload):
        """(status, headers, body, None) for an HTTP answer of any status; (None, None, b"", _Failure) for none."""
        if self._opener is None:
            # One TLS context for all requests: making one per request (what open_url does) costs more than
            # the request. Certificates are verified; no redirect is followed, so credentials go nowhere else.
            self._opener = Request(http_agent=USER_AGENT, follow_redirects="none", timeout=self.timeout,
                                   context=ssl.create_default_context())
        try:
            response = self._opener.open(method, url, data=payload, headers=headers)
            # One byte more than allowed tells an answer that is too long from one that just fits.
            return response.getcode(), response.headers, response.read(self.max_answer_bytes + 1), None
        except HTTPError as exc:
            try:
                body = exc.read(self.max_answer_bytes + 1)
            except (AttributeError, OSError, http.client.HTTPException):
                body = b""
            return exc.code, exc.headers, body, None
        except URLError as exc:
            return None, None, b"", self._failure(exc.reason)
        except (OSError, http.client.HTTPException) as exc:
            return None, None, b"", self._failure(exc)

    def _failure(self, reason):
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return _Failure("got no answer within %d s (timeout)" % self.timeout, True)
        if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.HTTPException)):
            return _Failure("lost the connection (%s)" % (reason.__class__.__name__,), True)
        # Refused connections, unknown hosts, certificate errors: retrying will not help.
        return _Failure("could not be reached: %s" % (getattr(reason, "strerror", None) or reason,), False)

    def _decode(self, body, what):
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError:
            raise HetznerError("%s answered %s with something that is not JSON (%r); is %s (%s) the API's address?"
                               % (self.API, what, snippet(body), self.endpoint_setting, self.endpoint)) from None

    def request_object(self, method, path, key=None, data=None):
        """The JSON object an endpoint answers with (or the one under `key` of it), checked to be one."""
        answer = self.request(method, path, data=data)
        found = answer.get(key) if isinstance(answer, dict) and key else answer
        if not isinstance(found, dict):
            raise self._malformed("%s %s" % (method, path), "a %r object" % key if key else "a JSON object")
        return found

    def _malformed(self, what, expected):
        return HetznerError("%s answered %s without %s; is %s (%s) the API's address?"
                            % (self.API, what, expected, self.endpoint_setting, self.endpoint))


class CloudClient(_Client):
    """The Hetzner Cloud API (https://docs.hetzner.cloud): servers, networks, rescue and reset actions."""

    API = "Hetzner Cloud"
    DEFAULT_ENDPOINT = CLOUD_ENDPOINT

    def __init__(self, token, endpoint=None, token_setting="the API token", endpoint_setting="the Cloud endpoint", **kwargs):
        super().__init__(endpoint, endpoint_setting, **kwargs)
        token = str(token).strip() if token is not None else ""
        if not token:
            raise HetznerError("no Hetzner Cloud API token: set %s (a project's token from Security > API tokens)" % token_setting)
        if any(not char.isprintable() or char.isspace() or ord(char) > 126 for char in token):
            # The message must not show the token, and the header would break with it.
            raise HetznerError("%s is not an API token: it contains spaces or characters outside printable ASCII" % token_setting)
        self._token = token
        self.token_setting = token_setting

    def _headers(self):
        return {"Authorization": "Bearer " + self._token, "Accept": "application/json"}

    def _rate_limit_wait(self, status, headers, body, retry):
        if status != 429:
            return None
        headers = headers or {}
        told = seconds_until(headers.get("Retry-After"), self.clock())
        if told is not None:
            return max(1, told)
        # The bucket refills a request a second: back off, but never past the moment it is full again.
        wait = backoff(retry)
        try:
            reset_in = int(float(headers.get("RateLimit-Reset"))) - int(self.clock())
        except (TypeError, ValueError):
            return wait
        return max(1, min(wait, reset_in))

    def _refusal(self, status, body, what):
        error = error_object(body)
        code = error.get("code")
        if status == 401:
            return HetznerError("Hetzner Cloud rejected the API token (%s): check %s" % (describe(status, body), self.token_setting), status, code)
        if status == 403 and code == "token_readonly":
            return HetznerError("Hetzner Cloud refused %s: the API token is read-only, and this needs a Read & Write token (check %s)"
                                % (what, self.token_setting), status, code)
        if status == 403:
            return HetznerError("Hetzner Cloud refused %s (%s): the API token may not do this (check %s)"
                                % (what, describe(status, body), self.token_setting), status, code)
        return super()._refusal(status, body, what)

    def paginated(self, path, key, params=None):
        """Every item of a list endpoint, following meta.pagination to the last page."""
        items, page, pages = [], 1, 0
        while True:
            what = "GET %s (page %d)" % (path, page)
            answer = self.request("GET", path, dict(params or {}, page=page, per_page=CLOUD_PAGE_SIZE))
            chunk = answer.get(key) if isinstance(answer, dict) else None
            if not isinstance(chunk, list):
                raise self._malformed(what, "a %r list" % key)
            items.extend(chunk)
            next_page = ((answer.get("meta") or {}).get("pagination") or {}).get("next_page")
            if not next_page:
                return items
            if not isinstance(next_page, int) or next_page <= page:
                raise self._malformed(what, "a next page after %d (it named %r)" % (page, next_page))
            pages += 1
            if pages >= self.max_pages:
                raise HetznerError("%s answered GET %s with %d pages and still names a next page; stopped there. Is %s (%s) "
                                   "the API's address?" % (self.API, path, pages, self.endpoint_setting, self.endpoint))
            page = next_page

    def servers(self, label_selector=None, status=None, name=None):
        """All servers, narrowed by the API to a label selector, statuses and a name when given."""
        params = {}
        if name:
            params["name"] = name
        if label_selector:
            params["label_selector"] = label_selector
        if status:
            params["status"] = list(status)
        return self.paginated("/servers", "servers", params)

    def server(self, server_id):
        return self.request_object("GET", "/servers/%d" % int(server_id), "server")

    def networks(self):
        return self.paginated("/networks", "networks")

    def ssh_keys(self):
        """The project's SSH keys: id, name, fingerprint, public_key, labels."""
        return self.paginated("/ssh_keys", "ssh_keys")

    def enable_rescue(self, server_id, ssh_keys=(), rescue_type="linux64"):
        """Boots into rescue at the next reboot. Returns {root_password, action}; never log the password."""
        data = {"type": rescue_type}
        if ssh_keys:
            data["ssh_keys"] = list(ssh_keys)
        return self.request_object("POST", "/servers/%d/actions/enable_rescue" % int(server_id), data=data)

    def disable_rescue(self, server_id):
        return self.request_object("POST", "/servers/%d/actions/disable_rescue" % int(server_id), "action")

    def reset(self, server_id):
        """A hard reset, like pressing the reset button."""
        return self.request_object("POST", "/servers/%d/actions/reset" % int(server_id), "action")

    def reboot(self, server_id):
        """A soft reboot: the operating system is asked to restart (ACPI)."""
        return self.request_object("POST", "/servers/%d/actions/reboot" % int(server_id), "action")

    def poweroff(self, server_id):
        """Cuts the power, like pulling the plug."""
        return self.request_object("POST", "/servers/%d/actions/poweroff" % int(server_id), "action")

    def poweron(self, server_id):
        return self.request_object("POST", "/servers/%d/actions/poweron" % int(server_id), "action")

    def action(self, action_id):
        return self.request_object("GET", "/actions/%d" % int(action_id), "action")


class RobotClient(_Client):
    """The Hetzner Robot webservice (https://robot.hetzner.com/doc/webservice/en.html): dedicated servers."""

    API = "Hetzner Robot"
    DEFAULT_ENDPOINT = ROBOT_ENDPOINT
    FORM_ENCODED = True

    def __init__(self, user, password, endpoint=None, credentials_setting="the webservice user and password",
                 endpoint_setting="the Robot endpoint", **kwargs):
        super().__init__(endpoint, endpoint_setting, **kwargs)
        if not user or not password:
            raise HetznerError("no Hetzner Robot webservice credentials: set %s (the webservice user from Robot > Settings > "
                               "Webservice and app settings, not the Robot login)" % credentials_setting)
        self._auth = base64.b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode("ascii")
        self.credentials_setting = credentials_setting

    def _headers(self):
        return {"Authorization": "Basic " + self._auth, "Accept": "application/json"}

    def _rate_limit_wait(self, status, headers, body, retry):
        error = error_object(body)
        if status != 403 or error.get("code") != "RATE_LIMIT_EXCEEDED":
            return None
        # `interval` is the window the limit counts over; a request is allowed again within it.
        try:
            interval = int(error.get("interval") or 0)
        except (TypeError, ValueError):
            interval = 0
        wait = backoff(retry, base=5)
        return max(1, min(wait, interval)) if interval > 0 else wait

    def _refusal(self, status, body, what):
        error = error_object(body)
        if status == 401:
            return HetznerError("Hetzner Robot rejected the webservice user and password (%s): check %s"
                                % (describe(status, body), self.credentials_setting), status, error.get("code"))
        return super()._refusal(status, body, what)

    def servers(self):
        """Every dedicated server of the account ([] for an account without any)."""
        try:
            answer = self.request("GET", "/server")
        except HetznerError as exc:
            if exc.code == "SERVER_NOT_FOUND":  # the webservice's answer for an account without servers
                return []
            raise
        if not isinstance(answer, list) or not all(isinstance(entry, dict) for entry in answer):
            raise self._malformed("GET /server", "a list of servers")
        return [entry.get("server", entry) for entry in answer]

    def server(self, number):
        return self.request_object("GET", "/server/%d" % int(number), "server")

    def keys(self):
        """The account's SSH keys (Key management): name, fingerprint, type, size, data; [] when it has none."""
        try:
            answer = self.request("GET", "/key")
        except HetznerError as exc:
            if exc.code == "NOT_FOUND":  # the webservice's answer for an account without keys
                return []
            raise
        if not isinstance(answer, list) or not all(isinstance(entry, dict) for entry in answer):
            raise self._malformed("GET /key", "a list of keys")
        return [entry.get("key", entry) for entry in answer]

    def rescue(self, number):
        """The rescue state: `active`, `os` ... and, while active, a `password`: never log it."""
        return self.request_object("GET", "/boot/%d/rescue" % int(number), "rescue")

    def enable_rescue(self, number, os_name="linux", authorized_keys=()):
        """Boots the rescue system at the next reset; authorized_keys are key fingerprints known to Robot."""
        data = {"os": os_name}
        if authorized_keys:
            data["authorized_key[]"] = list(authorized_keys)
        return self.request_object("POST", "/boot/%d/rescue" % int(number), "rescue", data=data)

    def disable_rescue(self, number):
        return self.request_object("DELETE", "/boot/%d/rescue" % int(number), "rescue")

    def reset(self, number, reset_type="hw"):
        if reset_type not in ROBOT_RESET_TYPES:
            raise HetznerError("reset type %r is not one of %s" % (reset_type, ", ".join(ROBOT_RESET_TYPES)))
        return self.request_object("POST", "/reset/%d" % int(number), "reset", data={"type": reset_type})


def cloud_client(params, **kwargs):
    """A CloudClient from a module's parameters (CLOUD_ARGUMENT_SPEC and CLIENT_ARGUMENT_SPEC)."""
    cloud = params.get("cloud") or {}
    return CloudClient(cloud.get("token"), cloud.get("endpoint"), token_setting="cloud.token (or HCLOUD_TOKEN)",
                       endpoint_setting="cloud.endpoint", timeout=params["timeout"], max_retries=params["max_retries"],
                       max_wait=params["max_wait"], **kwargs)


def robot_client(params, **kwargs):
    """A RobotClient from a module's parameters (ROBOT_ARGUMENT_SPEC and CLIENT_ARGUMENT_SPEC)."""
    robot = params.get("robot") or {}
    return RobotClient(robot.get("user"), robot.get("password"), robot.get("endpoint"),
                       credentials_setting="robot.user and robot.password (or HROBOT_API_USER and HROBOT_API_PASSWORD)",
                       endpoint_setting="robot.endpoint", timeout=params["timeout"], max_retries=params["max_retries"],
                       max_wait=params["max_wait"], **kwargs)
