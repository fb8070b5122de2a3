"""DomainFilter: the allowed_domains / blocked_domains lists applied to a URL's host name."""

from __future__ import annotations


class DomainFilter:
    """A host passes if no blocked domain covers it and, when allowed domains are listed, one covers it.

    A domain covers itself and its subdomains: "example.com" covers "docs.example.com".
    """

    def __init__(self, allowed: tuple[str, ...] = (), blocked: tuple[str, ...] = ()) -> None:
        self.allowed = allowed
        self.blocked = blocked

    def refusal(self, host: str) -> str | None:
        """Why `host` may not be fetched, or None if it may."""
        host = host.lower().rstrip(".")
        for domain in self.blocked:
            if _covers(domain, host):
                return f"{host} is in the blocked domain {domain}"
        if self.allowed and not any(_covers(domain, host) for domain in self.allowed):
            return f"{host} is not in the allowed domains ({', '.join(self.allowed)})"
        return None


def _covers(domain: str, host: str) -> bool:
    return host == domain or host.endswith("." + domain)
