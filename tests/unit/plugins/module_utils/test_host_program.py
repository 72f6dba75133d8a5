"""host_program: a module's own code run by a plain `python3 -`, as the action plugins send it to a host."""
import subprocess
import sys

from ansible_collections.ansinix.nixos.plugins.module_utils import activation, activation_runner, host_program, nix, nixos, switch
from ansible_collections.ansinix.nixos.plugins.module_utils.host_program import HostModule, parse_result, program
from ansible_collections.ansinix.nixos.plugins.plugin_utils.host_run import sources_of

SOURCES = sources_of(activation, activation_runner, host_program, nix, nixos, switch)


def run(code):
    # -I: nothing of this checkout or the venv on the path, as on a host.
    return subprocess.run([sys.executable, "-I", "-"], input=code, capture_output=True, text=True, check=False)


def test_the_switch_code_runs_from_the_sources_alone_and_prints_its_result():
    params = {"path": "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-x", "rollback": False, "generation": None,
              "action": "switch", "install_bootloader": False, "profile": "/nix/var/nix/profiles/system", "specialisation": None,
              "require_nixos": False, "rollback_on_failure": True, "confirm_timeout": 30, "keep_generations": 0,
              "lock_timeout": 300, "activation_timeout": 1800, "nix_path": [], "use_environment_nix_path": False, "options": {}}
    proc = run(program(SOURCES, switch.__name__, "run_on_host", params, "nixos_switch"))
    assert proc.returncode == 0, proc.stderr
    # The module's own check of the parameters, worded as the module words it.
    message = "keep_generations must be 1 or more (the current generation is always kept), not 0"
    assert parse_result(proc.stdout) == {"failed": True, "msg": message}


def test_the_runner_reads_its_own_source_on_the_host():
    # The switch writes the runner's source into its status directory: inspect must find it without a file.
    proc = run(program(SOURCES, activation.__name__, "runner_source", None, "x").replace(
        "result = getattr(entry, 'runner_source')(json.loads('null'))", "result = {'n': len(entry.runner_source())}"))
    assert parse_result(proc.stdout) == {"n": len(activation.runner_source())}


def test_a_crash_is_one_line_with_the_traceback_aside():
    proc = run(program(SOURCES, switch.__name__, "run_on_host", {}, "nixos_switch"))
    result = parse_result(proc.stdout)
    assert result["failed"] is True and result["msg"] == "nixos_switch failed on the host: KeyError: 'nix_path'"
    assert "Traceback" in result["exception"]


def test_parse_result_takes_the_last_json_line_and_nothing_else():
    assert parse_result('noise\n{"a": 1}\r\nShared connection to x closed.\n') == {"a": 1}
    assert parse_result("Traceback ...\nKeyError: 'x'\n") is None
    assert parse_result('{"a": \n') is None


def test_host_module_finds_and_runs_commands_as_ansible_module_does(tmp_path):
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\nread line; echo \"got $line $FOO\"; echo err >&2; exit 3\n")
    tool.chmod(0o755)
    module = HostModule({"x": 1})
    assert module.get_bin_path("tool", opt_dirs=[str(tmp_path)]) == str(tool)
    assert module.get_bin_path("no-such-tool-here", opt_dirs=[str(tmp_path)]) is None
    assert module.run_command([str(tool)], data="hi", environ_update={"FOO": "bar"}) == (3, "got hi bar\n", "err\n")
    assert module.run_command([str(tmp_path / "missing")])[0] != 0
