#!/usr/bin/env python3
"""Holds many idle TLS connections to an lh-server, for
HostileClientTests: each says hello (the bytes given), then only a
heartbeat every 4 s. Run in a process of its own so that the test
process keeps few descriptors (Foundation's Process.run, which every live
test uses to start servers and workers, crashed with ~1,400 open).

Control through files in --control: `count` asks for the number still
open (answered "open N" on stdout), `close` closes them all ("closed").
Prints "opened N in S s" once all are open. Exits by itself after
--lifetime seconds, so nothing outlives a test that died.
"""
import argparse
import asyncio
import os
import ssl
import sys
import time


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--hello", required=True, help="a framed Hello envelope, hex")
    p.add_argument("--heartbeat", required=True, help="a framed Heartbeat envelope, hex")
    p.add_argument("--control", required=True, help="directory of the control files")
    p.add_argument("--lifetime", type=float, default=300)
    a = p.parse_args()

    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.check_hostname = False
    hello, beat = bytes.fromhex(a.hello), bytes.fromhex(a.heartbeat)
    writers = []
    open_flags = []

    async def drain(reader, index):
        # Reads what the server sends (its Welcome) until it closes.
        try:
            while await reader.read(4096):
                pass
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        open_flags[index] = False

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port, ssl=ctx)
        writer.write(hello)
        await writer.drain()
        return reader, writer

    def heartbeat():
        for w, is_open in zip(writers, open_flags):
            if is_open:
                w.write(beat)

    started = time.monotonic()
    last_beat = started
    readers = []
    while len(writers) < a.count:
        if time.monotonic() - last_beat > 4:
            heartbeat()
            last_beat = time.monotonic()
        batch = await asyncio.gather(*[one() for _ in range(min(100, a.count - len(writers)))])
        for reader, writer in batch:
            open_flags.append(True)
            writers.append(writer)
            readers.append(asyncio.ensure_future(drain(reader, len(writers) - 1)))
    heartbeat()
    last_beat = time.monotonic()
    print(f"opened {len(writers)} in {time.monotonic() - started:.1f} s", flush=True)

    count_file = os.path.join(a.control, "count")
    close_file = os.path.join(a.control, "close")
    while time.monotonic() - started < a.lifetime:
        await asyncio.sleep(0.1)
        if time.monotonic() - last_beat > 4:
            heartbeat()
            last_beat = time.monotonic()
        if os.path.exists(count_file):
            os.remove(count_file)
            print(f"open {sum(open_flags)}", flush=True)
        if os.path.exists(close_file):
            break
    for w in writers:
        w.close()
    await asyncio.sleep(0.2)
    for r in readers:
        r.cancel()
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
