#!/usr/bin/env python3
"""A multi-tenant fake of Auth0's Management API, for the benchmark and the
priority-lane test (many tenants at once).

Each tenant lives under its own path prefix: base_url = http://127.0.0.1:PORT/<tenant>.
It answers what keyturn's Auth0 target calls, the way Auth0 does:

  POST  /<tenant>/oauth/token            client-credentials grant (client_id "bench-client",
                                         client_secret from --client-secret)
  PATCH /<tenant>/api/v2/emails/provider stores name/enabled/credentials (bearer token required)
  GET   /<tenant>/api/v2/emails/provider answers the provider, accessKeyId revealed

Usage: fake_auth0.py --port-file FILE --client-secret SECRET [--latency-ms N]
--latency-ms adds N ms before every answer (Auth0 over the internet answers
in a few hundred ms; the priority-lane test drains its backlog behind it).
Prints nothing; writes the port it listens on to FILE once it is ready.
"""
import argparse
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLIENT_ID = "bench-client"
LOCK = threading.Lock()
TOKENS = set()
PROVIDERS = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    client_secret = ""

    def log_message(self, *args):  # quiet
        pass

    latency = 0.0

    def reply(self, status, body):
        if self.latency:
            time.sleep(self.latency)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"null")
        except ValueError:
            return None

    def split(self):
        path = self.path.split("?", 1)[0]
        parts = path.split("/", 2)  # "", tenant, rest
        if len(parts) < 3:
            return None, None
        return parts[1], "/" + parts[2]

    def authorized(self):
        auth = self.headers.get("authorization", "")
        with LOCK:
            return auth.startswith("Bearer ") and auth[7:] in TOKENS

    def do_POST(self):
        tenant, rest = self.split()
        body = self.body()
        if rest != "/oauth/token" or not isinstance(body, dict):
            return self.reply(404, {"statusCode": 404, "error": "Not Found"})
        aud = body.get("audience") or ""
        if body.get("grant_type") != "client_credentials" or not (aud.startswith("https://") and aud.endswith("/api/v2/")):
            return self.reply(400, {"error": "invalid_request"})
        if body.get("client_id") != CLIENT_ID or body.get("client_secret") != self.client_secret:
            return self.reply(401, {"error": "access_denied"})
        tok = "bench-token-" + secrets.token_hex(16)
        with LOCK:
            TOKENS.add(tok)
        self.reply(200, {"access_token": tok, "token_type": "Bearer", "expires_in": 86400})

    def do_PATCH(self):
        tenant, rest = self.split()
        body = self.body()
        if rest != "/api/v2/emails/provider":
            return self.reply(404, {"statusCode": 404, "error": "Not Found"})
        if not self.authorized():
            return self.reply(401, {"statusCode": 401, "error": "Unauthorized", "message": "Invalid token"})
        creds = (body or {}).get("credentials") or {}
        if (body or {}).get("name") != "ses" or not all(creds.get(k) for k in ("accessKeyId", "secretAccessKey", "region")):
            return self.reply(400, {"statusCode": 400, "error": "Bad Request", "errorCode": "invalid_body"})
        p = {"name": "ses", "enabled": body.get("enabled", True), "credentials": {"accessKeyId": creds["accessKeyId"], "region": creds["region"]}}
        if body.get("default_from_address"):
            p["default_from_address"] = body["default_from_address"]
        with LOCK:
            PROVIDERS[tenant] = p
        self.reply(200, p)

    def do_GET(self):
        tenant, rest = self.split()
        if rest != "/api/v2/emails/provider":
            return self.reply(404, {"statusCode": 404, "error": "Not Found"})
        if not self.authorized():
            return self.reply(401, {"statusCode": 401, "error": "Unauthorized", "message": "Invalid token"})
        with LOCK:
            p = PROVIDERS.get(tenant)
        if p is None:
            return self.reply(404, {"statusCode": 404, "error": "Not Found", "errorCode": "inexistent_email_provider"})
        self.reply(200, p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--client-secret", required=True)
    ap.add_argument("--latency-ms", type=int, default=0)
    a = ap.parse_args()
    Handler.client_secret = a.client_secret
    Handler.latency = a.latency_ms / 1000.0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    import os
    os.replace(a.port_file + ".tmp", a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
