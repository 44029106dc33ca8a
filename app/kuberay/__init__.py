"""KubeRay manifests for the graph, rendered from a serve config; never edited by hand.

`python -m app.kuberay render --config serve_config.gpu.yaml --out kuberay` writes every manifest of `kuberay/`. The
README's Kubernetes section explains the choices; the modules explain the ones that the code alone would not show:
`profile` (the serve configs a cluster can run), `groups` (the GPU worker groups and their sizes), `pods` (the head,
its business sidecar and the GPU workers), `manifests` (every document and file), `options` (what the renderer
takes beyond the serve config) and `__main__` (the command).
"""
