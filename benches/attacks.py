#!/usr/bin/env python3
"""Hostile clients against a running tickcast (or any server speaking its
protocol), each reported in one line: what the server answered, and whether
it is still serving afterwards. Standard library only.

    python3 benches/attacks.py 127.0.0.1:8080            # every attack
    python3 benches/attacks.py 127.0.0.1:8080 ping-flood  # one of them

The attacks:
  deep-nesting   a 10 KB ping whose ignored field nests 5,000 arrays
  lone-surrogate a ping whose id is "\\ud800"
  bad-json       {"op":"ping" "id":1} (a missing comma)
  ping-flood     pings for 5 s (or until closed), as fast as the server reads
  pong-flood     the same with pongs
  empty-flood    the same with empty text frames

tests/tick_priority.rs asserts the same cases in CI; this script is for
measuring a build, or another server, by hand.
"""

import os
import socket
import struct
import sys
import time


def connect(addr):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the handshake")
        head += chunk
    status, rest = head.split(b"\r\n\r\n", 1)
    if not status.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(status.decode(errors="replace"))
    return sock, rest


def frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", (0x80 if fin else 0) | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", (0x80 if fin else 0) | opcode, 0x80 | 127, n)
    return head + mask + masked


def frames(buf):
    """Parses complete server frames off buf: ([(opcode, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        at = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            break
        out.append((buf[0] & 0x0F, buf[at : at + n]))
        buf = buf[at + n :]
    return out, buf


def reply_to(addr, text):
    """Sends one text message; the first text reply, or how it ended."""
    sock, buf = connect(addr)
    sock.sendall(frame(1, text.encode()))
    deadline = time.time() + 5
    while time.time() < deadline:
        parsed, buf = frames(buf)
        for opcode, payload in parsed:
            if opcode == 1:
                return payload.decode()
            if opcode == 8:
                return "close %d %s" % (struct.unpack("!H", payload[:2])[0], payload[2:].decode())
        try:
            chunk = sock.recv(65536)
        except OSError as err:
            return "connection error: %s" % err
        if not chunk:
            return "connection closed without a reply"
        buf += chunk
    return "no reply in 5 s"


def flood(addr, one, seconds=5.0):
    """Sends `one` frame over and over; what came back."""
    sock, buf = connect(addr)
    sock.setblocking(False)
    burst = one * 10000
    sent = replies = pongs = 0
    close = None
    start = time.time()
    pending = b""
    while time.time() - start < seconds and close is None:
        try:
            if not pending:
                pending = burst
            n = sock.send(pending)
            pending = pending[n:]
            sent += n
        except BlockingIOError:
            pass
        except OSError as err:
            close = close or "send failed: %s" % err
        try:
            chunk = sock.recv(1 << 20)
            if not chunk:
                close = close or "closed without a close frame"
            buf += chunk
        except BlockingIOError:
            pass
        except OSError as err:
            close = close or "receive failed: %s" % err
        parsed, buf = frames(buf)
        for opcode, payload in parsed:
            if opcode == 10:
                pongs += 1
            elif opcode == 1:
                replies += 1
            elif opcode == 8:
                close = "close %d %s" % (struct.unpack("!H", payload[:2])[0], payload[2:].decode())
    took = time.time() - start
    return "%d frames sent in %.3f s; %d pongs, %d text replies; %s" % (
        sent // len(one), took, pongs, replies, close or "still open")


def alive(addr):
    try:
        return "serving" if reply_to(addr, '{"op":"ping","id":"alive"}').find("alive") >= 0 else "odd"
    except OSError as err:
        return "DOWN (%s)" % err


ATTACKS = {
    "deep-nesting": lambda a: reply_to(
        a, '{"op":"ping","id":1,"x":' + "[" * 5000 + "]" * 5000 + "}"),
    "lone-surrogate": lambda a: reply_to(a, '{"op":"ping","id":"\\ud800"}'),
    "bad-json": lambda a: reply_to(a, '{"op":"ping" "id":1}'),
    "ping-flood": lambda a: flood(a, frame(9, b"p")),
    "pong-flood": lambda a: flood(a, frame(10, b"")),
    "empty-flood": lambda a: flood(a, frame(1, b"")),
}


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
    for name in sys.argv[2:] or ATTACKS:
        try:
            outcome = ATTACKS[name](addr)
        except (OSError, RuntimeError) as err:
            outcome = "failed: %s" % err
        print("%-15s %s\n%-15s server: %s" % (name, outcome[:300], "", alive(addr)))


if __name__ == "__main__":
    main()
