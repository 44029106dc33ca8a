"""Production guards the ingress runs in-process: API keys and limits, admission by priority, a response cache."""
