"""The one check every SSH public key from a host or an API passes before it becomes a known_hosts line."""
import base64

import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.host_keys import HostKeyError, public_key_line
from ansinix_test.fakehetzner import make_key_pair, make_public_key

KEY = make_public_key("root@bm1")
TYPE, BLOB = KEY.split()[:2]


def blob_of(kind, payload=b"x" * 32):
    return base64.b64encode(b"".join(len(p).to_bytes(4, "big") + p for p in (kind.encode(), payload))).decode()


@pytest.mark.parametrize("text", [KEY, KEY + "\n", "%s %s" % (TYPE, BLOB), "  %s  \n\n" % KEY, make_key_pair("x")[1]])
def test_one_plain_key_line_is_accepted_without_its_comment(text):
    line = public_key_line(text)
    assert line == " ".join(text.split()[:2]) and "\n" not in line


def test_every_known_type_whose_blob_says_the_same():
    for kind in ("ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"):
        assert public_key_line("%s %s" % (kind, blob_of(kind))) == "%s %s" % (kind, blob_of(kind))


@pytest.mark.parametrize("text, words", [
    # The attack: a second line that makes the printing host a CA for every host.
    (KEY + "\n@cert-authority * " + KEY, "gave 2 lines where one SSH public key line was expected"),
    ("@cert-authority * " + KEY, "not an SSH public key of a known type"),
    ("@revoked " + KEY, "not an SSH public key of a known type"),
    ("* " + KEY, "not an SSH public key of a known type"),
    ("ssh-dss " + blob_of("ssh-dss"), "not an SSH public key of a known type"),
    ("ssh-ed25519-cert-v01@openssh.com " + blob_of("ssh-ed25519-cert-v01@openssh.com"), "not an SSH public key of a known type"),
    ("", "gave 0 lines"),
    ("ssh-ed25519", "not an SSH public key of a known type"),
    ("ssh-ed25519 not*base64", "is not base64"),
    ("ssh-ed25519 QUJDRA", "is not base64"),
    ("ssh-ed25519 " + blob_of("ssh-rsa"), "labelled ssh-ed25519 whose data is of type 'ssh-rsa'"),
    ("ssh-ed25519 " + base64.b64encode(b"\xff\xff\xff\xffabc").decode(), "whose data is no SSH key"),
    ("ssh-ed25519 %s root\x1b[2J" % BLOB, "a comment of control characters"),
    (KEY + "\r" + KEY, "gave 2 lines"),
])
def test_anything_else_is_refused_in_one_line(text, words):
    with pytest.raises(HostKeyError) as refused:
        public_key_line(text, "bm1")
    message = str(refused.value)
    assert message.startswith("bm1 gave ") and words in message and "\n" not in message, message
    assert message.endswith("refusing to trust it")


def test_not_text_is_refused():
    with pytest.raises(HostKeyError, match="gave no SSH public key"):
        public_key_line(None)
