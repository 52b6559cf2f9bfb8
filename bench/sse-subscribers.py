#!/usr/bin/env python3
"""Hold N server-sent-event subscribers of one flashd sale (bench/sse).

One epoll loop, standard library only. Opens N connections to
GET /api/v1/activities/{sale}/stream, checks each answer's head (200 or
refused), counts the events and heartbeats every subscriber receives, and
writes its figures as one JSON object to --status every second, until
SIGTERM; the last figures go to stdout.
"""
import argparse
import json
import os
import resource
import selectors
import signal
import socket
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sale", type=int, required=True)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--status", required=True)
    a = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    req = (
        f"GET /api/v1/activities/{a.sale}/stream HTTP/1.1\r\n"
        "Host: bench\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    sel = selectors.EpollSelector()
    # fd -> [socket, head bytes or None once streaming, tail of last read]
    conns = {}
    st = dict(opened=0, streaming=0, refused=0, closed=0, events=0,
              heartbeats=0, bytes=0, connect_errors=0)
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def status(final=False):
        st["t"] = time.time()
        tmp = a.status + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, a.status)
        if final:
            print(json.dumps(st))

    def drop(fd):
        s = conns.pop(fd)[0]
        sel.unregister(s)
        s.close()

    def pump(timeout):
        for key, _ in sel.select(timeout):
            fd = key.fd
            c = conns.get(fd)
            if c is None:
                continue
            try:
                data = c[0].recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                st["closed"] += 1
                drop(fd)
                continue
            st["bytes"] += len(data)
            if c[1] is not None:
                c[1] += data
                end = c[1].find(b"\r\n\r\n")
                if end < 0:
                    continue
                if not c[1].startswith(b"HTTP/1.1 200"):
                    st["refused"] += 1
                    drop(fd)
                    continue
                st["streaming"] += 1
                data = c[1][end + 4:]
                c[1] = None
            # Events start "id: "; heartbeats are ":\n\n". The tail of the
            # previous read catches a marker split across two reads.
            buf = c[2] + data
            st["events"] += buf.count(b"id: ")
            st["heartbeats"] += buf.count(b"\n:\n\n") + (1 if buf.startswith(b":\n\n") else 0)
            c[2] = buf[-4:]

    last = 0.0
    pending = a.n
    while not stop:
        # Open in batches, serving what arrives in between, so the server's
        # accept queue is never the bottleneck being measured.
        batch = min(pending, 500)
        for _ in range(batch):
            try:
                s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            except OSError:
                st["connect_errors"] += 1
                continue
            s.setblocking(False)
            s.sendall(req)
            conns[s.fileno()] = [s, b"", b""]
            sel.register(s, selectors.EVENT_READ)
            st["opened"] += 1
        pending -= batch
        pump(0.05 if pending else 0.5)
        now = time.time()
        if now - last >= 1.0:
            status()
            last = now
    status(final=True)


if __name__ == "__main__":
    main()
