"""Print a TCP port that is free now and outside the kernel's ephemeral range.

A port from bind(0) comes out of the ephemeral range, which every outgoing connection also
draws from: between our check and the server's own bind, a client socket (the API server's
connection to etcd, a curl) could take it. Ports below that range are only ever taken by
listeners, so a free one stays free until the server we start binds it.
"""

import random
import socket

FLOOR = 15000


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free(port):
    # The wildcard address: a port taken on any address (10.244.0.1 too) is not free.
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def main():
    top = max(ephemeral_low(), FLOOR + 1000)
    for _ in range(2000):
        port = random.randrange(FLOOR, top)
        if free(port):
            print(port)
            return
    raise SystemExit("free_port: no free port below the ephemeral range")


main()
