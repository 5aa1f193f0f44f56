#!/usr/bin/python3
"""UDP traffic with sequence numbers for the service test (tools/service/checks.sh).

  udp.py recv STOPFILE OUTFILE PORT...     count the datagrams each port receives until STOPFILE
                                           exists (then 0.5 s more for those in flight); write
                                           "PORT RECEIVED DISTINCT FIRST LAST MISSING" lines
  udp.py send HOST PORT COUNT RATE         send COUNT datagrams "SEQ" (1..COUNT) at RATE per s
  udp.py stream HOST PORT RATE STOPFILE    send "SEQ" datagrams at RATE per s until STOPFILE
                                           exists; print how many were sent
  udp.py probe HOST PORT COUNT             send COUNT datagrams on a connected socket and
                                           print how many were answered by an ICMP port
                                           unreachable (ECONNREFUSED), waiting 1 s for each
  udp.py echo PORT STOPFILE                send every datagram back to its sender until
                                           1.5 s after STOPFILE exists
  udp.py pingpong HOST PORT RATE STOPFILE  send "SEQ" datagrams at RATE per s from one socket
                                           until STOPFILE exists, then wait 0.5 s for the last
                                           replies; print "SENT REPLIED FIRST-MISSING..."

HOST is an IPv4 or an IPv6 address; receivers (recv, echo) listen on both families.
Run by /usr/bin/python3 (an exec costs ~0.1 s under TCG; pyenv's shims cost several).
"""
import os
import select
import socket
import sys
import time


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listener(port):
    """A UDP socket bound to PORT on every IPv4 and IPv6 address."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    return s


def recv(stopfile, outfile, ports):
    socks = {}
    for port in ports:
        s = listener(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        socks[s] = port
    seen = {port: [] for port in ports}
    # Ready once bound: the caller waits for OUTFILE.ready.
    open(outfile + ".ready", "w").close()
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        ready, _, _ = select.select(list(socks), [], [], 0.05)
        for s in ready:
            data, _ = s.recvfrom(2048)
            try:
                seen[socks[s]].append(int(data.split()[0]))
            except (ValueError, IndexError):
                pass
        if deadline is None and os.path.exists(stopfile):
            deadline = time.monotonic() + 0.5
    with open(outfile + ".tmp", "w") as out:
        for port in ports:
            seqs = seen[port]
            distinct = set(seqs)
            last = max(distinct) if distinct else 0
            missing = [n for n in range(1, last + 1) if n not in distinct]
            first = min(distinct) if distinct else 0
            out.write(f"{port} {len(seqs)} {len(distinct)} {first} {last} "
                      f"{','.join(map(str, missing[:20])) or '-'}\n")
    os.rename(outfile + ".tmp", outfile)


def pace(rate):
    period = 1.0 / rate
    start = time.monotonic()
    n = 0
    while True:
        n += 1
        yield n
        delay = start + n * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def send(host, port, count, rate):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    for n in pace(rate):
        if n > count:
            break
        s.sendto(f"{n}\n".encode(), (host, port))
    print(count)


def stream(host, port, rate, stopfile):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    sent = 0
    for n in pace(rate):
        if n % 10 == 1 and os.path.exists(stopfile):
            break
        s.sendto(f"{n}\n".encode(), (host, port))
        sent = n
    print(sent)


def probe(host, port, count):
    refused = 0
    for n in range(1, count + 1):
        s = socket.socket(family(host), socket.SOCK_DGRAM)
        s.connect((host, port))
        s.settimeout(1.0)
        s.send(f"{n}\n".encode())
        try:
            s.recv(2048)
        except ConnectionRefusedError:
            refused += 1
        except socket.timeout:
            pass
        s.close()
    print(refused)


def echo(port, stopfile):
    s = listener(port)
    s.settimeout(0.05)
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        if deadline is None and os.path.exists(stopfile):
            # the peer's last datagrams, sent as it saw STOPFILE too, still get their replies
            deadline = time.monotonic() + 1.5
        try:
            data, peer = s.recvfrom(2048)
        except socket.timeout:
            continue
        s.sendto(data, peer)


def pingpong(host, port, rate, stopfile):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.connect((host, port))
    s.setblocking(False)
    replied = set()

    def drain():
        while True:
            try:
                data = s.recv(2048)
            except (BlockingIOError, ConnectionRefusedError):
                return
            try:
                replied.add(int(data.split()[0]))
            except (ValueError, IndexError):
                pass

    sent = 0
    for n in pace(rate):
        drain()
        if n % 10 == 1 and os.path.exists(stopfile):
            break
        try:
            s.send(f"{n}\n".encode())
        except ConnectionRefusedError:
            pass
        sent = n
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        select.select([s], [], [], 0.05)
        drain()
    missing = [n for n in range(1, sent + 1) if n not in replied]
    print(sent, len(replied), ",".join(map(str, missing[:20])) or "-")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "recv" and len(argv) >= 5:
        recv(argv[2], argv[3], [int(p) for p in argv[4:]])
    elif cmd == "send" and len(argv) == 6:
        send(argv[2], int(argv[3]), int(argv[4]), float(argv[5]))
    elif cmd == "stream" and len(argv) == 6:
        stream(argv[2], int(argv[3]), float(argv[4]), argv[5])
    elif cmd == "echo" and len(argv) == 4:
        echo(int(argv[2]), argv[3])
    elif cmd == "pingpong" and len(argv) == 6:
        pingpong(argv[2], int(argv[3]), float(argv[4]), argv[5])
    elif cmd == "probe" and len(argv) == 5:
        probe(argv[2], int(argv[3]), int(argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
