"""DNS, the outside world campaigns asks whether an account published its sending domain's verification record:
dnspython's asyncio stub resolver, its answers turned into `domain.DnsAnswer` for the domain to judge."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rcode
import dns.resolver

from .domain import DnsAnswer

# One try at one name server waits this long at most (a lost UDP datagram is asked again), within the timeout.
TRY_SECONDS = 2.0


def parse_nameservers(text: str) -> list[tuple[str, int]]:
    """`host[:port]` items, comma-separated: `192.0.2.53`, `192.0.2.53:5353`, `[2001:db8::53]:5353` or a bare
    `2001:db8::53`; port 53 when none is given. Addresses only: a name server's name would need a resolver."""
    found: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, port = item, "53"
        if item.startswith("["):
            host, closed, rest = item[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise ValueError(f"{item!r}: an IPv6 address with a port is written [address]:port")
            port = rest[1:] or port
        elif item.count(":") == 1:
            host, _, port = item.partition(":")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{item!r}: a name server is given by its IP address") from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r}: {port!r} is not a port")
        found.append((host, int(port)))
    return found


class DnsResolver:
    """TXT look-ups through the given name servers (the system's, from /etc/resolv.conf, when none are given),
    each answered within `timeout` seconds. Nothing is cached here: a customer who has just published a record
    wants it looked up now (the name servers may cache, up to the record's TTL)."""

    def __init__(self, nameservers: Sequence[tuple[str, int]], timeout: float) -> None:
        self.timeout = timeout
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._unconfigured = ""
        try:
            resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        except dns.resolver.NoResolverConfiguration:
            self._unconfigured = "no name server is configured (HERALD_DNS_NAMESERVERS, or /etc/resolv.conf)"
            return
        if nameservers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
        resolver.lifetime = timeout
        resolver.timeout = min(timeout, TRY_SECONDS)
        resolver.retry_servfail = False  # a SERVFAIL is the domain's answer for now: said as such, not waited out
        self._resolver = resolver

    @property
    def servers(self) -> str:
        if self._resolver is None:
            return "none"
        return ", ".join(str(server) for server in self._resolver.nameservers)

    async def txt(self, name: str) -> DnsAnswer:
        """The TXT records at `name` (each record's strings joined, RFC 7208 3.3), or what kept DNS from
        answering: the name does not exist, it has no TXT record, its own name servers failed (SERVFAIL), or
        the name servers asked here could not be reached or did not answer in time (`unreachable`)."""
        if self._resolver is None:
            return DnsAnswer(name, "unreachable", detail=self._unconfigured)
        try:
            answer = await self._resolver.resolve(name, "TXT", search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(name, "no_domain")
        except dns.resolver.LifetimeTimeout:
            return DnsAnswer(name, "unreachable",
                             detail=f"no answer from the name server(s) {self.servers} within {self.timeout:g} s")
        except dns.resolver.NoNameservers as exc:
            errors = exc.kwargs.get("errors") or []
            if any(error[-1] is not None and error[-1].rcode() == dns.rcode.SERVFAIL for error in errors):
                return DnsAnswer(name, "server_failure", detail="SERVFAIL: the domain's own name servers failed "
                                                                "to answer, or did not answer in time")
            return DnsAnswer(name, "unreachable", detail=f"the name server(s) {self.servers} refused or could "
                                                         f"not be reached: {_errors(errors)}")
        except dns.exception.DNSException as exc:
            return DnsAnswer(name, "unreachable", detail=f"{type(exc).__name__}: {exc}")
        if answer.rrset is None:
            return DnsAnswer(name, "no_record")
        return DnsAnswer(name, "answered", tuple(b"".join(record.strings).decode("utf-8", "replace")
                                                 for record in answer.rrset))


def _errors(errors: Sequence[tuple[object, ...]]) -> str:
    """What each name server tried said: its exception or the answer's code."""
    return "; ".join(f"{error[0]}: {error[3]}" for error in errors) or "no answer"
