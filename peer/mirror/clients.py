"""What each client needs to pull through a host's registry mirror, as text to paste:
ollama, containerd (``hosts.toml``), podman and skopeo (``registries.conf``), crane and
oras. ``shoal mirror config`` prints it for the mirror address the agent's settings name.
"""

from __future__ import annotations

from shoal.ref import DEFAULT_HOST

CLIENTS = ("ollama", "containerd", "podman", "skopeo", "crane", "oras", "huggingface")


def config(client: str, mirror: str, model: str = "library/deepseek-r1:7b") -> str:
    """The configuration or commands for ``client`` with the mirror at ``mirror``."""
    short = model.removeprefix("library/")
    texts = {
        "ollama": (
            "# ollama has no mirror setting: pull from the mirror by name, then name it\n"
            "# as usual (the fleet fetches it once; the mirror answers ollama's protocol)\n"
            f"ollama pull --insecure {mirror}/{model}\n"
            f"ollama cp {mirror}/{model} {short}\n"
            f"ollama rm {mirror}/{model}   # the copy's name only: blobs stay\n"
            f"# or, with no ollama server running: shoal pull {short} && "
            f"shoal export {short} --ollama ~/.ollama/models\n"
        ),
        "containerd": (
            f"# /etc/containerd/certs.d/{DEFAULT_HOST}/hosts.toml (one such file per registry;\n"
            '# containerd 1.x: config_path = "/etc/containerd/certs.d" in its CRI registry\n'
            "# settings, ctr: --hosts-dir /etc/containerd/certs.d)\n"
            f'server = "https://{DEFAULT_HOST}"\n\n'
            f'[host."http://{mirror}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        ),
        "podman": _registries_conf(mirror),
        "skopeo": (
            _registries_conf(mirror)
            + "\n# or name the mirror directly:\n"
            + f"skopeo copy --src-tls-verify=false docker://{mirror}/{model} dir:./model\n"
        ),
        "crane": f"crane pull --insecure {mirror}/{model} model.tar\n",
        "oras": f"oras pull --plain-http {mirror}/{model}\n",
        "huggingface": (
            "# huggingface_hub, transformers, vLLM, TGI: the mirror answers the Hub's API\n"
            f"export HF_ENDPOINT=http://{mirror}\n"
            "hf download org/name   # or snapshot_download('org/name'), from_pretrained\n"
        ),
    }
    return texts[client]


def _registries_conf(mirror: str) -> str:
    return (
        "# /etc/containers/registries.conf.d/shoal.conf\n"
        "[[registry]]\n"
        f'prefix = "{DEFAULT_HOST}"\n'
        f'location = "{DEFAULT_HOST}"\n\n'
        "[[registry.mirror]]\n"
        f'location = "{mirror}"\n'
        "insecure = true\n"
    )
