"""A stand-in for the Hetzner Cloud API and the Hetzner Robot webservice, on 127.0.0.1.

It speaks their documented JSON, so the real client code runs against it unchanged:

- Cloud (under ``/v1``, bearer token): ``GET /servers`` with ``label_selector``, ``status``,
  ``page``/``per_page`` and ``meta.pagination``; ``GET /servers/{id}``; ``GET /networks``;
  ``POST /servers/{id}/actions/enable_rescue`` and ``.../reset``; ``GET /actions/{id}``; the
  ``RateLimit-*`` headers on every answer and ``429 rate_limit_exceeded`` when the bucket is empty.
- Robot (under ``/robot``, basic auth): ``GET /server``, ``GET /server/{number}``,
  ``GET|POST|DELETE /boot/{number}/rescue``, ``GET|POST /reset/{number}``, and
  ``403 RATE_LIMIT_EXCEEDED`` with ``max_request`` and ``interval`` when a window is full.

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
import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CLOUD_TOKEN = "test-cloud-token-0123456789"
ROBOT_USER = "#ws+testuser"
ROBOT_PASSWORD = "robot-secret-pw"
LOCATIONS = ["fsn1", "nbg1", "hel1"]
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
        self.actions = {}
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
        location_object = {"id": LOCATIONS.index(location) + 1 if location in LOCATIONS else 99, "name": location,
                           "city": location.upper(), "country": "DE", "network_zone": "eu-central"}
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
            "datacenter": {"id": 10 + location_object["id"], "name": location + "-dc14", "description": location + " DC14",
                           "location": location_object},
            "location": location_object,
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

    def select(self, label_selector, statuses):
        return [s for s in self.servers if label_matches(s["labels"], label_selector) and (not statuses or s["status"] in statuses)]

    def action(self, command, server_id):
        action_id = next(self._ids)
        self.actions[action_id] = {"id": action_id, "command": command, "status": "success", "progress": 100,
                                   "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:01+00:00",
                                   "resources": [{"id": server_id, "type": "server"}], "error": None}
        return self.actions[action_id]

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
        self.rescue = {}   # server number -> the rescue object GET /boot/{number}/rescue returns
        self.resets = []   # (server number, type) of every reset executed
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
                    items = state.select(query.get("label_selector", [""])[0], statuses) if path == "/servers" else state.networks
                    return 200, self.page(parts[0], items, query)
                if parts[0] == "servers" and len(parts) >= 2 and parts[1].isdigit():
                    server = state.server(int(parts[1]))
                    if server is None:
                        return 404, _error("not_found", "server with ID '%s' not found" % parts[1])
                    if request.method == "GET" and len(parts) == 2:
                        return 200, {"server": server}
                    if request.method == "POST" and parts[2:] == ["actions", "enable_rescue"]:
                        server["rescue_enabled"] = True
                        return 201, {"root_password": "fake-rescue-root-pw", "action": state.action("enable_rescue", server["id"])}
                    if request.method == "POST" and parts[2:] == ["actions", "disable_rescue"]:
                        server["rescue_enabled"] = False
                        return 201, {"action": state.action("disable_rescue", server["id"])}
                    if request.method == "POST" and parts[2:] == ["actions", "reset"]:
                        return 201, {"action": state.action("reset_server", server["id"])}
                if request.method == "GET" and parts[0] == "actions" and len(parts) == 2 and parts[1].isdigit():
                    action = state.actions.get(int(parts[1]))
                    if action:
                        return 200, {"action": action}
                return 404, _error("not_found", "not found")

            @staticmethod
            def page(key, items, query):
                page = max(1, int(query.get("page", ["1"])[0]))
                per_page = max(1, min(int(query.get("per_page", ["25"])[0]), 50))
                last = max(1, (len(items) + per_page - 1) // per_page)
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
                        keys = [v for k, vs in request.form.items() if k.startswith("authorized_key") for v in vs]
                        rescue.update(active=True, os=os_name, authorized_key=[{"key": {"fingerprint": k}} for k in keys],
                                      password=None if keys else "fake-rescue-pw")
                        return 200, {"rescue": rescue}
                    if method == "DELETE":
                        rescue.update(active=False, os=["linux", "vkvm"], password=None, authorized_key=[])
                        return 200, {"rescue": rescue}
                if parts[0] == "reset" and server is not None:
                    if method == "GET":
                        return 200, {"reset": {"server_ip": server["server_ip"], "server_ipv6_net": server["server_ipv6_net"],
                                               "server_number": number, "type": ["sw", "hw", "man"], "operating_status": "not supported"}}
                    if method == "POST":
                        kind = (request.form.get("type") or [""])[0]
                        if kind not in ("sw", "hw", "man", "power", "power_long"):
                            return 400, _error("INVALID_INPUT", "Invalid input parameters", 400, missing=None, invalid=["type"])
                        state.resets.append((number, kind))
                        return 200, {"reset": {"server_ip": server["server_ip"], "server_ipv6_net": server["server_ipv6_net"],
                                               "server_number": number, "type": kind}}
                return 404, _error("NOT_FOUND", "Not found", 404)

        return Handler
