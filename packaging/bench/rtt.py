#!/usr/bin/env python3
"""rtt.py serve PORT | rtt.py ping HOST PORT [N]: a TCP echo server, or a
client that times N (default 2000) 64-byte request/reply exchanges on one
connection and prints "mean_us p50_us p99_us"."""
import socket
import statistics
import sys
import threading
import time


def serve(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(16)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def echo(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(4096):
        conn.sendall(data)


def ping(host, port, n):
    conn = socket.create_connection((host, port), timeout=10)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message, took = b"x" * 64, []
    for _ in range(n):
        start = time.perf_counter()
        conn.sendall(message)
        got = b""
        while len(got) < len(message):
            chunk = conn.recv(len(message) - len(got))
            if not chunk:
                raise SystemExit("the connection closed")
            got += chunk
        took.append((time.perf_counter() - start) * 1e6)
    took.sort()
    print(f"{statistics.mean(took):.0f} {took[len(took) // 2]:.0f} {took[int(len(took) * 0.99)]:.0f}")


if sys.argv[1] == "serve":
    serve(int(sys.argv[2]))
else:
    ping(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 2000)
