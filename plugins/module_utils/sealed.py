# -*- coding: utf-8 -*-
# Copyright: ansinix.nixos contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to the ansinix.nixos collection: not an API for other collections; it may change in any release.
"""A secret a module returns to its own action plugin, unreadable to everything in between.

With ANSIBLE_DEBUG, ansible-core prints every module's raw output, whatever no_log says. So a module
that must hand a secret (a rescue root password) to the controller seals it: the action plugin passes
a Diffie-Hellman public value (RFC 3526 group 14) as a module option, the module answers with its own
public value and the secret encrypted and authenticated with the shared key (SHA-256 in counter mode,
HMAC-SHA256), and the action plugin opens it. Only public values ever appear in output. Standard
library only, as the module may run on any Python.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# RFC 3526, 2048-bit MODP group (14), generator 2.
PRIME = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)
GENERATOR = 2
_CONTEXT = b"ansinix.nixos sealed secret v1"


class SealError(ValueError):
    """A sealed value that cannot be opened, or a public value that is not one."""


def new_key_pair():
    """(private, public hex) for one exchange."""
    private = secrets.randbits(256) | 1 << 255
    return private, "%x" % pow(GENERATOR, private, PRIME)


def _public(value):
    try:
        number = int(value, 16)
    except (TypeError, ValueError):
        raise SealError("not a Diffie-Hellman public value")
    if not 1 < number < PRIME - 1:
        raise SealError("a Diffie-Hellman public value out of range")
    return number


def _keys(private, other_public):
    shared = pow(_public(other_public), private, PRIME)
    material = hashlib.sha256(_CONTEXT + shared.to_bytes(256, "big")).digest()
    return hashlib.sha256(material + b"encrypt").digest(), hashlib.sha256(material + b"authenticate").digest()


def _stream(key, data):
    out = bytearray()
    for start in range(0, len(data), 32):
        block = hashlib.sha256(key + start.to_bytes(8, "big")).digest()
        out.extend(a ^ b for a, b in zip(data[start:start + 32], block))
    return bytes(out)


def seal(secret, other_public):
    """`secret` (text) sealed for the holder of the private half of `other_public`: a dict of public values."""
    private, public = new_key_pair()
    encrypt, authenticate = _keys(private, other_public)
    data = _stream(encrypt, secret.encode("utf-8"))
    return {"public": public, "data": base64.b64encode(data).decode("ascii"),
            "mac": hmac.new(authenticate, data, hashlib.sha256).hexdigest()}


def unseal(sealed, private):
    """The secret `seal` sealed for our `private` key; a SealError when it was changed or is not one."""
    try:
        data = base64.b64decode(sealed["data"], validate=True)
        public, mac = sealed["public"], sealed["mac"]
    except (KeyError, TypeError, ValueError):
        raise SealError("the sealed value is malformed")
    encrypt, authenticate = _keys(private, public)
    if not hmac.compare_digest(hmac.new(authenticate, data, hashlib.sha256).hexdigest(), str(mac)):
        raise SealError("the sealed value does not authenticate")
    return _stream(encrypt, data).decode("utf-8")
