"""A stand-in for the Hetzner Cloud API and the Robot webservice, on 127.0.0.1.

It speaks their documented JSON: Cloud's paginated /v1/servers and /v1/networks with label selectors,
Robot's /server, /server/{number} and /boot/{number}/rescue with basic auth, and their errors. State
lives in plain lists so tests (and the benchmark) can shape it; every request is counted; failures
can be queued (rate limits, 5xx, malformed JSON) to be answered before the real ones.

    with FakeHetzner() as api:
        api.add_cloud_servers(120)
        api.cloud_url, api.robot_url, api.requests
"""
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CLOUD_TOKEN = "test-cloud-token-0123456789"
ROBOT_USER = "#ws+testuser"
ROBOT_PASSWORD = "robot-secret-pw"
LOCATIONS = ["fsn1", "nbg1", "hel1"]


def cloud_server(i, labels=None, location=None, server_type="cx22", private=None, status="running"):
    location = location or LOCATIONS[i % len(LOCATIONS)]
    return {
        "id": 1000 + i,
        "name": "cloud%03d" % i,
        "status": status,
        "public_net": {"ipv4": {"ip": "192.0.2.%d" % (i % 250 + 1)}, "ipv6": {"ip": "2001:db8:%x::/64" % i}},
        "private_net": [{"network": net, "ip": ip} for net, ip in (private or {}).items()],
        "server_type": {"name": server_type},
        "datacenter": {"name": location + "-dc1", "location": {"name": location}},
        "labels": dict(labels or {}),
        "image": {"name": "debian-12", "description": "Debian 12"},
        "rescue_enabled": False,
    }


def robot_server(number, name, dc="FSN1-DC14", ip="198.51.100.%d"):
    return {
        "server_ip": ip % (number % 250 + 1),
        "server_ipv6_net": "2001:db8:ff%02x::" % (number % 256),
        "server_number": number,
        "server_name": name,
        "product": "AX41-NVMe",
        "dc": dc,
        "traffic": "unlimited",
        "status": "ready",
        "cancelled": False,
        "paid_until": "2027-01-01",
        "ip": [ip % (number % 250 + 1)],
        "subnet": [{"ip": "2001:db8:ff%02x::" % (number % 256), "mask": "64"}],
    }


def label_matches(labels, selector):
    """The subset of Hetzner's label selector syntax the tests use: k, !k, k=v, k!=v, joined by commas."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeHetzner:
    def __init__(self):
        self.cloud_servers = []
        self.networks = []
        self.robot_servers = []
        self.robot_rescue = {}
        self.requests = []
        self.queued = []  # (path prefix, status, headers, body) answered before the real thing
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.lock = threading.Lock()

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
        self._server.shutdown()
        self._server.server_close()

    def add_cloud_servers(self, count, **kwargs):
        start = len(self.cloud_servers)
        for i in range(start, start + count):
            self.cloud_servers.append(cloud_server(i, **kwargs))
        return self.cloud_servers[start:]

    def queue(self, path_prefix, status, body, headers=None, times=1):
        for _time in range(times):
            self.queued.append((path_prefix, status, headers or {}, body))

    def count(self, prefix=""):
        return len([r for r in self.requests if r.startswith(prefix)])

    # -- the HTTP side ---------------------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def answer(self, status, body, headers=None):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for key, value in (headers or {}).items():
                    self.send_header(key, str(value))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlparse(self.path)
                with fake.lock:
                    fake.requests.append(url.path + ("?" + url.query if url.query else ""))
                    queued = next((q for q in fake.queued if url.path.startswith(q[0])), None)
                    if queued:
                        fake.queued.remove(queued)
                if queued:
                    return self.answer(queued[1], queued[3], queued[2])
                if url.path.startswith("/v1/"):
                    return self.cloud(url)
                if url.path.startswith("/robot/"):
                    return self.robot(url)
                return self.answer(404, {"error": {"code": "not_found", "message": "no such endpoint"}})

            def cloud(self, url):
                if self.headers.get("Authorization") != "Bearer " + CLOUD_TOKEN:
                    return self.answer(401, {"error": {"code": "unauthorized", "message": "unable to authenticate"}})
                query = parse_qs(url.query)
                page = int(query.get("page", ["1"])[0])
                per_page = min(int(query.get("per_page", ["25"])[0]), 50)
                if url.path == "/v1/servers":
                    items = [s for s in fake.cloud_servers
                             if label_matches(s["labels"], query.get("label_selector", [""])[0])
                             and (not query.get("status") or s["status"] in query["status"])]
                    key = "servers"
                elif url.path == "/v1/networks":
                    items, key = fake.networks, "networks"
                else:
                    return self.answer(404, {"error": {"code": "not_found", "message": "not found"}})
                last = max(1, (len(items) + per_page - 1) // per_page)
                chunk = items[(page - 1) * per_page:page * per_page]
                meta = {"pagination": {"page": page, "per_page": per_page, "previous_page": page - 1 if page > 1 else None,
                                       "next_page": page + 1 if page < last else None, "last_page": last,
                                       "total_entries": len(items)}}
                return self.answer(200, {key: chunk, "meta": meta})

            def robot(self, url):
                expected = "Basic " + base64.b64encode(("%s:%s" % (ROBOT_USER, ROBOT_PASSWORD)).encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self.answer(401, {"error": {"status": 401, "code": "UNAUTHORIZED", "message": "Unauthorized"}})
                parts = url.path[len("/robot/"):].strip("/").split("/")
                if parts == ["server"]:
                    if not fake.robot_servers:
                        return self.answer(404, {"error": {"status": 404, "code": "SERVER_NOT_FOUND", "message": "No server found"}})
                    return self.answer(200, [{"server": s} for s in fake.robot_servers])
                if len(parts) == 2 and parts[0] == "server":
                    match = [s for s in fake.robot_servers if str(s["server_number"]) == parts[1]]
                    if match:
                        return self.answer(200, {"server": dict(match[0], reset=True, rescue=True, linux=True)})
                if len(parts) == 3 and parts[0] == "boot" and parts[2] == "rescue":
                    number = int(parts[1])
                    return self.answer(200, {"rescue": {"server_number": number, "active": fake.robot_rescue.get(number, False),
                                                        "os": ["linux"], "authorized_key": [], "host_key": []}})
                return self.answer(404, {"error": {"status": 404, "code": "NOT_FOUND", "message": "Not found"}})

        return Handler
