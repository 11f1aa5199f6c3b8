#!/usr/bin/env python3
"""idle-conns.py: open N HTTP/1.1 keep-alive connections to HOST:PORT, send one GET PATH on each
and read its response (Content-Length bodies only), then hold every connection open and idle
until SIGTERM/SIGINT or MAX_SECONDS, so a server carries N idle keep-alive connections while
another tool loads it. Standard library only (asyncio).

Prints "ready OPEN FAILED" on stdout once every connection has had its answer (or failed), then
nothing until it exits; closes all connections on exit. Raises its RLIMIT_NOFILE soft limit to
the hard limit first (N must stay below it). Opens at most 256 connections at a time so the
server's listen backlog never overflows. Loopback use only; not on any hot path.

usage: idle-conns.py HOST PORT PATH N [MAX_SECONDS]     (default MAX_SECONDS 120)
"""
import asyncio
import resource
import signal
import sys


async def one(host, port, path, sem, conns):
    """Open one connection, do one keep-alive GET, keep the connection; False on failure."""
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            w.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await asyncio.wait_for(r.readexactly(length), 10)
            if not head.startswith(b"HTTP/1.1 2"):
                w.close()
                return False
            conns.append(w)
            return True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            return False


async def main():
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    max_seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sem = asyncio.Semaphore(256)
    conns = []
    results = await asyncio.gather(*(one(host, port, path, sem, conns) for _ in range(n)))
    ok = sum(results)
    print(f"ready {ok} {n - ok}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), max_seconds)
    except asyncio.TimeoutError:
        pass
    for w in conns:
        w.close()


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__.split("\n\n")[-1])
    asyncio.run(main())
