"""`agent-runtime serve` as a real process: binds 127.0.0.1, serves named models, stops on SIGTERM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx
import pytest
from conftest import stop_serve, wait_for_serve

from agent_runtime.serve_command import model_specs

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from tiny_models import save_tiny_model  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_model_specs_accept_names():
    assert model_specs(None) == [(None, None)]
    assert model_specs(["tiny=/models/x", "org/name"]) == [("tiny", "/models/x"), (None, "org/name")]


@pytest.fixture(scope="module")
def two_tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return save_tiny_model("llama", root / "a"), save_tiny_model("qwen3", root / "b")


def test_serve_process_routes_by_model_and_stops_cleanly(two_tiny_models):
    a, b = two_tiny_models
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_runtime", "serve", "--model", f"alpha={a}", "--model", f"beta={b}",
         "--port", str(port), "--no-embeddings"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_serve(proc, base, timeout=120)
        ids = [m["id"] for m in httpx.get(f"{base}/v1/models").json()["data"]]
        assert ids[:2] == ["alpha", "beta"]
        for model in ("alpha", "beta"):
            reply = httpx.post(f"{base}/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 3,
                                                               "temperature": 0}, timeout=60)
            assert reply.status_code == 200 and reply.json()["model"] == model
        missing = httpx.post(f"{base}/v1/completions", json={"model": "gamma", "prompt": "hi"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    finally:
        stop_serve(proc, timeout=30)


def test_models_config_is_validated_with_the_file_and_model_named(tmp_path):
    from agent_runtime.serve_command import models_config

    good = tmp_path / "models.json"
    good.write_text('{"small": {"model": "/m/a", "dtype": "bf16"}, "other": {"model": "org/b"}}')
    assert models_config(str(good)) == [("small", "/m/a", {"dtype": "bf16"}), ("other", "org/b", {})]
    bad = tmp_path / "bad.json"
    bad.write_text('{"small": {"model": "/m/a", "dtyp": "bf16"}}')
    with pytest.raises(ValueError, match=r"bad\.json: model 'small' has unknown option\(s\) dtyp"):
        models_config(str(bad))
    with pytest.raises(ValueError, match="cannot read models config"):
        models_config(str(tmp_path / "missing.json"))
