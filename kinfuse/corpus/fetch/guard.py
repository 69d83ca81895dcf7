"""The private-address guard: which addresses a crawl may connect to, checked after DNS.

A page given by a user, a redirect from a public page or a sitemap entry can
point at ``127.0.0.1``, ``169.254.169.254`` (cloud metadata) or an internal
service; whatever it answers would end up in the corpus and the adapter. So by
default every address a host name resolves to is checked, and a connection is
only ever opened to an address that passed: :func:`guarded_transport` resolves
the name itself, checks every address and connects to the checked address
(not the name), so a DNS answer that changes between the check and the
connection (rebinding) cannot slip through. TLS still verifies the certificate
against the host name, since httpcore takes that from the URL, not from the
address connected to.

When the environment names an HTTP proxy, the proxy resolves the names and
connects; :func:`check_host` then runs before each request instead, which
refuses a name that resolves to a private address but cannot pin what the
proxy connects to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Union

if TYPE_CHECKING:
    import httpcore

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_OPT_IN = "pass allow_private=True to Corpus.from_urls (or set allow_private = true under [corpus] in the config)"


class AddressRefused(Exception):
    """A host that resolves to an address the crawl may not connect to; the message is the record's reason."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which non-public addresses a crawl may reach: all (``allow_all``) or those in ``allowed``."""

    allow_all: bool = False
    allowed: tuple[Network, ...] = ()

    @property
    def guarded(self) -> bool:
        return not self.allow_all


def address_policy(allow_private: bool | str | Iterable[str]) -> AddressPolicy:
    """The policy of ``allow_private``: True/False, or addresses and networks to allow (``"10.1.2.3"``,
    ``"10.0.0.0/8"``, ``"::1"``) while every other private address stays refused."""
    if isinstance(allow_private, bool):
        return AddressPolicy(allow_all=allow_private)
    entries = [allow_private] if isinstance(allow_private, str) else list(allow_private)
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"allow_private entry {entry!r} is not an IP address or network: give True, False, "
                'or addresses/networks such as ["10.1.2.3", "192.168.0.0/16"]'
            ) from None
    return AddressPolicy(allowed=tuple(networks))


def non_public_kind(ip: Address) -> str | None:
    """What kind of non-public address ``ip`` is ("loopback", "private", ...), or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 address that carries an IPv4 one reaches that IPv4 address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            kind = non_public_kind(embedded)
            return f"{kind} (as {embedded})" if kind else None
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:  # before is_private, which also covers 240.0.0.0/4
        return "reserved"
    if ip.is_private:
        return "private"
    # Shared (100.64.0.0/10, carrier NAT and some clouds' metadata) and other
    # special-purpose ranges are neither private nor public.
    if not ip.is_global:
        return "non-public"
    return None


def refusal(ip: Address, host: str, policy: AddressPolicy) -> str | None:
    """The record's reason when ``policy`` refuses ``ip`` (what ``host`` resolved to), else None."""
    kind = non_public_kind(ip)
    if kind is None or policy.allow_all or any(ip in net for net in policy.allowed):
        return None
    shown = host if host == str(ip) else f"{host} resolves to {ip}, which"
    return (
        f"refused: {shown} is a {kind} address; kinfuse does not fetch loopback, link-local, private or "
        f"reserved addresses by default (a page could otherwise put internal services or cloud metadata into "
        f"the corpus). To fetch it, {_OPT_IN}, or allow_private=[{str(ip)!r}] for this address alone"
    )


async def check_host(host: str, port: int, policy: AddressPolicy, timeout: float | None) -> list[Address]:
    """The addresses ``host`` resolves to, all allowed by ``policy``.

    Raises AddressRefused when any of them is refused (a name that also
    resolves to a private address is not trusted with the others), socket.gaierror
    when the name does not resolve, TimeoutError when resolving takes longer than ``timeout``.
    """
    bare = host.strip("[]")
    try:
        addresses: list[Address] = [ipaddress.ip_address(bare.split("%", 1)[0])]
    except ValueError:
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(loop.getaddrinfo(bare, port, type=socket.SOCK_STREAM), timeout)
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    for ip in addresses:
        reason = refusal(ip, bare, policy)
        if reason:
            raise AddressRefused(reason)
    return addresses


def proxied() -> bool:
    """Whether httpx will send requests through a proxy named by the environment (HTTP_PROXY etc.)."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def guarded_transport(policy: AddressPolicy, limits: Any) -> Any:
    """An httpx transport whose every connection goes to an address ``policy`` allows (see the module doc)."""
    import httpcore
    import httpx

    class Backend(httpcore.AsyncNetworkBackend):
        """Resolves and checks the host, then connects to the checked addresses only."""

        def __init__(self) -> None:
            self.inner = httpcore.AnyIOBackend()

        async def connect_tcp(
            self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore.AsyncNetworkStream:  # fmt: skip
            try:
                addresses = await check_host(host, port, policy, timeout)
            except (TimeoutError, asyncio.TimeoutError) as exc:
                raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout}s") from exc
            except OSError as exc:  # socket.gaierror: the name does not resolve
                raise httpcore.ConnectError(str(exc)) from exc
            error: Exception = httpcore.ConnectError(f"{host} resolved to no address")
            for ip in addresses:  # as the resolver ordered them, like a plain connect
                try:
                    return await self.inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
                except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                    error = exc
            raise error

        async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
            raise AddressRefused("refused: a Unix socket is not a web address")

        async def sleep(self, seconds: float) -> None:
            await self.inner.sleep(seconds)

    transport = httpx.AsyncHTTPTransport(limits=limits)
    # httpx offers no public way to give its transport a network backend, so the
    # pool it built is replaced by one with the same settings and the guarded
    # backend. Fail closed: if httpx ever stores its pool elsewhere, refuse to
    # run rather than crawl unguarded.
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError(
            f"httpx {httpx.__version__} changed how its transport holds connections, so the private-address "
            f"guard cannot be installed; {_OPT_IN} to fetch without it, or use an httpx version from 0.27 to 0.28"
        )
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=Backend(),
    )
    return transport
