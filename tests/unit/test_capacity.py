from pathlib import Path

import yaml

from app.capacity import Ask, asks, report, unplaced
from app.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_fractions_pack_two_per_gpu_and_a_fifth_is_reported() -> None:
    four = [Ask(f"e #{i}", 0.1, 0.5) for i in range(4)]
    assert unplaced(four, [(4, 2)]) == []
    fifth = Ask("e #5", 0.1, 0.5)
    assert unplaced([*four, fifth], [(4, 2)]) == [fifth]
    text = report([fifth], [(4, 2)])
    assert "e #5: 0.1 CPU, 0.5 GPU" in text and "4 CPU / 2 GPU" in text


def test_whole_gpus_stay_on_one_node() -> None:
    tp4 = Ask("chat-72b #1", 2, 4)
    assert unplaced([tp4], [(16, 2), (16, 2)]) == [tp4]  # four GPUs, but never four on one node
    assert unplaced([tp4], [(16, 2), (16, 4)]) == []


def test_fractions_fill_gpus_before_opening_new_ones() -> None:
    wanted = [Ask("a", 0, 0.75), Ask("b", 0, 0.25), Ask("c", 0, 1)]
    assert unplaced(wanted, [(4, 2)]) == []


def test_cpus_count_too() -> None:
    wanted = [Ask(f"r{i}", 1, 0) for i in range(3)]
    assert [a.replica for a in unplaced(wanted, [(2, 0)])] == ["r2"]


def test_default_graph_fits_two_cores_and_the_gpu_profile_needs_gpus() -> None:
    (cpu_app,) = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    assert unplaced(asks(load_config(cpu_app["args"])), [(2, 0)]) == []
    (gpu_app,) = yaml.safe_load((ROOT / "serve_config.gpu.yaml").read_text())["applications"]
    gpu = load_config(gpu_app["args"])
    assert unplaced(asks(gpu), [(2, 0)])  # a CPU host cannot take it
    assert unplaced(asks(gpu), [(96, 8), (96, 8)]) == []
