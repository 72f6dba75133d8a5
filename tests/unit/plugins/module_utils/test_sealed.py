"""The rescue password sealed by the module to its action plugin: only the plugin's key opens it."""
import pytest

from ansible_collections.ansinix.nixos.plugins.module_utils.sealed import PRIME, SealError, new_key_pair, seal, unseal


def test_only_the_key_it_was_sealed_to_opens_it():
    private, public = new_key_pair()
    sealed = seal("rescue-s3cr3t-ü", public)
    assert "rescue" not in str(sealed) and set(sealed) == {"public", "data", "mac"}
    assert unseal(sealed, private) == "rescue-s3cr3t-ü"
    other = new_key_pair()[0]
    with pytest.raises(SealError, match="does not authenticate"):
        unseal(sealed, other)


def test_a_changed_seal_is_refused():
    private, public = new_key_pair()
    sealed = seal("password", public)
    flipped = dict(sealed, data=("B" if sealed["data"][0] == "A" else "A") + sealed["data"][1:])
    with pytest.raises(SealError):
        unseal(flipped, private)
    with pytest.raises(SealError, match="malformed"):
        unseal({"public": sealed["public"]}, private)


@pytest.mark.parametrize("public", ["1", "0", "%x" % (PRIME - 1), "%x" % PRIME, "zz", None])
def test_degenerate_public_values_are_refused(public):
    with pytest.raises(SealError):
        seal("password", public)


def test_each_seal_is_new():
    public = new_key_pair()[1]
    assert seal("password", public)["data"] != seal("password", public)["data"]
