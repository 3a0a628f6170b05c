"""The enrollment file's `addresses` (every member, in order) beside the old `address`."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from console.profiles import load_profile, save_profile
from shared import pki
from shared.enrollment import Enrollment, parse_enrollment
from shared.errors import EnrollmentError

CA = pki.create_ca("lab").certificate_pem.decode()
EXPIRES = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def enrollment(addresses: tuple[str, ...] = ()) -> Enrollment:
    return Enrollment(
        "lab", "10.0.0.1", 7443, "jumpoint.lab", "alice", CA, "A" * 43, EXPIRES, addresses
    )


def test_a_file_with_only_address_still_loads() -> None:
    loaded = parse_enrollment(enrollment().to_yaml(), "e.yaml")
    assert (loaded.host, loaded.port, loaded.addresses) == ("10.0.0.1", 7443, ())


def test_addresses_are_read_in_order_and_the_first_is_the_address() -> None:
    text = enrollment(("10.0.0.2:7443", "10.0.0.3:7443")).to_yaml()
    loaded = parse_enrollment(text.replace("  address: 10.0.0.1:7443\n", ""), "e.yaml")
    assert loaded.addresses == ("10.0.0.2:7443", "10.0.0.3:7443")
    assert loaded.address == "10.0.0.2:7443"


def test_a_bad_member_address_names_file_and_key() -> None:
    text = enrollment(("10.0.0.2:7443",)).to_yaml().replace("- 10.0.0.2:7443", "- nowhere")
    with pytest.raises(EnrollmentError, match=r"e\.yaml.*addresses"):
        parse_enrollment(text, "e.yaml")


def test_neither_address_nor_addresses_is_an_error() -> None:
    text = enrollment().to_yaml().replace("  address: 10.0.0.1:7443\n", "")
    with pytest.raises(EnrollmentError, match="address"):
        parse_enrollment(text, "e.yaml")


def test_the_profile_keeps_every_address(tmp_path: Path) -> None:
    keys = pki.create_ca("lab")
    save_profile(
        enrollment(("10.0.0.1:7443", "10.0.0.2:7443")),
        keys.certificate_pem,
        keys.key_pem,
        "lab",
        tmp_path,
    )
    profile = load_profile("lab", tmp_path)
    assert profile.dial_list() == [("10.0.0.1", 7443), ("10.0.0.2", 7443)]
