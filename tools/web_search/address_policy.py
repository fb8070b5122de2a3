"""AddressPolicy: which addresses a page fetch may connect to, decided after DNS resolution."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from ipaddress import IPv4Address, IPv6Address

from tools.web_search.errors import AddressRefused, FetchFailed

IpAddress = IPv4Address | IPv6Address

# Instance-metadata endpoints hand out cloud credentials: refused even with allow_private=True.
CLOUD_METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IPv6
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure wire server (a public address)
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressPolicy:
    """Refuses loopback, private, link-local, multicast, reserved and metadata addresses unless allowed.

    `allow_private` is SearchOptions.allow_private: True allows every special range but the metadata
    addresses; a set allows the networks and host names it lists, metadata addresses included.
    """

    def __init__(self, allow_private: bool | frozenset[str]) -> None:
        self._allow_all = allow_private is True
        entries = () if isinstance(allow_private, bool) else allow_private
        self._networks = []
        self._hosts = set()
        for entry in entries:
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry)

    def refusal(self, ip: IpAddress) -> str | None:
        """Why `ip` may not be reached (a phrase naming the address and its kind), or None if it may."""
        if any(ip.version == net.version and ip in net for net in self._networks):
            return None
        if ip in CLOUD_METADATA_ADDRESSES or any(e in CLOUD_METADATA_ADDRESSES for e in _embedded_ipv4(ip)):
            return f"{ip} is a cloud metadata address"
        kind = _special_kind(ip)
        if kind is None or self._allow_all:
            return None
        return f"{ip} is a {kind} address (allow_private does not include it)"

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for `host`; AddressRefused if any address it resolves to is refused."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchFailed(f"could not resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise FetchFailed(f"{host} has no address")
        if host.lower().rstrip(".") not in self._hosts:
            for ip in addresses:
                reason = self.refusal(ip)
                if reason is not None:
                    raise AddressRefused(f"{host} resolves to {reason}" if host != str(ip) else reason)
        return str(addresses[0])


def _special_kind(ip: IpAddress) -> str | None:
    """The special range `ip` is in ("loopback", "private", ...), None for a public unicast address."""
    for embedded in _embedded_ipv4(ip):
        kind = _special_kind(embedded)
        if kind is not None:
            return kind
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


def _embedded_ipv4(ip: IpAddress) -> list[IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64), which reach the same host."""
    if not isinstance(ip, IPv6Address):
        return []
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(IPv4Address(int(ip) & 0xFFFFFFFF))
    return found
