"""Which addresses a download may connect to, and the connection to one of them (`server.fetch`).

The host is resolved once, and every address it resolves to must be public
(unless ALLOW_PRIVATE_URLS). The socket is connected to one of those checked
addresses itself, never to the name, so a second, different DNS answer (DNS
rebinding) is never asked for.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

from server.errors import ClientError
from server.fetch_errors import timed_out
from server.fetch_url import Target


def resolve(target: Target, give_up_at: float, timeout: float) -> list[tuple[int, tuple]]:
    """(family, socket address) for each address the host resolves to, looked up once.

    The lookup runs in a daemon thread that is waited for only until the
    deadline: the resolver has its own, longer timeouts, and a lookup left
    behind must not keep the process from exiting. A host that is an IP
    address already is the one address, as the resolver would give it,
    without a thread.
    """
    literal = _literal_address(target)
    if literal is not None:
        return [literal]
    answer: dict[str, object] = {}
    done = threading.Event()

    def look_up() -> None:
        try:
            answer["infos"] = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            pass
        finally:
            done.set()

    threading.Thread(target=look_up, name="resolve", daemon=True).start()
    if not done.wait(max(0.0, give_up_at - time.monotonic())):
        raise timed_out(target.host, timeout)
    infos = answer.get("infos")
    if not infos:
        raise ClientError(
            "image_download_failed",
            f"The image URL's host {target.host} could not be resolved; check its spelling.",
        )
    addresses = []
    for family, _, _, _, address in infos:
        if (family, address) not in addresses:
            addresses.append((family, address))
    return addresses


def _literal_address(target: Target) -> tuple[int, tuple] | None:
    """(family, socket address) of a host written as an IPv4 or IPv6 address, else None (a name).

    `Target.parse` lets no "%" into a host, so no IPv6 zone, whose name only the resolver maps."""
    try:
        ip = ipaddress.ip_address(target.host)
    except ValueError:
        return None
    if ip.version == 4:
        return socket.AF_INET, (socket.inet_ntop(socket.AF_INET, ip.packed), target.port)
    return socket.AF_INET6, (socket.inet_ntop(socket.AF_INET6, ip.packed), target.port, 0, 0)


def check_addresses(target: Target, addresses: list[tuple[int, tuple]]) -> None:
    """Refuse the host (`image_url_forbidden`) if any address it resolves to is not public."""
    if any(_is_forbidden(ipaddress.ip_address(address[0].split("%")[0])) for _, address in addresses):
        raise ClientError(
            "image_url_forbidden",
            f"The image URL's host {target.host} resolves to a private, loopback or link-local "
            "address, which this server does not fetch; use a publicly reachable URL.",
        )


def _is_forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for any address that is not a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def connect(
    target: Target, addresses: list[tuple[int, tuple]], give_up_at: float, timeout: float
) -> socket.socket:
    """A socket connected to the first of the checked addresses that accepts."""
    for family, address in addresses:
        remaining = give_up_at - time.monotonic()
        if remaining <= 0:
            raise timed_out(target.host, timeout)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
            return sock
        except OSError:
            sock.close()
    if give_up_at <= time.monotonic():
        raise timed_out(target.host, timeout)
    raise ClientError(
        "image_download_failed",
        f"Could not connect to the image server {target.host}; check that it is up and reachable.",
    )
