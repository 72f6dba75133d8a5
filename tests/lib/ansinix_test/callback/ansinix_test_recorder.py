"""Records every task result of a playbook run as JSON lines, for the tests to assert on."""
import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: ansinix_test_recorder
type: aggregate
short_description: records task results for the ansinix.nixos tests
description:
  - Writes one JSON line per task result to the file named by ANSINIX_TEST_EVENTS.
  - Each line has the seconds from the task's start to that result (C(seconds)).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ansinix_test_recorder"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._task_started = time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_started = time.monotonic()

    def v2_playbook_on_handler_task_start(self, task):
        self._task_started = time.monotonic()

    def _record(self, result, status):
        path = os.environ.get("ANSINIX_TEST_EVENTS")
        if not path:
            return
        event = {"host": result._host.get_name(), "task": result._task.name or result._task.get_name(), "status": status,
                 "seconds": round(time.monotonic() - self._task_started, 3),
                 "result": json.loads(json.dumps(result._result, default=str))}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")
