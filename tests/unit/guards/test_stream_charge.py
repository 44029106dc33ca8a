from app.guards.stream_charge import StreamCharge
from app.observability.metering import EngineReport


def report(prompt: int, completion: int) -> EngineReport:
    return EngineReport(
        engine_s=0.1, replica_s=0.1, first_token_s=0.05, prompt_tokens=prompt, completion_tokens=completion
    )


def test_a_finished_stream_costs_its_usage_in_total() -> None:
    charges: list[int] = []
    stream = StreamCharge(charges.append, report(20, 1))
    assert charges == [21]  # the prompt is charged with the first event, before the stream ends
    for _ in range(9):
        stream.event()
    stream.final(report(20, 12))
    stream.close()
    assert sum(charges) == 32


def test_a_stream_cut_short_costs_its_prompt_and_a_token_per_event() -> None:
    charges: list[int] = []
    stream = StreamCharge(charges.append, report(20, 1))
    for _ in range(5):
        stream.event()
    stream.close()
    stream.close()  # closing twice charges once
    assert sum(charges) == 26
