"""`python -m bench` (`make bench`): the nine comparisons, one after the other, then their tables.

--only picks comparisons by name; --scale multiplies every request count (0.2 for a quick look);
--ingress-max-ongoing overrides the ingress's max_ongoing_requests in every graph the bench starts."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable

from bench import canary, chat_vs_vllm, embeddings, lora, node_loss, overhead, prefix, stream_interval, vllm_bench
from bench.report import Table, load_average, machine

COMPARISONS: dict[str, Callable[[float], Table]] = {
    "chat": chat_vs_vllm.run,
    "overhead": overhead.run,
    "embeddings": embeddings.run,
    "canary": canary.run,
    "prefix": prefix.run,
    "vllm-bench": vllm_bench.run,
    "stream-interval": stream_interval.run,
    "lora": lora.run,
    "node-loss": node_loss.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(COMPARISONS), help="comma-separated: " + ", ".join(COMPARISONS))
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every request count")
    parser.add_argument("--ingress-max-ongoing", type=int, help="the ingress's max_ongoing_requests (default: Serve's)")
    args = parser.parse_args(argv)
    if args.ingress_max_ongoing is not None:  # read by bench.graph_server, in each graph's own process
        os.environ["BENCH_INGRESS_MAX_ONGOING"] = str(args.ingress_max_ongoing)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(COMPARISONS))
    if unknown:
        parser.error(f"unknown comparison(s) {unknown}; choose from {list(COMPARISONS)}")
    print(f"machine: {machine()}", file=sys.stderr, flush=True)
    started = time.monotonic()
    tables: list[Table] = []
    failed: list[str] = []
    for name in chosen:
        print(f"\n== {name} (load average {load_average():.1f})", file=sys.stderr, flush=True)
        try:
            tables.append(COMPARISONS[name](args.scale))
        except Exception:  # the other comparisons still run; the exit status says one failed
            traceback.print_exc()
            failed.append(name)
    override = os.environ.get("BENCH_INGRESS_MAX_ONGOING")
    setting = f"ingress max_ongoing_requests overridden to {override}" if override else "the product's defaults"
    print(f"\nMeasured on: {machine()}; {setting}; bench took {time.monotonic() - started:.0f} s.\n")
    for table in tables:
        print(table.markdown())
    failed += [t.title for t in tables if t.failed]
    if failed:
        print(f"failed: {'; '.join(failed)} (see the tables' notes and .cache/bench/*.log)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
