"""Cold start and memory of `make serve`: time from launch to GET /ready == 200, and the peak total memory (PSS) of
the whole process tree (serve CLI, Ray, replicas, vLLM engine processes) while it starts and answers a few requests.

Usage: .venv/bin/python scripts/measure_serve.py [--port 8000]  (run with nothing else on the port)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import threading
import time

import httpx
import psutil


def tree_pss_bytes(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    started = time.monotonic()
    server = subprocess.Popen(["make", "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    root = psutil.Process(server.pid)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_pss_bytes(root))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ready_s = None
    try:
        while time.monotonic() - started < args.timeout:
            try:
                if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                    ready_s = time.monotonic() - started
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        if ready_s is None:
            raise SystemExit(f"not ready after {args.timeout}s")
        question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
        t0 = time.monotonic()
        reply = httpx.post(f"{base}/v1/chat/completions", timeout=120, json={
            "model": "smollm2-135m-instruct", "messages": question, "temperature": 0, "max_tokens": 16}).json()
        first_s = time.monotonic() - t0
        for _ in range(8):
            httpx.post(f"{base}/v1/embeddings", timeout=60, json={"model": "all-minilm-l6-v2", "input": ["x"] * 32})
        time.sleep(2)
    finally:
        stop.set()
        sampler.join()
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    print(f"cold start to /ready: {ready_s:.1f} s")
    print(f"first chat answer: {reply['choices'][0]['message']['content']!r} in {first_s:.2f} s")
    print(f"peak memory (PSS, whole process tree): {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
