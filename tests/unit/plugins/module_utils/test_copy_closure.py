"""nix_copy_closure's own logic: method choice, ssh command lines, and the serve protocol against real Nix.

The protocol tests speak to a real `nix-store --serve` of this machine's store and copy into a
throw-away chroot store (`--store DIR`), so they check the bytes Nix itself accepts.
"""
import gzip
import os
import shutil
import subprocess
import textwrap

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.copy_closure import (
    FdReader, FdWriter, ProtocolError, StreamWriter, add_to_store_nar, batches, choose_method,
    dump_store_path, hello, import_failure_hint, nix_store_uri, query_path_infos, query_valid_paths, ssh_argv,
    ssh_wrapper_script, string, topo_order,
)

NIX_ENV = dict(os.environ, NIX_CONFIG="substituters =\nsandbox = false\nbuild-users-group =")
needs_nix = pytest.mark.skipif(shutil.which("nix-store") is None, reason="needs Nix on this machine")


# -- pure logic -------------------------------------------------------------------------------------------

def test_auto_method():
    assert choose_method("auto", False) == "stream"
    assert choose_method("auto", True) == "ssh"
    assert choose_method("auto", True, ssh_possible=False) == "stream"
    assert choose_method("ssh", False) == "ssh" and choose_method("stream", True) == "stream"


def test_batches_keep_order_and_bound_size():
    sizes = {"p0": 60, "p1": 60, "p2": 10, "p3": 200, "p4": 1}
    assert list(batches(list(sizes), sizes, 100)) == [["p0"], ["p1", "p2"], ["p3"], ["p4"]]
    assert list(batches(list(sizes), sizes, None)) == [list(sizes)]
    assert not list(batches([], {}, 100))


def test_topo_order_puts_dependencies_first_and_keeps_the_rest():
    refs = {"app": ["lib", "app", "outside"], "lib": ["libc"], "libc": [], "doc": []}
    order = topo_order(["app", "doc", "lib", "libc"], refs)
    assert sorted(order) == ["app", "doc", "lib", "libc"]
    assert order.index("libc") < order.index("lib") < order.index("app")
    # Already in a good order: unchanged.
    assert topo_order(["libc", "lib", "app", "doc"], refs) == ["libc", "lib", "app", "doc"]


def test_ssh_argv_takes_the_connection_settings_and_overrides_multiplexing_and_compression():
    settings = {"ssh_executable": "/opt/ssh", "remote_user": "deploy", "port": 2222, "private_key_file": "~/k",
                "ssh_args": "-C -o ControlMaster=auto -o ControlPersist=60s", "timeout": 10,
                "ssh_common_args": '-o ProxyCommand="ssh -W %h:%p bastion"', "ssh_extra_args": "-C",
                "host_key_checking": True}
    argv = ssh_argv(settings)
    assert argv[0] == "/opt/ssh" and "-C" not in argv
    # ssh takes the first value of an option: ours come before ssh_args'.
    assert argv.index("ControlMaster=no") < argv.index("ControlMaster=auto")
    assert argv[1:7] == ["-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "Compression=no"]
    assert "User=deploy" in argv and "ConnectTimeout=10" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == os.path.expanduser("~/k")
    assert "ProxyCommand=ssh -W %h:%p bastion" in argv
    assert "StrictHostKeyChecking=no" not in argv
    compressed = ssh_argv(dict(settings, host_key_checking=False), compress=True)
    assert compressed[-1] == "-C" and "Compression=no" not in compressed and "StrictHostKeyChecking=no" in compressed
    assert ssh_argv({})[0] == "ssh"


def test_ssh_argv_multiplexes_over_ansibles_master_only_when_it_compresses_as_asked():
    settings = {"ssh_args": "-o ControlMaster=auto -o ControlPersist=60s", "control_path": "/root/.ansible/cp/abc",
                "master_compresses": False}
    argv = ssh_argv(settings)
    assert argv[1:5] == ["-o", "ControlMaster=no", "-o", 'ControlPath="/root/.ansible/cp/abc"']
    # The master does not compress: a compressed copy needs a connection of its own, and the other way round.
    assert "ControlPath=none" in ssh_argv(settings, compress=True)
    assert "ControlPath=none" in ssh_argv(dict(settings, master_compresses=True))
    assert 'ControlPath="/root/.ansible/cp/abc"' in ssh_argv(dict(settings, master_compresses=True), compress=True)
    assert "ControlPath=none" in ssh_argv(dict(settings, control_path=None))


def test_ssh_wrapper_passes_every_argument_intact_and_never_runs_itself(tmp_path):
    wrapper = tmp_path / "ssh"
    # What a ProxyCommand does: run `ssh` from PATH. It must be the real one, not the wrapper again.
    show = "printf '[%s]' \"$@\"; command -v ssh"
    wrapper.write_text(ssh_wrapper_script(["/bin/sh", "-c", show, "sh", "-o", "ProxyCommand=ssh -W %h:%p 'b'"],
                                          "/usr/bin:/bin"))
    wrapper.chmod(0o700)
    env = dict(os.environ, PATH="%s:/usr/bin:/bin" % tmp_path)
    out = subprocess.run(["ssh", "host", "a b"], capture_output=True, text=True, env=env, check=True).stdout
    assert out == "[-o][ProxyCommand=ssh -W %%h:%%p 'b'][host][a b]%s\n" % shutil.which("ssh", path="/usr/bin:/bin")
    with pytest.raises(ValueError):
        ssh_wrapper_script(["ssh"], "/usr/bin")


def test_store_uri():
    assert nix_store_uri("root", "10.0.0.5") == "ssh://root@10.0.0.5"
    assert nix_store_uri(None, "web1", compress=True) == "ssh://web1?compress=true"
    assert (nix_store_uri("deploy", "2001:db8::1", remote_program="sudo -n -u root nix-store")
            == "ssh://deploy@[2001:db8::1]?remote-program=sudo%20-n%20-u%20root%20nix-store")


def test_failure_hints():
    assert "become: true" in import_failure_hint("error: cannot add path '/nix/store/x' because it lacks a valid signature")
    assert "nix-collect-garbage" in import_failure_hint("error: writing to file: No space left on device")
    assert import_failure_hint("error: something else") == ""


def test_reader_refuses_a_chatty_login_shell():
    reader, writer = os.pipe()
    os.write(writer, b"Welcome to the host!\n" + b"\0" * 16)
    os.close(writer)
    with pytest.raises(ProtocolError, match="Welcome to the host"):
        FdReader(reader, "on web1").greeting()
    os.close(reader)


def test_reader_says_when_the_other_side_hangs_up_mid_nar():
    reader, writer = os.pipe()
    os.write(writer, b"x" * 10)
    os.close(writer)
    sink_r, sink_w = os.pipe()
    with pytest.raises(ProtocolError, match="in the middle of a NAR"):
        FdReader(reader, "on web1").copy_to(FdWriter(sink_w), 20)
    for fd in (reader, sink_r, sink_w):
        os.close(fd)


# -- the serve protocol, against real Nix ---------------------------------------------------------------

@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Three fresh store paths on this machine: app refers to lib, lib to data (a directory, an executable, a link)."""
    tmp = tmp_path_factory.mktemp("paths")
    expr = tmp / "paths.nix"
    expr.write_text(textwrap.dedent("""
        let
          mk = name: script: derivation {
            inherit name; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
            args = [ "-c" script ];
          };
          data = mk "ansinix-unit-data-%(pid)d" ("mkdir -p $out/d; head -c 300000 /dev/urandom > $out/d/blob; "
            + "printf '#!/bin/sh\\n' > $out/run; chmod +x $out/run; ln -s d/blob $out/link");
          lib = mk "ansinix-unit-lib-%(pid)d" "echo ${data} > $out";
        in { inherit data lib; app = mk "ansinix-unit-app-%(pid)d" "echo ${lib} > $out"; }
    """ % {"pid": os.getpid()}))
    out = {}
    for attr in ("data", "lib", "app"):
        out[attr] = subprocess.run(["nix-build", str(expr), "-A", attr, "--out-link", str(tmp / attr)], env=NIX_ENV,
                                   capture_output=True, text=True, check=True).stdout.strip()
    return out


def serve(*args):
    return subprocess.Popen(["nix-store"] + list(args) + ["--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=NIX_ENV)


def query(argv):
    return subprocess.run(["nix-store", "--query"] + argv, env=NIX_ENV, capture_output=True, text=True, check=True).stdout.split()


@needs_nix
def test_path_infos_match_what_nix_store_reports(paths):
    proc = serve()
    os.write(proc.stdin.fileno(), hello() + query_path_infos(list(paths.values())))
    reader = FdReader(proc.stdout.fileno(), "local")
    assert reader.greeting() >> 8 == 2
    infos = reader.path_infos()
    proc.kill()
    proc.wait()
    for path in paths.values():
        info = infos[path]
        assert info.nar_size == int(query(["--size", path])[0])
        assert info.nar_hash == query(["--hash", path])[0]
        assert info.references == query(["--references", path])
        assert info.deriver == query(["--deriver", path])[0]
    assert infos[paths["app"]].references == [paths["lib"]]


@needs_nix
def test_relay_into_another_store_via_pipes_and_via_a_file(paths, tmp_path):
    """Dump from this store, add to a chroot store: the NAR arrives bit for bit, references and all."""
    order = topo_order([paths["app"], paths["lib"], paths["data"]],
                       {paths["app"]: [paths["lib"]], paths["lib"]: [paths["data"]]})
    assert order == [paths["data"], paths["lib"], paths["app"]]
    source = serve()
    src_writer = FdWriter(source.stdin.fileno())
    src = FdReader(source.stdout.fileno(), "source")
    src_writer.write(hello() + query_path_infos(order))
    src.greeting()
    infos = src.path_infos()

    # Live: pipe to pipe (splice where there is one), the target answering 1 per path.
    store = str(tmp_path / "live")
    target = serve("--store", store, "--write")
    out = FdWriter(target.stdin.fileno())
    out.write(hello())
    acks = FdReader(target.stdout.fileno(), "target")
    acks.greeting()
    out.write(query_valid_paths(order, lock=True))
    assert acks.strings() == []
    for path in order:
        src_writer.write(dump_store_path(path))
        out.write(add_to_store_nar(infos[path]))
        src.copy_to(out, infos[path].nar_size)
        assert acks.u64() == 1
    out.write(query_valid_paths(order))
    assert sorted(acks.strings()) == sorted(order)
    target.stdin.close()
    assert target.wait() == 0, target.stderr.read()
    nar_bytes = sum(info.nar_size for info in infos.values())
    assert src.count >= nar_bytes and out.count > nar_bytes

    # Files: the same requests, gzipped into a file that nix-store --serve --write reads.
    batch = tmp_path / "batch.gz"
    with gzip.open(batch, "wb", compresslevel=1) as stream:
        writer = StreamWriter(stream)
        writer.write(hello())
        for path in order:
            src_writer.write(dump_store_path(path))
            writer.write(add_to_store_nar(infos[path]))
            src.copy_to(writer, infos[path].nar_size)
    source.kill()
    source.wait()
    files_store = str(tmp_path / "files")
    feed = subprocess.run(["gzip", "-dc", str(batch)], capture_output=True, check=True).stdout
    proc = subprocess.run(["nix-store", "--store", files_store, "--serve", "--write"], input=feed, capture_output=True,
                          env=NIX_ENV, check=False)
    assert proc.returncode == 0, proc.stderr

    for store_dir in (store, files_store):
        check = subprocess.run(["nix-store", "--store", store_dir, "--verify-path"] + order, env=NIX_ENV,
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
        assert query(["--store", store_dir, "--references", paths["app"]]) == [paths["lib"]]
        real = store_dir + paths["data"]
        assert os.readlink(real + "/link") == "d/blob" and os.access(real + "/run", os.X_OK)
        with open(real + "/d/blob", "rb") as copied, open(paths["data"] + "/d/blob", "rb") as original:
            assert copied.read() == original.read()


@needs_nix
def test_a_cut_off_stream_leaves_the_target_store_valid_without_the_cut_path(paths, tmp_path):
    store = str(tmp_path / "cut")
    dump = subprocess.run(["nix-store", "--dump", paths["data"]], capture_output=True, check=True).stdout
    lib_nar = subprocess.run(["nix-store", "--dump", paths["lib"]], capture_output=True, check=True).stdout
    proc = serve()
    os.write(proc.stdin.fileno(), hello() + query_path_infos([paths["data"], paths["lib"]]))
    reader = FdReader(proc.stdout.fileno(), "local")
    reader.greeting()
    infos = reader.path_infos()
    proc.kill()
    proc.wait()
    info = infos[paths["data"]]
    assert len(dump) == info.nar_size
    request = hello() + add_to_store_nar(info) + dump + add_to_store_nar(infos[paths["lib"]]) + lib_nar[:len(lib_nar) // 2]
    cut = subprocess.run(["nix-store", "--store", store, "--serve", "--write"], input=request, capture_output=True,
                         env=NIX_ENV, check=False)
    assert cut.returncode != 0
    invalid = subprocess.run(["nix-store", "--store", store, "--check-validity", "--print-invalid", paths["data"], paths["lib"]],
                             capture_output=True, text=True, env=NIX_ENV, check=True).stdout.split()
    assert invalid == [paths["lib"]]  # the whole one is there, the cut one is not
    verify = subprocess.run(["nix-store", "--store", store, "--verify", "--check-contents"], capture_output=True, text=True,
                            env=NIX_ENV, check=False)
    assert verify.returncode == 0, verify.stderr


@needs_nix
def test_greeting_after_a_become_line(paths):
    proc = subprocess.Popen(["/bin/sh", "-c", "echo BECOME-SUCCESS-abcdefgh; exec nix-store --serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=NIX_ENV)
    os.write(proc.stdin.fileno(), hello() + query_path_infos([paths["data"]]))
    reader = FdReader(proc.stdout.fileno(), "become")
    reader.greeting()
    assert list(reader.path_infos()) == [paths["data"]]
    proc.kill()
    proc.wait()


def test_strings_are_padded_to_eight_bytes():
    assert string("abc") == b"\x03" + b"\0" * 7 + b"abc" + b"\0" * 5
    assert string("") == b"\0" * 8
