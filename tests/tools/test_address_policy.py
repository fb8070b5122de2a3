"""AddressPolicy: special addresses refused after resolution unless allow_private covers them."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from tools.web_search.address_policy import AddressPolicy
from tools.web_search.errors import AddressRefused

REFUSED = {
    "127.0.0.1": "loopback", "::1": "loopback", "10.0.0.1": "private", "192.168.1.20": "private",
    "172.16.5.4": "private", "fd12::1": "private", "169.254.10.1": "link-local", "fe80::1": "link-local",
    "224.0.0.251": "multicast", "ff02::1": "multicast", "0.0.0.0": "unspecified", "240.0.0.1": "private",
    "100.64.0.1": "non-public", "::ffff:10.0.0.1": "private", "2002:a00:1::": "private",
}


@pytest.mark.parametrize(("address", "kind"), sorted(REFUSED.items()))
def test_special_addresses_are_refused_by_default(address, kind):
    assert AddressPolicy(False).refusal(ipaddress.ip_address(address)) == (
        f"{ipaddress.ip_address(address)} is a {kind} address (allow_private does not include it)")


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"])
def test_cloud_metadata_is_refused_even_when_private_addresses_are_allowed(address):
    ip = ipaddress.ip_address(address)
    assert AddressPolicy(True).refusal(ip).endswith("is a cloud metadata address")
    named = frozenset({"169.254.169.254", "fd00:ec2::254/128", "::ffff:169.254.169.254"})
    assert AddressPolicy(named).refusal(ip) is None


def test_public_addresses_pass_and_allow_lists_open_only_what_they_name():
    assert AddressPolicy(False).refusal(ipaddress.ip_address("93.184.216.34")) is None
    assert AddressPolicy(False).refusal(ipaddress.ip_address("2606:4700::1111")) is None
    only_loopback = AddressPolicy(frozenset({"127.0.0.1"}))
    assert only_loopback.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert only_loopback.refusal(ipaddress.ip_address("127.0.0.2")) is not None
    assert only_loopback.refusal(ipaddress.ip_address("10.0.0.1")) is not None
    assert AddressPolicy(frozenset({"10.0.0.0/8"})).refusal(ipaddress.ip_address("10.9.8.7")) is None
    assert AddressPolicy(True).refusal(ipaddress.ip_address("10.0.0.1")) is None


def test_resolution_checks_what_a_name_or_odd_literal_really_points_at():
    policy = AddressPolicy(False)

    def resolve(host):
        return asyncio.run(policy.resolve(host, 80))

    for host in ("localhost", "0x7f000001", "2130706433", "127.1"):
        with pytest.raises(AddressRefused, match="loopback"):
            resolve(host)
    by_name = AddressPolicy(frozenset({"localhost"}))
    assert asyncio.run(by_name.resolve("localhost", 80)) in ("127.0.0.1", "::1")
    assert asyncio.run(AddressPolicy(frozenset({"127.0.0.1"})).resolve("127.0.0.1", 80)) == "127.0.0.1"
