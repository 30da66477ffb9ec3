"""`foundry up --config FILE` serving a model at a local path with ``engine = "vllm"``, reached
through the gateway as ``/v1`` model NAME with the official openai SDK.

The model is the built-in tiny Llama, built into a plain directory first (as a user's own
Hugging Face model directory would be). Skipped only where vLLM does not import; under ``CI``
it must.
"""

from __future__ import annotations

import os
import shutil

import openai
import pytest
from e2e_support import ADMIN_KEY, free_port, start_stack

from serve.runtimes.tiny import ensure_tiny_model
from serve.runtimes.vllm import vllm_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not vllm_available() and not os.environ.get("CI"), reason="vLLM is not installed here (make setup installs it)"
    ),
]

CONFIG = """
[server]
ingress = "proxy"   # the default HAProxy ingress is covered by test_e2e_stack; this module is about the engine

[runtimes.local-llama]
engine = "vllm"
model = "{model}"
max_model_len = 1024
max_num_seqs = 8
kv_cache_gib = 0.125
num_cpus = 0.5

[models.local-llama.providers.local]
type = "local"
"""


@pytest.fixture(scope="module")
def vllm_stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-e2e")
    model = ensure_tiny_model(root / "build")
    local = root / "my-model"
    shutil.copytree(model, local)  # a model directory of the user's, not a builtin
    config = root / "foundry.toml"
    config.write_text(CONFIG.format(model=local))
    s = start_stack(root / "home", free_port(), config, timeout_s=600)
    yield s
    assert s.stop() == 0


def test_the_vllm_runtime_serves_its_model_through_the_gateway(vllm_stack):
    client = openai.OpenAI(base_url=vllm_stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=120)
    assert "local-llama" in {m.id for m in client.models.list()}
    r = client.chat.completions.create(
        model="local-llama", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )
    assert r.choices[0].finish_reason in ("stop", "length") and 0 < r.usage.completion_tokens <= 8
    chunks = list(
        client.chat.completions.create(
            model="local-llama", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="1024"):
        client.completions.create(model="local-llama", prompt="hello " * 1100, max_tokens=4)
