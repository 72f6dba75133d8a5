"""A stand-in for the Hetzner Cloud API and the Hetzner Robot webservice, on 127.0.0.1.

It speaks their documented JSON, so the real client code runs against it unchanged:

- Cloud (under ``/v1``, bearer token): ``GET /servers`` with ``name``, ``label_selector``, ``status``,
  ``page``/``per_page`` and ``meta.pagination``; ``GET /servers/{id}``; ``GET /networks``; ``GET /locations``
  (with ``name``: fsn1, nbg1 and hel1, what hetzner.hcloud's inventory asks to check the token);
  ``GET /ssh_keys`` (with ``name``, ``fingerprint``, ``label_selector``) and ``GET /ssh_keys/{id}``;
  ``POST /servers/{id}/actions/enable_rescue``, ``disable_rescue``, ``reset``, ``reboot``,
  ``poweroff``, ``poweron``; ``GET /actions/{id}``; the ``RateLimit-*`` headers on every answer and
  ``429 rate_limit_exceeded`` when the bucket is empty. ``api.cloud.claimed_pages = N`` makes every
  list name a next page up to page N, like a broken API.
- Robot (under ``/robot``, basic auth): ``GET /server``, ``GET /server/{number}``, ``GET /key``,
  ``GET /key/{fingerprint}``, ``GET|POST|DELETE /boot/{number}/rescue``, ``GET|POST /reset/{number}``,
  and ``403 RATE_LIMIT_EXCEEDED`` with ``max_request`` and ``interval`` when a window is full.

Rescue systems and resets behave like the real ones: enabling a rescue system answers with a new
root password (Cloud: ``root_password``; Robot: ``rescue.password``, also shown by ``GET`` while the
rescue is active), and the rescue is one-shot: the reset (Cloud: ``reset``, ``reboot`` or ``poweron``;
Robot: every reset type but ``power_long``) that boots the server into it clears it again (Cloud's
``rescue_enabled`` becomes false, Robot's ``active`` too). SSH keys are kept with their public key
text (``api.cloud.add_ssh_key(name, public_key)``, ``api.robot.add_key(name, public_key)``); keys the
account does not have are refused with ``400 invalid_input`` / ``400 INVALID_INPUT``. Executed resets
are recorded (``api.cloud.resets``: (server id, command); ``api.robot.resets``: (number, type)).
Cloud actions finish at once, or after ``api.cloud.action_steps`` polls of ``GET /actions/{id}``
(``running`` until then); ``api.cloud.fail_action(command, code, message)`` makes the next action of
that command end with ``status: error``.

The hook ``api.on_reset`` (None, or a callable) is how other tests "reboot" a test host: it is called
synchronously, before the API answers, whenever a reset boots a server::

    api.on_reset = lambda kind, server, rescue: ...

``kind`` is ``"cloud"`` or ``"robot"``; ``server`` is the server's dict (as ``GET /servers/{id}`` or
``GET /server/{number}`` shows it); ``rescue`` is None when the server boots normally, else the rescue
system it boots into: ``{"active": True, "password": ..., "os": "linux64" | "linux" | ...,
"authorized_keys": [the public key texts of its keys], "keys": [the key ids (Cloud) or fingerprints
(Robot) as the request gave them], "host_private_key": the private host key Robot told at enable (with
``api.robot.rescue_host_keys = True``; else None; Cloud has none)}``. When the hook raises, the API answers ``500 hook_failed``
with the exception's text, and ``api.hook_errors`` keeps the exception. The answer waits for the
hook: a hook that takes longer than the client's ``timeout`` makes the reset fail as a timeout, so
start slow work (a host's reboot) in a thread of its own. Poweroffs do not call it (nothing boots).

State lives in plain objects (``api.cloud``, ``api.robot``) that tests and the benchmark shape
directly; every request is recorded (``api.requests``); failures can be injected in front of the
real answers (``api.fail(...)``: any status and body, malformed JSON, or a stall for timeouts).

    with FakeHetzner() as api:
        api.cloud.add_servers(120)
        api.robot.add_server(name="dedi1")
        api.fail("/v1/servers", 503)
        ... api.cloud_url, api.robot_url, api.count("/v1/servers")
"""
import base64
import collections
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CLOUD_TOKEN = "test-cloud-token-0123456789"
ROBOT_USER = "#ws+testuser"
ROBOT_PASSWORD = "robot-secret-pw"
LOCATIONS = ["fsn1", "nbg1", "hel1"]
# A location as the API shows it (GET /locations, and inside a server): (city, country, latitude, longitude).
_PLACES = {"fsn1": ("Falkenstein", "DE", 50.47612, 12.370071), "nbg1": ("Nuremberg", "DE", 49.452102, 11.076665),
           "hel1": ("Helsinki", "FI", 60.169855, 24.938379)}
CLOUD_STATUSES = ("initializing", "starting", "running", "stopping", "off", "deleting", "migrating", "rebuilding", "unknown")

# One recorded request: method, path (with the /v1 or /robot prefix), query ({name: [values]}),
# form ({name: [values]} of a form-encoded body) and json (a JSON body, or None).
Request = collections.namedtuple("Request", "method path query form json")


def _error(code, message, status=None, **extra):
    """An error body: Cloud's {"error": {code, message}}, Robot's adds the status."""
    error = {"code": code, "message": message}
    if status is not None:
        error["status"] = status
    error.update(extra)
    return {"error": error}


def fingerprint(public_key):
    """The MD5 fingerprint both APIs show for an OpenSSH public key: 'aa:bb:...'."""
    parts = public_key.split()
    blob = base64.b64decode(parts[1] if len(parts) > 1 else parts[0])
    digest = hashlib.md5(blob).hexdigest()  # what Hetzner shows; not used for security
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def make_public_key(comment="test", seed=None):
    """An OpenSSH ed25519 public key line with a well-formed blob (not the half of a usable key pair)."""
    material = hashlib.sha256(str(seed if seed is not None else comment).encode()).digest()
    blob = b"".join(len(part).to_bytes(4, "big") + part for part in (b"ssh-ed25519", material))
    return "ssh-ed25519 %s %s" % (base64.b64encode(blob).decode(), comment)


def make_key_pair(comment="test"):
    """A usable ed25519 key pair: (private key in OpenSSH format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private.decode(), "%s %s" % (public.decode(), comment)


def _key_facts(public_key):
    """(type, size in bits) of an OpenSSH public key, as Robot lists them."""
    kind = public_key.split()[0]
    return {"ssh-ed25519": ("ED25519", 256), "ssh-rsa": ("RSA", 4096)}.get(kind, (kind.upper(), 256))


def location_object(name):
    """A location as GET /locations lists it; one this fake does not know gets id 99 in Falkenstein's zone."""
    city, country, latitude, longitude = _PLACES.get(name, (name.upper(), "DE", 50.47612, 12.370071))
    return {"id": LOCATIONS.index(name) + 1 if name in LOCATIONS else 99, "name": name, "description": city + " DC Park 1",
            "country": country, "city": city, "latitude": latitude, "longitude": longitude, "network_zone": "eu-central"}


def _rescue_password():
    return "rescue-" + secrets.token_urlsafe(12)


def _split_selector(selector):
    """Split a label selector at the commas that are not inside an `in (...)` list."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term.strip() for term in terms if term.strip()]


def label_matches(labels, selector):
    """Hetzner's label selector: k, !k, k=v, k==v, k!=v, k in (a,b), k notin (a,b), joined by commas."""
    for term in _split_selector(selector or ""):
        match = re.match(r"^(\S+)\s+(in|notin)\s+\((.*)\)$", term)
        if match:
            key, operator, values = match.group(1), match.group(2), [v.strip() for v in match.group(3).split(",")]
            if (labels.get(key) in values) != (operator == "in"):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


class CloudState:
    """The servers, networks and actions of one Hetzner Cloud project, as the API returns them."""

    def __init__(self):
        self.servers = []
        self.networks = []
        self.ssh_keys = []
        self.actions = {}
        self.rescue = {}   # server id -> the rescue system its next boot starts: see on_reset
        self.resets = []   # (server id, command) of every reset, reboot, poweroff and poweron
        self.action_steps = 0  # polls of GET /actions/{id} an action stays running
        self.claimed_pages = 0  # a broken API: when set, every list names a next page up to this page
        self._polls_left = {}  # action id -> polls until it finishes
        self._failing = {}  # command -> the error its next action ends with
        self._ids = itertools.count(1)
        # The token bucket behind the RateLimit-* headers: the API allows 3600 requests an hour,
        # refilled one a second. Tests shrink it to see 429s.
        self.set_rate_limit(3600, 1.0)

    def set_rate_limit(self, limit, refill_per_second=1.0):
        """A full bucket of `limit` requests, refilled by `refill_per_second`."""
        self.rate_limit = limit
        self.refill_per_second = refill_per_second
        self._remaining = float(limit)
        self._refilled_at = time.time()

    def add_network(self, name, ip_range="10.0.0.0/16"):
        network = {"id": next(self._ids), "name": name, "ip_range": ip_range, "subnets": [], "routes": [], "servers": [],
                   "labels": {}, "protection": {"delete": False}, "created": "2026-01-01T00:00:00+00:00"}
        self.networks.append(network)
        return network

    def add_ssh_key(self, name, public_key, labels=None):
        """An SSH key of the project, as GET /ssh_keys lists it."""
        key = {"id": next(self._ids), "name": name, "fingerprint": fingerprint(public_key), "public_key": public_key.strip(),
               "labels": dict(labels or {}), "created": "2026-01-01T00:00:00+00:00"}
        self.ssh_keys.append(key)
        return key

    def ssh_key(self, key_id):
        return next((k for k in self.ssh_keys if k["id"] == key_id), None)

    def fail_action(self, command, code="action_failed", message="Action failed"):
        """The next action of `command` (reset_server, enable_rescue, ...) ends with status error."""
        self._failing[command] = {"code": code, "message": message}

    def add_server(self, name=None, labels=None, location=None, server_type="cx22", networks=None, status="running",
                   ipv4=True, ipv6=True, image="debian-12", rescue_enabled=False):
        """A server as GET /servers lists it. `networks` maps a network (its dict or name) to the server's address."""
        index = len(self.servers)
        server_id = 1000 + index
        location = location or LOCATIONS[index % len(LOCATIONS)]
        private = []
        for network, ip in (networks or {}).items():
            network = network if isinstance(network, dict) else self.network(network)
            private.append({"network": network["id"], "ip": ip, "alias_ips": [], "mac_address": "86:00:00:00:%02x:%02x" % divmod(index % 65536, 256)})
            network["servers"].append(server_id)
        location_ = location_object(location)
        server = {
            "id": server_id,
            "name": name or "cloud%03d" % index,
            "status": status,
            "created": "2026-01-01T00:00:00+00:00",
            "public_net": {
                "ipv4": {"id": 5000 + index, "ip": "192.0.2.%d" % (index % 250 + 1), "blocked": False,
                         "dns_ptr": "static.%d.2.0.192.clients.your-server.de" % (index % 250 + 1)} if ipv4 else None,
                "ipv6": {"id": 6000 + index, "ip": "2001:db8:%x::/64" % index, "blocked": False, "dns_ptr": []} if ipv6 else None,
                "floating_ips": [], "firewalls": [],
            },
            "private_net": private,
            "server_type": {"id": 22, "name": server_type, "description": server_type.upper(), "cores": 2, "memory": 4.0,
                            "disk": 40, "architecture": "x86", "cpu_type": "shared"},
            # Datacenters are being phased out of the API; servers carry their location directly too.
            "datacenter": {"id": 10 + location_["id"], "name": location + "-dc14", "description": location + " DC14",
                           "location": location_},
            "location": location_,
            "image": {"id": 114690387, "type": "system", "name": image, "description": image.replace("-", " ").title(),
                      "os_flavor": image.split("-")[0], "os_version": image.split("-")[-1]} if image else None,
            "iso": None,
            "rescue_enabled": rescue_enabled,
            "locked": False,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21990232555520,
            "protection": {"delete": False, "rebuild": False},
            "labels": dict(labels or {}),
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": 40,
            "placement_group": None,
        }
        self.servers.append(server)
        return server

    def add_servers(self, count, **kwargs):
        return [self.add_server(**kwargs) for _index in range(count)]

    def network(self, name_or_id):
        return next(n for n in self.networks if name_or_id in (n["name"], n["id"]))

    def server(self, server_id):
        return next((s for s in self.servers if s["id"] == server_id), None)

    def select(self, label_selector, statuses, name=None):
        return [s for s in self.servers if label_matches(s["labels"], label_selector) and (not statuses or s["status"] in statuses)
                and name in (None, s["name"])]

    def action(self, command, server_id):
        action_id = next(self._ids)
        action = {"id": action_id, "command": command, "status": "running", "progress": 0,
                  "started": "2026-01-01T00:00:00+00:00", "finished": None,
                  "resources": [{"id": server_id, "type": "server"}], "error": None}
        self.actions[action_id] = action
        self._polls_left[action_id] = self.action_steps
        self._advance(action, self._failing.pop(command, None))
        return action

    def poll_action(self, action_id):
        """The action as GET /actions/{id} shows it now: one step further."""
        action = self.actions.get(action_id)
        if action is not None and action["status"] == "running":
            self._polls_left[action_id] -= 1
            self._advance(action, action.pop("_error", None))
        return action

    def _advance(self, action, error):
        left = self._polls_left[action["id"]]
        if left > 0:
            action["progress"] = int(100 * (self.action_steps - left) / self.action_steps)
            if error:
                action["_error"] = error
            return
        action.update(status="error" if error else "success", progress=100, finished="2026-01-01T00:00:01+00:00", error=error)

    def boot(self, server):
        """The server starts: into its rescue system when one is enabled, which that clears (one-shot)."""
        server["status"] = "running"
        rescue = self.rescue.pop(server["id"], None) if server["rescue_enabled"] else None
        server["rescue_enabled"] = False
        return rescue

    def take_request(self, now):
        """One request out of the bucket: (allowed, headers)."""
        self._remaining = min(self.rate_limit, self._remaining + (now - self._refilled_at) * self.refill_per_second)
        self._refilled_at = now
        allowed = self._remaining >= 1
        if allowed:
            self._remaining -= 1
        full_in = (self.rate_limit - self._remaining) / self.refill_per_second if self.refill_per_second else 3600
        headers = {"RateLimit-Limit": self.rate_limit, "RateLimit-Remaining": int(self._remaining),
                   "RateLimit-Reset": int(now + full_in + 0.999)}
        return allowed, headers


class RobotState:
    """The dedicated servers of one Hetzner Robot account, their rescue systems and resets."""

    def __init__(self):
        self.servers = []
        self.keys = []     # the account's SSH keys, as GET /key lists them (with their public key as `data`)
        self.rescue = {}   # server number -> the rescue object GET /boot/{number}/rescue returns
        self.resets = []   # (server number, type) of every reset executed
        # Whether an enabled rescue system tells its host key (host_key, as Robot documents it): the key pair
        # is made at enable, its private half goes to on_reset as rescue["host_private_key"].
        self.rescue_host_keys = False
        self.rescue_private_keys = {}  # server number -> the private host key of its enabled rescue system
        # Robot limits requests per (kind of) call over a sliding window: (max_request, interval) or None.
        self.rate_limit = None
        self._recent = collections.deque()

    def add_server(self, number=None, name="", dc="FSN1-DC14", product="AX41-NVMe", status="ready", ipv4=True):
        number = number or 300000 + len(self.servers) + 1
        ip = "198.51.100.%d" % (number % 250 + 1)
        net = "2001:db8:ff%02x::" % (number % 256)
        server = {
            "server_ip": ip if ipv4 else None,
            "server_ipv6_net": net,
            "server_number": number,
            "server_name": name,
            "product": product,
            "dc": dc,
            "traffic": "unlimited",
            "status": status,
            "cancelled": False,
            "paid_until": "2027-01-01",
            "ip": [ip] if ipv4 else [],
            "subnet": [{"ip": net, "mask": "64"}],
        }
        self.servers.append(server)
        self.rescue[number] = {"server_ip": server["server_ip"], "server_ipv6_net": net, "server_number": number,
                               "os": ["linux", "vkvm"], "active": False, "password": None, "authorized_key": [],
                               "host_key": [], "boot_time": None}
        return server

    def server(self, number):
        return next((s for s in self.servers if str(s["server_number"]) == str(number)), None)

    def add_key(self, name, public_key):
        """An SSH key of the account (Robot > Key management), as GET /key lists it."""
        kind, size = _key_facts(public_key)
        key = {"name": name, "fingerprint": fingerprint(public_key), "type": kind, "size": size, "data": public_key.strip(),
               "created_at": "2026-01-01 00:00:00"}
        self.keys.append(key)
        return key

    def key(self, fingerprint_):
        return next((k for k in self.keys if k["fingerprint"] == fingerprint_), None)

    def boot(self, number):
        """The server starts: into its rescue system when one is active, which that deactivates (one-shot)."""
        rescue = self.rescue[number]
        if not rescue["active"]:
            return None
        booted = {"active": True, "password": rescue["password"], "os": rescue["os"],
                  "authorized_keys": [self.key(k["key"]["fingerprint"])["data"] for k in rescue["authorized_key"]],
                  "keys": [k["key"]["fingerprint"] for k in rescue["authorized_key"]],
                  "host_private_key": self.rescue_private_keys.pop(number, None)}
        rescue.update(active=False, os=["linux", "vkvm"], password=None, authorized_key=[], host_key=[], boot_time=None)
        return booted

    def new_rescue_host_key(self, number):
        """The host_key list of a rescue system enabled now: empty, or a new ed25519 key when rescue_host_keys."""
        if not self.rescue_host_keys:
            return []
        private, public = make_key_pair("rescue%d" % number)
        self.rescue_private_keys[number] = private
        kind, size = _key_facts(public)
        return [{"key": {"fingerprint": fingerprint(public), "type": kind, "size": size, "data": public}}]

    def take_request(self, now):
        """Whether the sliding window has room for one more request."""
        if not self.rate_limit:
            return True
        max_request, interval = self.rate_limit[0], self.rate_limit[1]
        while self._recent and self._recent[0] <= now - interval:
            self._recent.popleft()
        if len(self._recent) >= max_request:
            return False
        self._recent.append(now)
        return True


class Failure:
    """An answer given instead of the real one, to requests whose path starts with `path`."""

    def __init__(self, path, status=500, body=None, headers=None, times=1, method=None, delay=0.0):
        self.path = path
        self.status = status
        self.body = body if body is not None else _error("unavailable", "injected failure", status if path.startswith("/robot") else None)
        self.headers = dict(headers or {})
        self.times = times
        self.method = method
        self.delay = delay  # seconds to stall before answering: longer than the client's timeout makes a timeout

    def matches(self, method, path):
        return path.startswith(self.path) and (self.method is None or self.method == method) and self.times > 0


class FakeHetzner:
    def __init__(self, cloud_token=CLOUD_TOKEN, robot_user=ROBOT_USER, robot_password=ROBOT_PASSWORD):
        self.cloud = CloudState()
        self.robot = RobotState()
        self.cloud_token = cloud_token
        self.robot_auth = "Basic " + base64.b64encode(("%s:%s" % (robot_user, robot_password)).encode()).decode()
        self.requests = []
        self.answers = []  # (path, status) of every answer given, in the order given
        self.failures = []
        self.on_reset = None  # called as on_reset(kind, server, rescue) when a reset boots a server: see the module docstring
        self.hook_errors = []
        self.lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- for tests -----------------------------------------------------------------------------------------

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    @property
    def cloud_url(self):
        return self.url + "/v1"

    @property
    def robot_url(self):
        return self.url + "/robot"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stopping.set()  # wakes stalled answers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def fail(self, path, status=500, body=None, headers=None, times=1, method=None, delay=0.0):
        """Answer the next `times` requests to `path...` with this status and body (a dict, or raw bytes)."""
        failure = Failure(path, status, body, headers, times, method, delay)
        with self.lock:
            self.failures.append(failure)
        return failure

    def count(self, prefix="", method=None):
        """How many requests went to paths starting with `prefix` (all of them by default)."""
        with self.lock:
            return len([r for r in self.requests if r.path.startswith(prefix) and method in (None, r.method)])

    def add_cloud_servers(self, count, **kwargs):
        return self.cloud.add_servers(count, **kwargs)

    def booted(self, kind, server, rescue):
        """Tell on_reset that `server` booted (into `rescue`, or normally): None, or the error answer."""
        if self.on_reset is None:
            return None
        try:
            self.on_reset(kind, server, rescue)
        except Exception as exc:  # pylint: disable=broad-except  # reported as the API's answer
            with self.lock:
                self.hook_errors.append(exc)
            return 500, _error("hook_failed", "on_reset failed: %s: %s" % (exc.__class__.__name__, exc), 500 if kind == "robot" else None)
        return None

    # -- the HTTP side -------------------------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def answer(self, status, body, headers=None):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                with fake.lock:
                    fake.answers.append((urlparse(self.path).path, status))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    for key, value in (headers or {}).items():
                        self.send_header(key, str(value))
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def do_GET(self):
                self.handle_request("GET")

            def do_POST(self):
                self.handle_request("POST")

            def do_DELETE(self):
                self.handle_request("DELETE")

            def handle_request(self, method):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                form, body = {}, None
                if raw and self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                    form = parse_qs(raw.decode(), keep_blank_values=True)
                elif raw:
                    body = json.loads(raw)
                request = Request(method, url.path, parse_qs(url.query, keep_blank_values=True), form, body)
                with fake.lock:
                    fake.requests.append(request)
                    failure = next((f for f in fake.failures if f.matches(method, url.path)), None)
                    if failure:
                        failure.times -= 1
                if failure:
                    if failure.delay:
                        fake._stopping.wait(failure.delay)
                    return self.answer(failure.status, failure.body, failure.headers)
                if url.path.startswith("/v1/"):
                    return self.cloud(request)
                if url.path.startswith("/robot/"):
                    return self.robot(request)
                return self.answer(404, _error("not_found", "no such endpoint"))

            # -- Cloud -----------------------------------------------------------------------------------

            def cloud(self, request):
                if self.headers.get("Authorization") != "Bearer " + fake.cloud_token:
                    return self.answer(401, _error("unauthorized", "unable to authenticate"))
                with fake.lock:
                    allowed, limits = fake.cloud.take_request(time.time())
                if not allowed:
                    return self.answer(429, _error("rate_limit_exceeded", "limit of %d requests per hour reached" % fake.cloud.rate_limit), limits)
                status, body = self.cloud_answer(request)
                return self.answer(status, body, limits)

            def cloud_answer(self, request):
                path = request.path[len("/v1"):].rstrip("/")
                parts = path.strip("/").split("/")
                query = request.query
                state = fake.cloud
                if request.method == "GET" and path in ("/servers", "/networks"):
                    statuses = query.get("status", [])
                    bad = [s for s in statuses if s not in CLOUD_STATUSES]
                    if bad:
                        return 400, _error("invalid_input", "invalid input in field 'status'",
                                           details={"fields": [{"name": "status", "messages": ["invalid status %s" % bad[0]]}]})
                    name = query.get("name", [None])[0]
                    items = state.select(query.get("label_selector", [""])[0], statuses, name) if path == "/servers" else state.networks
                    return 200, self.page(parts[0], items, query)
                if request.method == "GET" and path == "/locations":
                    name = query.get("name", [None])[0]
                    return 200, self.page("locations", [location_object(n) for n in LOCATIONS if name in (None, n)], query)
                if request.method == "GET" and path == "/ssh_keys":
                    name, fingerprint_ = query.get("name", [None])[0], query.get("fingerprint", [None])[0]
                    items = [k for k in state.ssh_keys if name in (None, k["name"]) and fingerprint_ in (None, k["fingerprint"])
                             and label_matches(k["labels"], query.get("label_selector", [""])[0])]
                    return 200, self.page("ssh_keys", items, query)
                if request.method == "GET" and parts[0] == "ssh_keys" and len(parts) == 2:
                    key = state.ssh_key(int(parts[1])) if parts[1].isdigit() else None
                    if key is None:
                        return 404, _error("not_found", "SSH key with ID '%s' not found" % parts[1])
                    return 200, {"ssh_key": key}
                if parts[0] == "servers" and len(parts) >= 2 and parts[1].isdigit():
                    server = state.server(int(parts[1]))
                    if server is None:
                        return 404, _error("not_found", "server with ID '%s' not found" % parts[1])
                    if request.method == "GET" and len(parts) == 2:
                        return 200, {"server": server}
                    if request.method == "POST" and len(parts) == 4 and parts[2] == "actions":
                        return self.cloud_action(server, parts[3], request.json or {})
                if request.method == "GET" and parts[0] == "actions" and len(parts) == 2 and parts[1].isdigit():
                    action = state.poll_action(int(parts[1]))
                    if action:
                        return 200, {"action": {k: v for k, v in action.items() if not k.startswith("_")}}
                    return 404, _error("not_found", "action with ID '%s' not found" % parts[1])
                return 404, _error("not_found", "not found")

            def cloud_action(self, server, command, body):
                state = fake.cloud
                if command == "enable_rescue":
                    rescue_type = body.get("type", "linux64")
                    if rescue_type != "linux64":
                        return 400, _error("invalid_input", "invalid input in field 'type'",
                                           details={"fields": [{"name": "type", "messages": ["must be linux64"]}]})
                    key_ids = body.get("ssh_keys") or []
                    keys = [state.ssh_key(k) if isinstance(k, int) else None for k in key_ids]
                    if None in keys:
                        return 400, _error("invalid_input", "SSH key with ID '%s' not found" % key_ids[keys.index(None)],
                                           details={"fields": [{"name": "ssh_keys", "messages": ["not found"]}]})
                    password = _rescue_password()
                    server["rescue_enabled"] = True
                    state.rescue[server["id"]] = {"active": True, "password": password, "os": rescue_type,
                                                  "authorized_keys": [k["public_key"] for k in keys], "keys": list(key_ids)}
                    return 201, {"root_password": password, "action": self.visible(state.action("enable_rescue", server["id"]))}
                if command == "disable_rescue":
                    server["rescue_enabled"] = False
                    state.rescue.pop(server["id"], None)
                    return 201, {"action": self.visible(state.action("disable_rescue", server["id"]))}
                commands = {"reset": "reset_server", "reboot": "reboot_server", "poweroff": "stop_server", "poweron": "start_server"}
                if command not in commands:
                    return 404, _error("not_found", "not found")
                state.resets.append((server["id"], command))
                if command == "poweroff":
                    server["status"] = "off"
                elif command != "poweron" or server["status"] == "off":
                    failed = fake.booted("cloud", server, state.boot(server))
                    if failed:
                        return failed
                return 201, {"action": self.visible(state.action(commands[command], server["id"]))}

            @staticmethod
            def visible(action):
                return {k: v for k, v in action.items() if not k.startswith("_")}

            @staticmethod
            def page(key, items, query):
                page = max(1, int(query.get("page", ["1"])[0]))
                per_page = max(1, min(int(query.get("per_page", ["25"])[0]), 50))
                last = max(1, (len(items) + per_page - 1) // per_page, min(page + 1, fake.cloud.claimed_pages))
                meta = {"pagination": {"page": page, "per_page": per_page, "previous_page": page - 1 if page > 1 else None,
                                       "next_page": page + 1 if page < last else None, "last_page": last,
                                       "total_entries": len(items)}}
                return {key: items[(page - 1) * per_page:page * per_page], "meta": meta}

            # -- Robot -----------------------------------------------------------------------------------

            def robot(self, request):
                if self.headers.get("Authorization") != fake.robot_auth:
                    return self.answer(401, _error("UNAUTHORIZED", "Unauthorized", 401))
                with fake.lock:
                    allowed = fake.robot.take_request(time.time())
                if not allowed:
                    max_request, interval = fake.robot.rate_limit[0], fake.robot.rate_limit[1]
                    return self.answer(403, _error("RATE_LIMIT_EXCEEDED", "Rate limit exceeded", 403,
                                                   max_request=max_request, interval=interval))
                status, body = self.robot_answer(request)
                return self.answer(status, body)

            def robot_answer(self, request):
                parts = request.path[len("/robot/"):].strip("/").split("/")
                state = fake.robot
                method = request.method
                if method == "GET" and parts == ["server"]:
                    if not state.servers:
                        return 404, _error("SERVER_NOT_FOUND", "No server found", 404)
                    return 200, [{"server": s} for s in state.servers]
                if method == "GET" and parts[0] == "key":
                    if len(parts) == 1:
                        if not state.keys:
                            return 404, _error("NOT_FOUND", "No keys found", 404)
                        return 200, [{"key": k} for k in state.keys]
                    key = state.key("/".join(parts[1:]))
                    if key is None:
                        return 404, _error("NOT_FOUND", "Key not found", 404)
                    return 200, {"key": key}
                server = state.server(parts[1]) if len(parts) == 2 else None
                if len(parts) == 2 and server is None:
                    return 404, _error("SERVER_NOT_FOUND", "Server not found", 404)
                number = server and server["server_number"]
                if method == "GET" and parts[0] == "server" and server is not None:
                    return 200, {"server": dict(server, reset=True, rescue=True, vnc=True, windows=False, plesk=False,
                                                cpanel=False, wol=True, hot_swap=False, linked_storagebox=None)}
                if parts[0] == "boot" and len(parts) == 3 and parts[2] == "rescue":
                    server = state.server(parts[1])
                    if server is None:
                        return 404, _error("SERVER_NOT_FOUND", "Server not found", 404)
                    rescue = state.rescue[server["server_number"]]
                    if method == "GET":
                        return 200, {"rescue": rescue}
                    if method == "POST":
                        os_name = (request.form.get("os") or [""])[0]
                        if os_name not in ("linux", "vkvm"):
                            return 400, _error("INVALID_INPUT", "Invalid input parameters", 400, missing=None, invalid=["os"])
                        fingerprints = [v for k, vs in request.form.items() if k.startswith("authorized_key") for v in vs]
                        keys = [state.key(f) for f in fingerprints]
                        if None in keys:
                            return 400, _error("INVALID_INPUT", "Invalid input parameters", 400, missing=None, invalid=["authorized_key"])
                        rescue.update(active=True, os=os_name, password=_rescue_password(), boot_time=None,
                                      host_key=state.new_rescue_host_key(server["server_number"]),
                                      authorized_key=[{"key": {k: key[k] for k in ("name", "fingerprint", "type", "size")}} for key in keys])
                        return 200, {"rescue": rescue}
                    if method == "DELETE":
                        rescue.update(active=False, os=["linux", "vkvm"], password=None, authorized_key=[])
                        return 200, {"rescue": rescue}
                if parts[0] == "reset" and server is not None:
                    if method == "GET":
                        return 200, {"reset": {"server_ip": server["server_ip"], "server_ipv6_net": server["server_ipv6_net"],
                                               "server_number": number, "type": ["sw", "hw", "man", "power", "power_long"],
                                               "operating_status": "not supported"}}
                    if method == "POST":
                        kind = (request.form.get("type") or [""])[0]
                        if kind not in ("sw", "hw", "man", "power", "power_long"):
                            return 400, _error("INVALID_INPUT", "Invalid input parameters", 400, missing=None, invalid=["type"])
                        state.resets.append((number, kind))
                        if kind != "power_long":  # a long press switches the server off; everything else boots it
                            failed = fake.booted("robot", server, state.boot(number))
                            if failed:
                                return failed
                        return 200, {"reset": {"server_ip": server["server_ip"], "server_ipv6_net": server["server_ipv6_net"],
                                               "server_number": number, "type": kind}}
                return 404, _error("NOT_FOUND", "Not found", 404)

        return Handler
