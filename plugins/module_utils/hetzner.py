# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Clients for the Hetzner Cloud API and the Hetzner Robot webservice.

Shared by the inventory plugin and the bootstrap modules. Retries what is worth retrying (rate
limits, 5xx, timeouts) with a bounded back-off, follows pagination to the end, and turns every other
failure into one line that names the credential or setting to fix. Credentials never appear in
messages.
"""

from __future__ import annotations

import base64
import json
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import urlencode
from ansible.module_utils.urls import open_url

CLOUD_ENDPOINT = "https://api.hetzner.cloud/v1"
ROBOT_ENDPOINT = "https://robot-ws.your-server.de"
CLOUD_PAGE_SIZE = 50


class HetznerError(Exception):
    """One line for the user: what failed and what to change."""

    def __init__(self, msg, status=None):
        super().__init__(msg)
        self.msg = msg
        self.status = status


class _Client:
    NAME = "Hetzner"
    FORM_ENCODED = False  # the Robot webservice takes form fields, the Cloud API JSON

    def __init__(self, endpoint, timeout=30, max_retries=5, max_wait=60, sleep=time.sleep):
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.sleep = sleep
        self.requests = 0

    def _headers(self):
        raise NotImplementedError

    def _error(self, status, body, path):
        raise NotImplementedError

    def _retry_after(self, status, headers, body):
        """Seconds to wait before retrying, or None when the answer is final."""
        raise NotImplementedError

    def request(self, method, path, params=None, data=None):
        url = self.endpoint + path + ("?" + urlencode(params, doseq=True) if params else "")
        payload = None
        headers = self._headers()
        if data is not None:
            if self.FORM_ENCODED:
                payload, headers["Content-Type"] = urlencode(data, doseq=True), "application/x-www-form-urlencoded"
            else:
                payload, headers["Content-Type"] = json.dumps(data), "application/json"
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            try:
                resp = open_url(url, method=method, headers=headers, data=payload, timeout=self.timeout,
                                validate_certs=True, follow_redirects="safe")
                status, body, resp_headers = resp.getcode(), resp.read(), resp.headers
            except HTTPError as exc:
                status, body, resp_headers = exc.code, exc.read() if hasattr(exc, "read") else b"", exc.headers
            except (URLError, OSError) as exc:
                # Timeouts and refused connections: worth a bounded retry.
                if attempt <= self.max_retries:
                    self.sleep(min(2 ** attempt, self.max_wait))
                    continue
                reason = getattr(exc, "reason", exc)
                raise HetznerError("%s at %s could not be reached after %d attempts: %s (check the endpoint and the network)"
                                   % (self.NAME, self.endpoint, attempt, reason))
            if 200 <= status < 300:
                return self._json(body, path)
            wait = self._retry_after(status, resp_headers, body)
            if wait is not None and attempt <= self.max_retries:
                if wait > self.max_wait:
                    raise HetznerError("%s rate limit reached for %s; it resets in %d s, longer than this client waits (%d s). "
                                       "Try again later" % (self.NAME, path, wait, self.max_wait), status)
                self.sleep(wait)
                continue
            self._error(status, body, path)

    def _json(self, body, path):
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError:
            raise HetznerError("%s answered %s with something that is not JSON (%r...); is the endpoint %s right?"
                               % (self.NAME, path, body[:60], self.endpoint))

    @staticmethod
    def _error_message(body):
        try:
            err = json.loads(body).get("error") or {}
            return err.get("message") or err.get("code") or ""
        except (ValueError, AttributeError):
            return ""


class CloudClient(_Client):
    NAME = "Hetzner Cloud"

    def __init__(self, token, endpoint=CLOUD_ENDPOINT, **kwargs):
        super().__init__(endpoint, **kwargs)
        if not token:
            raise HetznerError("no Hetzner Cloud API token: set cloud.token (a vault variable or lookup is fine) or the "
                               "HCLOUD_TOKEN environment variable")
        self._token = token

    def _headers(self):
        return {"Authorization": "Bearer " + self._token, "Accept": "application/json"}

    def _retry_after(self, status, headers, body):
        if status == 429:
            for name in ("Retry-After",):
                if headers and headers.get(name):
                    return max(1, int(float(headers.get(name))))
            if headers and headers.get("RateLimit-Reset"):
                return max(1, int(float(headers.get("RateLimit-Reset"))) - int(time.time()))
            return 1
        if status >= 500:
            return 2
        return None

    def _error(self, status, body, path):
        detail = self._error_message(body)
        if status == 401:
            raise HetznerError("Hetzner Cloud rejected the API token (401 %s): check cloud.token or HCLOUD_TOKEN" % detail, status)
        if status == 403:
            raise HetznerError("Hetzner Cloud refused %s with this API token (403 %s): the token needs read access to the project"
                               % (path, detail), status)
        raise HetznerError("Hetzner Cloud answered %s with %d %s" % (path, status, detail), status)

    def paginated(self, path, key, params=None):
        """Every item of a list endpoint, following meta.pagination to the last page."""
        items, page = [], 1
        while page:
            answer = self.request("GET", path, dict(params or {}, page=page, per_page=CLOUD_PAGE_SIZE))
            if not isinstance(answer, dict) or key not in answer:
                raise HetznerError("Hetzner Cloud answered %s without %r; is the endpoint %s right?" % (path, key, self.endpoint))
            items.extend(answer[key])
            page = ((answer.get("meta") or {}).get("pagination") or {}).get("next_page")
        return items

    def servers(self, label_selector=None, status=None):
        params = {}
        if label_selector:
            params["label_selector"] = label_selector
        if status:
            params["status"] = list(status)
        return self.paginated("/servers", "servers", params)

    def networks(self):
        return self.paginated("/networks", "networks")


class RobotClient(_Client):
    NAME = "Hetzner Robot"
    FORM_ENCODED = True

    def __init__(self, user, password, endpoint=ROBOT_ENDPOINT, **kwargs):
        super().__init__(endpoint, **kwargs)
        if not user or not password:
            raise HetznerError("no Hetzner Robot webservice credentials: set robot.user and robot.password (or ROBOT_USER "
                               "and ROBOT_PASSWORD); they are the webservice user of the Robot, not your login")
        self._auth = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()

    def _headers(self):
        return {"Authorization": "Basic " + self._auth, "Accept": "application/json"}

    def _retry_after(self, status, headers, body):
        if status == 403:
            try:
                err = json.loads(body).get("error") or {}
            except (ValueError, AttributeError):
                return None
            if err.get("code") == "RATE_LIMIT_EXCEEDED":
                return max(1, int(err.get("interval") or 1))
            return None
        if status >= 500:
            return 2
        return None

    def _error(self, status, body, path):
        detail = self._error_message(body)
        if status == 401:
            raise HetznerError("Hetzner Robot rejected the webservice user and password (401): check robot.user and "
                               "robot.password (or ROBOT_USER and ROBOT_PASSWORD)", status)
        raise HetznerError("Hetzner Robot answered %s with %d %s" % (path, status, detail), status)

    def servers(self):
        try:
            answer = self.request("GET", "/server")
        except HetznerError as exc:
            if exc.status == 404:  # the webservice's answer for an account without servers
                return []
            raise
        if not isinstance(answer, list):
            raise HetznerError("Hetzner Robot answered /server with something that is not a server list; is the endpoint %s right?"
                               % self.endpoint)
        return [entry.get("server", entry) for entry in answer]

    def server(self, number):
        return self.request("GET", "/server/%d" % int(number)).get("server", {})

    def rescue(self, number):
        return self.request("GET", "/boot/%d/rescue" % int(number)).get("rescue", {})
