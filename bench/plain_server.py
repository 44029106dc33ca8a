"""The no-op service behind FastAPI and uvicorn alone: `python -m bench.plain_server PORT`."""

from __future__ import annotations

import sys

import uvicorn

from bench.graphs import NOOP_MODEL
from bench.noop import plain_app

if __name__ == "__main__":
    uvicorn.run(plain_app(NOOP_MODEL), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
