#!/usr/bin/env python3
"""Opens a dashboard page in headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium), optionally waits until the page (which
refreshes itself) shows a text, saves a screenshot, and prints what is on
the page as JSON: its title and text, the ThreadRun tree's entries, the graph
nodes drawn with their status, and each WfSpec section's declared and drawn
node counts.

  browser_check.py URL --screenshot FILE [--wait-text TEXT] [--timeout SECONDS]

The development CA is not in Chromium's store, so certificate errors are
accepted here; http_request.py and metrics_check.py verify the TLS chain.
"""
import argparse
import json
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

COLLECT = """
const q = (s, el) => Array.from((el || document).querySelectorAll(s));
return {
  title: document.title,
  text: document.body ? document.body.innerText : "",
  threads: q('li.thread').map(li => ({
    number: li.dataset.thread, type: li.dataset.type, status: li.dataset.status, parent: li.dataset.parent,
    text: li.innerText})),
  nodes: q('#thread-graph g.node').map(g => ({node: g.dataset.node, status: g.dataset.status, type: g.dataset.type})),
  sections: q('section.thread-spec').map(s => ({
    threadSpec: s.dataset.threadSpec, declared: parseInt(s.dataset.nodes),
    drawn: q('g.node', s).map(g => g.dataset.node), edges: q('.edge', s).length})),
  scripts: q('script').length,
  external: q('link[href^="http"], script[src], img[src^="http"]').length,
};
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--screenshot", required=True)
    p.add_argument("--wait-text")
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1600"]:
        options.add_argument(arg)
    options.accept_insecure_certs = True
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(a.url)
        page = None
        deadline = time.time() + a.timeout
        while True:
            try:
                page = driver.execute_script(COLLECT)
            except WebDriverException:
                page = None  # the page is reloading itself
            if page and (not a.wait_text or a.wait_text in page["text"]):
                break
            if time.time() > deadline:
                print(f"the page never showed {a.wait_text!r} within {a.timeout} s", file=sys.stderr)
                break
            time.sleep(0.3)
        height = driver.execute_script("return document.body.scrollHeight") or 1600
        driver.set_window_size(1400, min(max(height + 40, 800), 6000))
        driver.save_screenshot(a.screenshot)
        json.dump(page or {}, sys.stdout)
        if a.wait_text and (not page or a.wait_text not in page["text"]):
            sys.exit(4)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
