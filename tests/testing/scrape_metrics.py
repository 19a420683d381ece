#!/usr/bin/python3
"""Scrapes a model-server's /metrics and parses it with the Prometheus client
library's own text parser; prints one JSON object:
{family: {"type": ..., "samples": [[name, {labels}, value], ...]}}.

usage: scrape_metrics.py PORT
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

port = sys.argv[1]
with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
    assert r.status == 200, r.status
    ctype = r.headers.get("Content-Type", "")
    text = r.read().decode("utf-8")
out = {"_content_type": ctype}
for fam in text_string_to_metric_families(text):
    out[fam.name] = {"type": fam.type,
                     "samples": [[s.name, s.labels, s.value] for s in fam.samples]}
print(json.dumps(out))
