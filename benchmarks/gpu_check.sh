#!/usr/bin/env bash
# GPU check (not part of `make bench`; needs one NVIDIA GPU and ~10 minutes):
# bare vLLM vs the same engine behind `foundry up` and the gateway, at concurrency 1 and 32.
#
#   benchmarks/gpu_check.sh            # from the repository root, on a GPU machine
#
# 1. installs the `gpu` extra into .venv-gpu (CUDA vLLM; no hub access needed),
# 2. builds a random-weight Llama of a realistic shape (Llama-3.2-1B: hidden 2048, 16 layers,
#    32 heads / 8 KV heads, MLP 8192) on the device, bf16, with foundry-tiny's tokenizer,
# 3. serves it with `python -m vllm.entrypoints.openai.api_server` and measures TTFT/TPOT with
#    `foundry bench` (streaming completions, isl 512, osl 128), stops it,
# 4. serves it with `foundry up --config` (engine = "vllm") and measures the same through /v1,
# 5. prints foundry/bare ratios; the target is within 5% (ratio <= 1.05).
# Results: benchmarks/results/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-gpu}
WORK=$(mktemp -d /tmp/foundry-gpu-check.XXXXXX)
BARE_PORT=${BARE_PORT:-18001}
FOUNDRY_PORT=${FOUNDRY_PORT:-18002}
ISL=512
OSL=128
LEVELS=1,32
REQUESTS=${REQUESTS:-64}
export FOUNDRY_HOME="$WORK/home" FOUNDRY_ADMIN_KEY="sk-fnd-gpu-check-admin-key-0123456789abcdefghijklmnop"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p benchmarks/results

if [ ! -x "$VENV/bin/foundry" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -e '.[gpu,test]'
fi
PY="$VENV/bin/python"

echo "== building the random-weight model"
"$PY" - "$WORK/model" <<'EOF'
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from serve.runtimes.tiny import _train_tokenizer

out = Path(sys.argv[1])
tokenizer = _train_tokenizer()
tokenizer.save_pretrained(out)
config = LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096, rope_theta=500000.0,
    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    tie_word_embeddings=False, torch_dtype="bfloat16",
)
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(out, safe_serialization=True)
print("model:", sum(p.numel() for p in model.parameters()) / 1e9, "B parameters ->", out)
EOF

wait_ready() {  # url
    for _ in $(seq 1 300); do
        if curl -sf -H "Authorization: Bearer $FOUNDRY_ADMIN_KEY" "$1/models" >/dev/null; then return 0; fi
        sleep 1
    done
    echo "server at $1 did not become ready" >&2
    return 1
}

measure() {  # base_url name
    "$VENV/bin/foundry" bench --base-url "$1" --model "$2" --isl $ISL --osl $OSL --concurrency $LEVELS \
        --requests "$REQUESTS" --api-key "$FOUNDRY_ADMIN_KEY" --tokenizer "$WORK/model" \
        --endpoint completions --system gpu --no-record --json
}

echo "== bare vLLM"
"$PY" -m vllm.entrypoints.openai.api_server --model "$WORK/model" --served-model-name llama \
    --port $BARE_PORT --api-key "$FOUNDRY_ADMIN_KEY" --max-num-seqs 64 --max-model-len 2048 \
    >"$WORK/bare.log" 2>&1 &
BARE=$!
wait_ready "http://127.0.0.1:$BARE_PORT/v1"
measure "http://127.0.0.1:$BARE_PORT/v1" llama >"$WORK/bare.json"
kill $BARE; wait $BARE || true

echo "== foundry up (engine = \"vllm\")"
cat >"$WORK/foundry.toml" <<EOF
[runtimes.llama]
engine = "vllm"
model = "$WORK/model"
max_num_seqs = 64
max_model_len = 2048
num_cpus = 2

[models.llama.providers.local]
type = "local"
EOF
"$VENV/bin/foundry" up --config "$WORK/foundry.toml" --port $FOUNDRY_PORT >"$WORK/foundry.log" 2>&1 &
FOUNDRY=$!
wait_ready "http://127.0.0.1:$FOUNDRY_PORT/v1"
measure "http://127.0.0.1:$FOUNDRY_PORT/v1" llama >"$WORK/foundry.json"
kill -TERM $FOUNDRY; wait $FOUNDRY || true

"$PY" - "$WORK/bare.json" "$WORK/foundry.json" <<'EOF'
import json
import sys

bare, ours = (json.load(open(p)) for p in sys.argv[1:3])
by_c = lambda rows: {r["batch_size"]: r for r in rows}
result = {}
for c, b in sorted(by_c(bare).items()):
    f = by_c(ours)[c]
    row = {k: round(f[k] / b[k], 3) for k in ("silicon_ttft_ms", "silicon_tpot_ms")}
    result[c] = {"bare": {k: b[k] for k in row}, "foundry": {k: f[k] for k in row}, "foundry/bare": row}
    print(f"concurrency {c}: TTFT {b['silicon_ttft_ms']:.1f} -> {f['silicon_ttft_ms']:.1f} ms "
          f"(x{row['silicon_ttft_ms']}), TPOT {b['silicon_tpot_ms']:.2f} -> {f['silicon_tpot_ms']:.2f} ms "
          f"(x{row['silicon_tpot_ms']}); target <= 1.05")
json.dump(result, open("benchmarks/results/gpu_check.json", "w"), indent=2)
EOF
echo "logs in $WORK"
