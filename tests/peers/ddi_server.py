#!/usr/bin/env python3
"""A DDI server that knows nothing of this project, as the tests need one (issue: hawkBit-
compatible servers): it offers one file as a deployment the way a generic hawkBit-style
server does, with a chunk named after the uploaded file, a `part` of its own ("os"), only a
SHA-1 hash and none of this project's `dm.*` metadata, and it has no status message endpoint.

    ddi_server.py --cert PEM --key PEM --token T --file PATH --log FEEDBACK.jsonl

Listens on 127.0.0.1, port 0; prints "listening https://127.0.0.1:PORT" when ready. Each
feedback body is appended to the log, one JSON object per line. Standard library only.
"""
import argparse
import hashlib
import json
import os
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACTION = "17"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    data = open(a.file, "rb").read()
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
