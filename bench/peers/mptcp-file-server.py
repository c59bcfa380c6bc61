#!/usr/bin/env python3
"""The direct-MPTCP origin of the benchmark (issue 9's "limit"): an HTTP/1.1 file server on an
MPTCP socket (IPPROTO_MPTCP = 262) that sends each file with 1 MiB read()+send() calls.

Why not nginx: nginx under mptcpize with sendfile() crawls (~250 Mbit/s on MPTCP), and with
sendfile off it writes in output_buffers-sized pieces and was slower than our proxy; the JS blob
server makes its bytes in JS (~1.6 Gbit/s). Here a thread per connection reads the file (page
cache) into one 1 MiB buffer and send()s it whole; the GIL is released in both calls.

  python3 mptcp-file-server.py --host ADDR --port PORT --root DIR
Serves GET /<name> from DIR (no subdirectories), Connection: close; prints "listening PORT".
"""
import argparse
import os
import socket
import sys
import threading

IPPROTO_MPTCP = getattr(socket, 'IPPROTO_MPTCP', 262)
CHUNK = 1 << 20


def serve(conn: socket.socket, root: str) -> None:
    try:
        req = b''
        while b'\r\n\r\n' not in req:
            got = conn.recv(8192)
            if not got:
                return
            req += got
            if len(req) > 65536:
                return
        line = req.split(b'\r\n', 1)[0].decode('latin1').split(' ')
        name = line[1].lstrip('/') if len(line) >= 2 else ''
        path = os.path.join(root, name)
        if line[0] != 'GET' or '/' in name or name in ('', '.', '..') or not os.path.isfile(path):
            conn.sendall(b'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
            return
        size = os.path.getsize(path)
        conn.sendall(f'HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n'.encode('latin1'))
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with open(path, 'rb', buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                conn.sendall(view[:n])
        conn.shutdown(socket.SHUT_WR)
        # Wait for the client's close so the last bytes are not cut by an RST.
        conn.settimeout(30)
        while conn.recv(65536):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('--host', default='0.0.0.0')
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--root', required=True)
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.host, a.port))
    s.listen(1024)
    print(f'listening {s.getsockname()[1]}', flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, a.root), daemon=True).start()


if __name__ == '__main__':
    sys.exit(main())
