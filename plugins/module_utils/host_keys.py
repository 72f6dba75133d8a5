# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""SSH public host keys from untrusted sources (a host's output, an API's answer), checked before they
become a known_hosts line.

A known_hosts file trusts far more than a key per line: markers such as ``@cert-authority *`` make one
line vouch for every host. So what a host or an API hands over is accepted only as exactly one line
``<type> <base64>`` (a trailing comment, as ``ssh-keygen -y`` prints it, is dropped), of a key type
OpenSSH knows, whose base64 decodes to a key blob that starts with that same type.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct

# The plain public key types of OpenSSH (no certificates, no DSA: OpenSSH 9.8 removed it).
KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)
_BASE64 = re.compile(r"\A[A-Za-z0-9+/]+={0,2}\Z")
# A comment: printable ASCII words, nothing a known_hosts reader would take for more.
_COMMENT = re.compile(r"\A[\x21-\x7e]+( [\x21-\x7e]+)*\Z")
_MAX_LENGTH = 16384


class HostKeyError(ValueError):
    """An SSH public key that is refused; its message says why in one line."""


def _shown(text):
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return repr(text if len(text) <= 60 else text[:57] + "...")


def public_key_line(text, source="the host"):
    """`text` as the known_hosts key `<type> <base64>`; a HostKeyError naming `source` when it is anything else."""
    if not isinstance(text, str):
        raise HostKeyError("%s gave no SSH public key (got %s)" % (source, type(text).__name__))
    lines = text.strip().splitlines()
    if len(lines) != 1:
        raise HostKeyError("%s gave %d lines where one SSH public key line was expected (%s); refusing to trust it"
                           % (source, len(lines), _shown(text.strip())))
    line = lines[0].strip()
    if len(line) > _MAX_LENGTH:
        raise HostKeyError("%s gave an SSH public key of %d characters; refusing to trust it" % (source, len(line)))
    fields = line.split(None, 2)
    if len(fields) < 2 or fields[0] not in KEY_TYPES:
        raise HostKeyError("%s gave %s, not an SSH public key of a known type (%s); refusing to trust it"
                           % (source, _shown(line), ", ".join(KEY_TYPES)))
    kind, blob_text = fields[0], fields[1]
    if len(fields) == 3 and not _COMMENT.match(fields[2]):
        raise HostKeyError("%s gave an SSH public key with a comment of control characters (%s); refusing to trust it"
                           % (source, _shown(fields[2])))
    if not _BASE64.match(blob_text):
        raise HostKeyError("%s gave a %s key that is not base64 (%s); refusing to trust it" % (source, kind, _shown(blob_text)))
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise HostKeyError("%s gave a %s key that is not base64 (%s); refusing to trust it" % (source, kind, _shown(blob_text)))
    # The blob starts with its own type as an SSH string: a uint32 length, then the name.
    embedded = None
    if len(blob) >= 4:
        (length,) = struct.unpack(">I", blob[:4])
        if 0 < length <= len(blob) - 4:
            embedded = blob[4:4 + length]
    if embedded != kind.encode("ascii"):
        raise HostKeyError("%s gave a key labelled %s whose data is %s; refusing to trust it"
                           % (source, kind, "of type %s" % _shown(embedded.decode("ascii", "replace")) if embedded else "no SSH key"))
    return "%s %s" % (kind, blob_text)
