#!/usr/bin/env python3
"""Scrapes lh-server's /metrics (TLS verified against --ca), parses the text
with the Prometheus client's own parser (PyPI prometheus-client), and prints
every sample as JSON: {"name{label="value",...}": value}. A text the parser
refuses fails with exit status 1.

  metrics_check.py URL [--ca FILE]
"""
import argparse
import json
import ssl
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--ca")
    a = p.parse_args()
    context = ssl.create_default_context(cafile=a.ca) if a.url.startswith("https:") else None
    with urllib.request.urlopen(a.url, context=context, timeout=30) as r:
        content_type = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    samples = {}
    types = {}
    try:
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    except Exception as e:  # the parser's complaint, with the text it refused
        print(f"prometheus_client could not parse /metrics: {e}\n{text}", file=sys.stderr)
        sys.exit(1)
    json.dump({"contentType": content_type, "types": types, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
