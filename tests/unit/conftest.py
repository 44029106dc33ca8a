import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests run without a cluster: starting Ray here is a bug in the test."""
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tests/unit must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)
