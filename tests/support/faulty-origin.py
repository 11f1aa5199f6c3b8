#!/usr/bin/env python3
"""Fault-injecting HTTP/1.1 forwarder for the integration tests (tests/origin_faults.rs).

What it does: listens on 127.0.0.1, and for each client connection (the proxy's pooled upstream
connection) opens one keep-alive connection to the S3 endpoint given by --upstream and forwards
every request byte for byte (the Host header is kept, so the proxy's SigV4 signature still
verifies at RGW). Responses come back unchanged except for the fault chosen by --mode:

  pass               no fault
  trailing-response  after a response has been forwarded completely, wait --delay-ms and write a
                     complete forged "HTTP/1.1 200 OK" response (ETag "forged", body FORGED...)
                     on the same client connection
  overlong           write --extra-bytes bytes of filler more than the body's Content-Length,
                     right after the body and in the same write
  head-body          after a response to HEAD, write Content-Length bytes of body anyway
                     (after --delay-ms; 0 = in the same write as the head)
  slow-body          send each response body in --chunk-bytes pieces, --delay-ms apart (an origin
                     slower than its clients: fills, followers, stalls)
  error              answer every request itself (no upstream) with --status and an S3 XML
                     error body whose <Code> and <Message> are --code and --message verbatim
                     (XML-escaped), so tests can inject hostile codes and messages
  reset              close the client connection with a TCP reset (SO_LINGER 0) as soon as a
                     request head arrived, before any response byte

--fail-first N limits error and reset to the first N requests the forwarder receives (over all
connections); later requests pass through unchanged. --count-file PATH writes the number of
requests received so far to PATH after each one (tests read it to count attempts). --match S
restricts faults and counting to requests whose request line contains S.

Not shipped: a test tool only, python3 standard library, one thread per client connection.
Prints one line "listening 127.0.0.1:PORT" on stdout (flushed) once it accepts connections.
Exits on SIGTERM (and SIGINT).

Run it by hand:
  python3 tests/support/faulty-origin.py --upstream http://127.0.0.1:7480 \
      --mode trailing-response --delay-ms 300 [--port 0]
"""

import argparse
import os
import signal
import socket
import struct
import sys
import threading
import time
from xml.sax.saxutils import escape

MAX_HEAD = 64 * 1024
FORGED_BODY = b"FORGED" * 10


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", default="http://127.0.0.1:7480",
                   help="S3 endpoint, http://HOST:PORT (plain HTTP only)")
    p.add_argument("--port", type=int, default=0, help="listen port (0 = any free port)")
    p.add_argument("--mode", default="pass",
                   choices=["pass", "trailing-response", "overlong", "head-body", "slow-body", "reset",
                            "error"])
    p.add_argument("--delay-ms", type=int, default=300,
                   help="trailing-response / head-body: wait before the injected bytes")
    p.add_argument("--extra-bytes", type=int, default=10, help="overlong: bytes past the body")
    p.add_argument("--chunk-bytes", type=int, default=65536, help="slow-body: bytes per piece")
    p.add_argument("--status", type=int, default=500, help="error: status code")
    p.add_argument("--fail-first", type=int, default=0,
                   help="error/reset: only the first N requests (0 = every request)")
    p.add_argument("--count-file", default=None, help="write the request count here")
    p.add_argument("--match", default="",
                   help="error/reset/counting apply only to requests whose request line "
                        "contains this (others pass; the readiness probe's, say)")
    p.add_argument("--code", default="InternalError", help="error: S3 <Code>")
    p.add_argument("--message", default="We encountered an internal error.",
                   help="error: S3 <Message>")
    return p.parse_args()


class Closed(Exception):
    """The peer closed the connection (cleanly between messages or mid-message)."""


class Reader:
    """Buffered reads from one socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.buf += data

    def head(self):
        """Bytes up to and including the blank line ending a message head."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head, self.buf = self.buf[:end + 4], self.buf[end + 4:]
                return head
            if len(self.buf) > MAX_HEAD:
                raise Closed()
            self.fill()

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def line(self):
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end + 2], self.buf[end + 2:]
                return line
            self.fill()

    def chunked(self):
        """A raw chunked body, up to and including the trailer section (RFC 9112 7.1)."""
        out = b""
        while True:
            line = self.line()
            out += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    trailer = self.line()
                    out += trailer
                    if trailer == b"\r\n":
                        return out
            out += self.exact(size + 2)

    def rest(self):
        """Everything until the peer closes."""
        out = self.buf
        self.buf = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return out
            out += data


def header(head, name):
    """The value of the first header field `name` (bytes, lowercase) in a raw head, or None."""
    for line in head.split(b"\r\n")[1:]:
        k, sep, v = line.partition(b":")
        if sep and k.strip().lower() == name:
            return v.strip()
    return None


def error_response(args, method):
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
        "<RequestId>faulty-origin</RequestId></Error>" % (escape(args.code), escape(args.message))
    ).encode()
    head = (
        "HTTP/1.1 %d Injected\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n"
        % (args.status, len(body))
    ).encode()
    return head if method == b"HEAD" else head + body


def forged_response():
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: \"forged\"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(FORGED_BODY)
    ) + FORGED_BODY


COUNT_LOCK = threading.Lock()
COUNT = [0]


def count_request(args):
    """Count one request; return its 1-based number over every connection."""
    with COUNT_LOCK:
        COUNT[0] += 1
        n = COUNT[0]
        if args.count_file:
            with open(args.count_file + ".tmp", "w") as f:
                f.write(str(n))
            os.replace(args.count_file + ".tmp", args.count_file)
    return n


def serve(client, args, upstream_addr):
    up = None
    try:
        creader = Reader(client)
        ureader = None
        while True:
            try:
                head = creader.head()
            except Closed:
                return
            method = head.split(b" ", 1)[0]
            length = int(header(head, b"content-length") or b"0")
            request = head + creader.exact(length)
            matched = args.match.encode() in head.split(b"\r\n", 1)[0]
            n = count_request(args) if matched else 0
            faulty = matched and (args.fail_first == 0 or n <= args.fail_first)
            if args.mode == "error" and faulty:
                client.sendall(error_response(args, method))
                continue
            if args.mode == "reset" and faulty:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if up is None:
                up = socket.create_connection(upstream_addr)
                up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ureader = Reader(up)
            up.sendall(request)
            rhead = ureader.head()
            status = int(rhead.split(b" ", 2)[1])
            clen = header(rhead, b"content-length")
            te = header(rhead, b"transfer-encoding") or b""
            close_after = False
            if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
                body = b""
            elif te.lower().endswith(b"chunked"):
                body = ureader.chunked()
            elif clen is not None:
                body = ureader.exact(int(clen))
            else:
                body, close_after = ureader.rest(), True
            if args.mode == "overlong" and clen is not None and method != b"HEAD":
                client.sendall(rhead + body + b"X" * args.extra_bytes)
            elif args.mode == "head-body" and method == b"HEAD" and clen is not None:
                fake = b"H" * int(clen)
                if args.delay_ms > 0:
                    client.sendall(rhead)
                    time.sleep(args.delay_ms / 1000)
                    client.sendall(fake)
                else:
                    client.sendall(rhead + fake)
            elif args.mode == "slow-body" and body:
                client.sendall(rhead)
                for i in range(0, len(body), args.chunk_bytes):
                    time.sleep(args.delay_ms / 1000)
                    client.sendall(body[i:i + args.chunk_bytes])
            else:
                client.sendall(rhead + body)
            if close_after:
                return
            if args.mode == "trailing-response":
                time.sleep(args.delay_ms / 1000)
                client.sendall(forged_response())
    except (Closed, OSError):
        return
    finally:
        client.close()
        if up is not None:
            up.close()


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    hostport = args.upstream.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    upstream_addr = (host, int(port))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(128)
    print("listening 127.0.0.1:%d" % listener.getsockname()[1], flush=True)
    while True:
        client, _ = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(client, args, upstream_addr), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
