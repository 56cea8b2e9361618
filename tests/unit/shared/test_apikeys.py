"""API key hashing: keys are stored only as slow hashes and verified in constant time."""

from __future__ import annotations

from herald_shared.apikeys import hash_secret, new_api_key, split_api_key, verify_secret


def test_issued_key_verifies_against_its_hash_and_hash_hides_the_secret() -> None:
    key_id, key, key_hash = new_api_key()
    parts = split_api_key(key)
    assert parts is not None and parts[0] == key_id
    assert verify_secret(parts[1], key_hash)
    assert parts[1] not in key_hash and key_hash.startswith("scrypt$16384$8$1$")


def test_wrong_secret_does_not_verify() -> None:
    assert not verify_secret("guess", hash_secret("right"))


def test_malformed_hash_or_key_is_refused_without_error() -> None:
    assert not verify_secret("x", "md5$abc")
    assert not verify_secret("x", "scrypt$notanumber$8$1$AA$AA")
    assert split_api_key("no-prefix") is None
    assert split_api_key("hk_onlyid") is None


def test_same_secret_hashes_differently_each_time() -> None:
    assert hash_secret("same") != hash_secret("same")
