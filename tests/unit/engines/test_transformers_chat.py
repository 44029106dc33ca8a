from app.engines.transformers_chat import fewest_tokens


def test_fewest_tokens_finds_the_first_prefix_that_reaches_the_stop() -> None:
    for first in range(0, 40):
        asked: list[int] = []

        def reaches(k: int, first: int = first, asked: list[int] = asked) -> bool:
            asked.append(k)
            return k >= first

        assert fewest_tokens(40, reaches) == first
        assert len(asked) <= 6  # log2(40) decodes, not one per prefix


def test_transformers_penalties_follow_openais_formula() -> None:
    import torch

    from app.engines.transformers_chat import Penalties

    prompt = [[5, 5], [5, 5]]  # prompt tokens do not count, only generated ones
    generated = [[1, 1, 2], [1, 1, 2]]
    ids = torch.tensor([p + g for p, g in zip(prompt, generated, strict=True)])
    scores = torch.zeros(2, 6)
    out = Penalties(2, [(0.5, 0.25), (0.0, 0.0)], "cpu")(ids, scores)
    # row 0: token 1 seen twice -> 0.25*2 + 0.5; token 2 once -> 0.25 + 0.5; token 5 is only in the prompt
    assert out[0].tolist() == [0.0, -1.0, -0.75, 0.0, 0.0, 0.0]
    assert out[1].tolist() == [0.0] * 6

