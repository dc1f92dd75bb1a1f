#!/usr/bin/env python3
"""Drives a running `colwgpu serve` over loopback and measures it (stdlib only).

Each phase runs C client threads (one keep-alive connection each) that send
text searches (`POST /indexes/NAME/search`, one query per request, k = 10,
queries cycled from a BEIR queries.jsonl) until REQUESTS requests are done or
SECONDS have passed, whichever comes first. With --writer, one more thread adds
a document (text from a BEIR corpus, a new id) and deletes the one it added
before, one write every --writer-interval seconds, for the whole phase.

Prints one JSON object per phase (queries/s, p50/p99 latency in ms, errors,
writes) and, with --rss-pid, the server's resident memory (VmRSS of
/proc/PID/status) after each count in --rss-at requests.

Bounded: only loopback addresses are accepted, every phase stops at its
request count or its time limit.

  scripts/load_test.py --port 18080 --index scifact --queries Q.jsonl --clients 1,8,64 \
      --requests 2000 --seconds 30 [--writer --corpus C.jsonl] [--rss-pid PID --rss-at 1000,10000]
"""

import argparse
import http.client
import itertools
import json
import statistics
import sys
import threading
import time


def post(conn, path, body):
    data = json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"content-type": "application/json"})
    r = conn.getresponse()
    payload = r.read()
    return r.status, payload


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


class Phase:
    def __init__(self, args, clients, writer, requests, seconds, rss_at=()):
        self.args = args
        self.clients = clients
        self.writer = writer
        self.requests = requests
        self.seconds = seconds
        self.lock = threading.Lock()
        self.issued = 0
        self.done = 0
        self.latencies = []
        self.errors = {}
        self.writes = 0
        self.write_latencies = []
        self.write_errors = {}
        self.stop = threading.Event()
        self.rss_at = sorted(rss_at)
        self.rss = {}

    def take(self):
        with self.lock:
            if self.issued >= self.requests or self.stop.is_set():
                return False
            self.issued += 1
            return True

    def client(self, offset, queries):
        conn = http.client.HTTPConnection(self.args.host, self.args.port, timeout=60)
        path = f"/indexes/{self.args.index}/search"
        for q in itertools.islice(itertools.cycle(queries), offset, None):
            if time.monotonic() > self.deadline or not self.take():
                break
            t = time.perf_counter()
            try:
                status, _ = post(conn, path, {"query": q, "k": 10})
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection(self.args.host, self.args.port, timeout=60)
            dt = time.perf_counter() - t
            with self.lock:
                self.done += 1
                if status == 200:
                    self.latencies.append(dt)
                else:
                    self.errors[str(status)] = self.errors.get(str(status), 0) + 1
                if self.rss_at and self.done >= self.rss_at[0]:
                    at = self.rss_at.pop(0)
                    self.rss[at] = rss_kib(self.args.rss_pid)
        conn.close()

    def write_loop(self, texts):
        conn = http.client.HTTPConnection(self.args.host, self.args.port, timeout=120)
        base = f"/indexes/{self.args.index}/documents"
        previous = None
        n = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            n += 1
            doc_id = f"loadtest-{self.args.tag}-{id(self)}-{n}"
            ops = [(base, {"documents": [{"id": doc_id, "text": texts[n % len(texts)],
                                          "metadata": {"loadtest": n}}]})]
            if previous:
                ops.append((base + "/delete", {"ids": [previous]}))
            for path, body in ops:
                t = time.perf_counter()
                try:
                    status, payload = post(conn, path, body)
                except (OSError, http.client.HTTPException) as e:
                    status, payload = type(e).__name__, b""
                    conn.close()
                    conn = http.client.HTTPConnection(self.args.host, self.args.port, timeout=120)
                dt = time.perf_counter() - t
                with self.lock:
                    if status == 200:
                        self.writes += 1
                        self.write_latencies.append(dt)
                    else:
                        key = f"{status}: {payload[:120]!r}"
                        self.write_errors[key] = self.write_errors.get(key, 0) + 1
            previous = doc_id
            self.stop.wait(self.args.writer_interval)
        # Leave the index as it was.
        if previous:
            try:
                post(conn, base + "/delete", {"ids": [previous]})
            except (OSError, http.client.HTTPException):
                pass
        conn.close()

    def run(self, queries, texts):
        self.deadline = time.monotonic() + self.seconds
        threads = [threading.Thread(target=self.client, args=(i * 7, queries))
                   for i in range(self.clients)]
        w = threading.Thread(target=self.write_loop, args=(texts,)) if self.writer else None
        t0 = time.perf_counter()
        if w:
            w.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        self.stop.set()
        if w:
            w.join()
        lat = sorted(self.latencies)
        ms = lambda v: None if v is None else round(1e3 * v, 2)
        wl = sorted(self.write_latencies)
        out = {
            "clients": self.clients,
            "writer": self.writer,
            "requests": self.done,
            "ok": len(lat),
            "errors": self.errors,
            "seconds": round(elapsed, 2),
            "qps": round(len(lat) / elapsed, 1),
            "p50_ms": ms(percentile(lat, 50)),
            "p99_ms": ms(percentile(lat, 99)),
            "mean_ms": ms(statistics.fmean(lat)) if lat else None,
        }
        if self.writer:
            out.update({
                "writes": self.writes,
                "write_p50_ms": ms(percentile(wl, 50)),
                "write_errors": self.write_errors,
            })
        if self.rss:
            out["rss_kib_after_requests"] = self.rss
        return out


def load_texts(path, key):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                d = json.loads(line)
                out.append(d.get(key) or d.get("title") or "")
    return [t for t in out if t]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True, help="BEIR queries.jsonl")
    ap.add_argument("--corpus", help="BEIR corpus.jsonl (texts the writer adds)")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--requests", type=int, default=2000, help="per phase, at most")
    ap.add_argument("--seconds", type=float, default=30.0, help="per phase, at most")
    ap.add_argument("--writer", action="store_true", help="add/delete documents during each phase")
    ap.add_argument("--writer-interval", type=float, default=0.2)
    ap.add_argument("--rss-pid", type=int)
    ap.add_argument("--rss-at", default="", help="request counts after which to read RSS")
    ap.add_argument("--tag", default="run", help="label (also part of the writer's ids)")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("load_test.py drives loopback servers only")
    if args.writer and not args.corpus:
        sys.exit("--writer needs --corpus")
    queries = load_texts(args.queries, "text")
    texts = load_texts(args.corpus, "text")[:500] if args.corpus else []
    rss_at = [int(x) for x in args.rss_at.split(",") if x]
    for c in [int(x) for x in args.clients.split(",") if x]:
        if rss_at:
            requests = max(rss_at)
        else:
            requests = args.requests
        # Warm-up (not measured): the model's first batches, the page cache.
        Phase(args, min(c, 8), False, 20, 10).run(queries, texts)
        ph = Phase(args, c, args.writer, requests, args.seconds, rss_at)
        r = ph.run(queries, texts)
        r["tag"] = args.tag
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
