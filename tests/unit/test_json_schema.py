from app.json_schema import schema_problem


def test_a_valid_schema_has_no_problem() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    assert schema_problem(schema) is None
    assert schema_problem({}) is None  # anything goes


def test_a_malformed_schema_says_where() -> None:
    problem = schema_problem({"type": "object", "properties": {"city": {"type": "strang"}}})
    assert problem is not None and "properties/city/type" in problem
    assert schema_problem({"type": 5}) is not None
    assert schema_problem([]) == "a schema must be an object"
    assert schema_problem({"$schema": "http://json-schema.org/draft-07/schema#", "type": "nope"}) is not None
