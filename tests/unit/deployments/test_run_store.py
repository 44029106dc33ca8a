"""Run store keys: a run reads back its own objects of its kind; a first start deletes its app's older runs only."""

from __future__ import annotations

from deployments.run_store import RunStore


class DictKv:
    """The GCS internal KV, as a dict."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self.data if k.startswith(prefix)]

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_a_run_reads_back_its_own_snapshots_by_model() -> None:
    kv = DictKv()
    store = RunStore("rollouts", "graph", "run1", kv)
    store.save("org/model", {"step": 1})
    store.save("other", {"step": 2})
    store.save("other", {"step": 3})
    assert RunStore("rollouts", "graph", "run1", kv).load() == {"org/model": {"step": 1}, "other": {"step": 3}}
    assert RunStore("rollouts", "graph", "run2", kv).load() == {}
    assert RunStore("rollouts", "graph2", "run1", kv).load() == {}


def test_a_new_run_deletes_its_apps_older_runs_only() -> None:
    kv = DictKv()
    for app in ("a", "a/b", "ab"):
        RunStore("rollouts", app, "old", kv).save("m", {"step": 1})
    new = RunStore("rollouts", "a", "new", kv)
    new.save("m", {"step": 0})
    assert new.forget_other_runs() == 1
    assert RunStore("rollouts", "a", "old", kv).load() == {}
    assert new.load() == {"m": {"step": 0}}
    for app in ("a/b", "ab"):
        assert RunStore("rollouts", app, "old", kv).load() == {"m": {"step": 1}}


def test_an_unreadable_snapshot_is_left_out() -> None:
    kv = DictKv()
    store = RunStore("rollouts", "graph", "run1", kv)
    store.save("good", {"step": 1})
    kv.data["rollouts/graph/run1/bad"] = b"{not json"
    kv.data["rollouts/graph/run1/list"] = b"[1]"
    assert store.load() == {"good": {"step": 1}}


def test_kinds_are_apart_and_a_name_can_be_deleted() -> None:
    kv = DictKv()
    rollouts, adapters = RunStore("rollouts", "graph", "run1", kv), RunStore("adapters", "graph", "run1", kv)
    rollouts.save("m", {"step": 1})
    adapters.save("m", {"path": "/a"})
    adapters.save("n", {"path": "/b"})
    adapters.delete("m")
    assert adapters.load() == {"n": {"path": "/b"}} and rollouts.load() == {"m": {"step": 1}}
    assert RunStore("adapters", "graph", "run2", kv).forget_other_runs() == 1 and rollouts.load() == {"m": {"step": 1}}
