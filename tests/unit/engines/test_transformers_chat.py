from app.engines.transformers_chat import fewest_tokens


def test_fewest_tokens_finds_the_first_prefix_that_reaches_the_stop() -> None:
    for first in range(0, 40):
        asked: list[int] = []

        def reaches(k: int, first: int = first, asked: list[int] = asked) -> bool:
            asked.append(k)
            return k >= first

        assert fewest_tokens(40, reaches) == first
        assert len(asked) <= 6  # log2(40) decodes, not one per prefix
