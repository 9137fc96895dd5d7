"""Peak resident memory of `lclm serve` while clients send it large bodies.

Usage: /usr/bin/python3 bench/server_rss.py [--lclm build/bin/lclm]
       [--model models/lclm-small] [--clients 8] [--rounds 3] [--mb 60]

Starts the server on a free loopback port and has CLIENTS threads, ROUNDS
times each, send a chat request whose one message is MB megabytes of text
(or with --completions a prompt of that size; half of them with
Content-Length, half chunked; every body is under the
64 MiB limit, so each is read whole unless --max-body-bytes-in-flight turns
it away). A well-formed answer is a 400 (the prompt exceeds the context) or
a 503 server_busy (the bodies in flight would pass their budget); anything
else counts as a failure. The server's VmHWM (peak RSS) and its RSS before
the first request are read from /proc; /health is probed throughout and its
slowest answer reported. Prints one summary line and exits 1 on a failure.
"""
import argparse
import http.client
import json
import re
import subprocess
import sys
import threading
import time


import os
MODE = os.environ.get("RSS_CHUNKED", "half")
def CHUNKED(i, r):
    return {"half": (i + r) % 2 == 1, "all": True, "none": False}[MODE]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def send(port, path, body, chunked):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Content-Type": "application/json"}
    try:
        if chunked:
            def pieces():
                for at in range(0, len(body), 1 << 20):
                    yield body[at:at + (1 << 20)]
            c.request("POST", path, body=pieces(), headers=headers, encode_chunked=True)
        else:
            c.request("POST", path, body=body, headers=headers)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered (503) and closed before the body was sent: read the answer
    r = c.getresponse()
    payload = r.read()
    c.close()
    code = None
    try:
        code = json.loads(payload)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        pass
    return r.status, code


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lclm", default="build/bin/lclm")
    ap.add_argument("--model", default="models/lclm-small")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=float, default=60)
    ap.add_argument("--completions", action="store_true",
                    help="send /v1/completions prompts instead of chat messages")
    ap.add_argument("serve_flags", nargs="*", help="passed to lclm serve (after --)")
    a = ap.parse_args()

    server = subprocess.Popen([a.lclm, "serve", "-m", a.model, "--port", "0", "-t", "1",
                               *a.serve_flags], stderr=subprocess.PIPE, text=True)
    port = None
    for line in server.stderr:
        m = re.search(r" on http://[^:]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        sys.exit("the server did not start")
    threading.Thread(target=server.stderr.read, daemon=True).start()  # drain its log

    word = "lighthouse keeper counts ships "
    text = (word * int(a.mb * 1e6 / len(word) + 1))[: int(a.mb * 1e6)]
    if a.completions:
        path, request = "/v1/completions", {"prompt": text, "max_tokens": 4}
    else:
        path, request = "/v1/chat/completions", {"messages": [{"role": "user", "content": text}],
                                                 "max_tokens": 4}
    body = json.dumps(request).encode()
    start_kib = status_kib(server.pid, "VmRSS")

    outcomes, lock, done = {}, threading.Lock(), threading.Event()
    slowest = [0.0]

    def client(i):
        for r in range(a.rounds):
            try:
                key = send(port, path, body, chunked=CHUNKED(i, r))
            except OSError as e:
                key = ("error", type(e).__name__)
            with lock:
                outcomes[key] = outcomes.get(key, 0) + 1

    def probe():
        while not done.is_set():
            t0 = time.monotonic()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", "/health")
                c.getresponse().read()
                c.close()
            except OSError:
                slowest[0] = float("inf")
            slowest[0] = max(slowest[0], time.monotonic() - t0)
            time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - t0
    done.set()
    prober.join()
    peak_kib = status_kib(server.pid, "VmHWM")
    server.terminate()
    server.wait()

    expected = {(400, "context_length_exceeded"), (503, "server_busy")}
    failed = sum(n for k, n in outcomes.items() if k not in expected)
    answers = ", ".join(f"{k[0]} {k[1]}: {n}" for k, n in sorted(outcomes.items(), key=str))
    print(f"{a.clients} clients x {a.rounds} bodies of {a.mb:g} MB in {seconds:.1f} s: {answers}; "
          f"server RSS {start_kib / 1024:.0f} MiB at start, peak {peak_kib / 1024:.0f} MiB; "
          f"/health slowest {slowest[0] * 1e3:.0f} ms")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
