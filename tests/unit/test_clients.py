"""A client, as the limits count callers: one IPv4 address, or one IPv6 /64 (a single host can
use every address of its /64, so counting addresses would count nothing)."""

from __future__ import annotations

import pytest

from api.clients import client_id


@pytest.mark.parametrize("address", ["203.0.113.7", "127.0.0.1", "10.0.0.255"])
def test_an_ipv4_address_is_its_own_client(address):
    assert client_id(address) == address


def test_an_ipv6_address_counts_as_its_64_network():
    assert client_id("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


def test_addresses_of_one_64_are_one_client_and_of_two_are_two():
    one = {client_id("2001:db8:0:1::1"), client_id("2001:db8:0:1:ffff:ffff:ffff:ffff")}
    assert one == {"2001:db8:0:1::/64"}
    assert client_id("2001:db8:0:2::1") != client_id("2001:db8:0:1::1")


@pytest.mark.parametrize("address", ["2001:DB8:0:1::1", "2001:0db8:0000:0001:0000:0000:0000:0001"])
def test_every_spelling_of_an_ipv6_address_is_the_same_client(address):
    assert client_id(address) == "2001:db8:0:1::/64"


def test_a_zone_does_not_make_another_client():
    assert client_id("fe80::1%eth0") == client_id("fe80::2") == "fe80::/64"


def test_the_ipv6_loopback_is_a_client():
    assert client_id("::1") == "::/64"


@pytest.mark.parametrize("mapped", ["::ffff:192.0.2.1", "::FFFF:c000:0201"])
def test_an_ipv4_mapped_ipv6_address_is_the_ipv4_client(mapped):
    """A dual-stack socket reports IPv4 peers this way: the same client as over IPv4."""
    assert client_id(mapped) == "192.0.2.1"


@pytest.mark.parametrize("address", ["", "unix:/run/api.sock", "not an address", "999.1.1.1", "010.1.1.1"])
def test_anything_that_is_not_an_address_is_the_string_itself(address):
    assert client_id(address) == address
