#!/usr/bin/env python3
"""A DDI server that knows nothing of this project, as the tests need one (issue: hawkBit-
compatible servers): it offers one file as a deployment the way a generic hawkBit-style
server does, with a chunk named after the uploaded file, a `part` of its own ("os"), only a
SHA-1 hash and none of this project's `dm.*` metadata, and it has no status message endpoint.

    ddi_server.py --cert PEM --key PEM --token T --file PATH --log FEEDBACK.jsonl [--images-only]

Listens on 127.0.0.1, port 0; prints "listening https://127.0.0.1:PORT" when ready. Each
feedback body is appended to the log, one JSON object per line, each configData body to
FEEDBACK.jsonl.config; each download of the file to FEEDBACK.jsonl.downloads, one line each:
the Range asked for, or "full". With --images-only it
behaves like the servers that accept only system images as uploads: a file that is neither a
SWUpdate image (cpio, first entry sw-description) nor a RAUC bundle (squashfs) is refused at
start (exit 2). Answers Range requests (206) as hawkBit does. Standard library only.
"""
import argparse
import hashlib
import json
import os
import re
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACTION = "17"


def is_image(data):
    """A SWUpdate image (a cpio "newc"/"crc" archive whose first entry is sw-description) or
    a RAUC bundle (a squashfs)."""
    if data[:4] == b"hsqs":
        return True
    if data[:6] not in (b"070701", b"070702") or len(data) < 110:
        return False
    try:
        namesize = int(data[94:102], 16)
    except ValueError:
        return False
    return data[110:110 + namesize] == b"sw-description\0"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--images-only", action="store_true")
    a = ap.parse_args()
    data = open(a.file, "rb").read()
    if a.images_only and not is_image(data):
        sys.stderr.write("ddi_server.py: %s is not a system image (SWUpdate .swu or RAUC bundle); only images are accepted\n" % a.file)
        sys.exit(2)
    name = os.path.basename(a.file)
    lock = threading.Lock()
    state = {"closed": False}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code, body=b"", ctype="application/json"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def authorized(self):
            if self.headers.get("Authorization") == "TargetToken " + a.token:
                return True
            self.reply(401, b'{"message":"unauthorized"}')
            return False

        def base(self):
            m = re.match(r"^(/[^/]+/controller/v1/[^/?]+)", self.path)
            return m.group(1) if m else None

        def do_GET(self):
            if not self.authorized():
                return
            base = self.base()
            host = "https://%s:%d" % self.server.server_address[:2]
            path = self.path.split("?")[0]
            if base is None:
                return self.reply(404, b"{}")
            if path == base:
                links = {}
                if not state["closed"]:
                    links["deploymentBase"] = {"href": host + base + "/deploymentBase/" + ACTION + "?c=1"}
                body = {"config": {"polling": {"sleep": "00:00:01"}}, "_links": links}
                return self.reply(200, json.dumps(body).encode())
            if path == base + "/deploymentBase/" + ACTION:
                href = host + base + "/softwaremodules/5/artifacts/" + name
                chunk = {
                    "part": "os",
                    "name": name,
                    "version": name,
                    "artifacts": [{
                        "filename": name,
                        "hashes": {"sha1": hashlib.sha1(data).hexdigest()},
                        "size": len(data),
                        "_links": {"download": {"href": href}, "download-http": {"href": href}},
                    }],
                }
                body = {"id": ACTION, "deployment": {"download": "forced", "update": "forced", "chunks": [chunk]}}
                return self.reply(200, json.dumps(body).encode())
            if path == base + "/softwaremodules/5/artifacts/" + name:
                asked = self.headers.get("Range")
                with lock:
                    with open(a.log + ".downloads", "a") as f:
                        f.write((asked or "full") + "\n")
                m = re.match(r"^bytes=(\d+)-(\d*)$", asked or "")
                if m and int(m.group(1)) < len(data):
                    first = int(m.group(1))
                    last = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                    self.send_response(206)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, len(data)))
                    self.send_header("Content-Length", str(last - first + 1))
                    self.end_headers()
                    self.wfile.write(data[first:last + 1])
                    return
                return self.reply(200, data, "application/octet-stream")
            return self.reply(404, b"{}")

        def do_POST(self):
            self.body_and_answer()

        def do_PUT(self):
            self.body_and_answer()

        def body_and_answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            if not self.authorized():
                return
            base = self.base() or ""
            path = self.path.split("?")[0]
            if path == base + "/deploymentBase/" + ACTION + "/feedback":
                with lock:
                    with open(a.log, "ab") as f:
                        f.write(body.replace(b"\n", b" ") + b"\n")
                    fb = json.loads(body)
                    if fb.get("status", {}).get("execution") == "closed":
                        state["closed"] = True
                return self.reply(200)
            if path == base + "/configData":
                with lock:
                    with open(a.log + ".config", "ab") as f:
                        f.write(body.replace(b"\n", b" ") + b"\n")
                return self.reply(200)
            return self.reply(404, b'{"message":"no such resource"}')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening https://127.0.0.1:%d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
