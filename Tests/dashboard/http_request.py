#!/usr/bin/env python3
"""One HTTP(S) request with Python's standard library; prints the answer as
JSON ({"status", "headers", "body"}). TLS is verified against --ca.

  http_request.py METHOD URL [--ca FILE] [--form k=v ...] [--header 'Name: value' ...]
"""
import argparse
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("method")
    p.add_argument("url")
    p.add_argument("--ca")
    p.add_argument("--form", action="append", default=[])
    p.add_argument("--header", action="append", default=[])
    a = p.parse_args()
    data = None
    if a.form:
        data = urllib.parse.urlencode([tuple(f.split("=", 1)) for f in a.form]).encode()
    elif a.method == "POST":
        data = b""
    request = urllib.request.Request(a.url, data=data, method=a.method)
    for h in a.header:
        name, value = h.split(":", 1)
        request.add_header(name.strip(), value.strip())
    handlers = [NoRedirect()]
    if a.url.startswith("https:"):
        context = ssl.create_default_context(cafile=a.ca)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=30) as r:
            status, headers, body = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, dict(e.headers), e.read()
    json.dump({"status": status, "headers": headers, "body": body.decode("utf-8", "replace")}, sys.stdout)


if __name__ == "__main__":
    main()
