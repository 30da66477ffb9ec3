"""CPUEngine on the built-in tiny model: batching must not change results, and the request
lifecycle (stop, length, EOS, cancel, overload, errors, shutdown) behaves as the protocol says."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from serve.runtimes.cpu import CPUEngine
from serve.runtimes.engine import (
    ChatMessage,
    EngineError,
    EngineOverloaded,
    InvalidRequest,
    SamplingParams,
    TextEngine,
    TokenDelta,
)

pytestmark = pytest.mark.timeout(120)

PROMPT = "The weather today is"
PROMPTS = [f"Request {i}: the weather today is" + " very" * (3 * i) for i in range(6)]  # uneven lengths
GREEDY = SamplingParams(max_tokens=24, temperature=0)
LONG = SamplingParams(max_tokens=1800, temperature=0)  # outlives anything the test does meanwhile
LONG_PROMPTS = PROMPTS[1:3]  # greedy decoding of these reaches 1,800 tokens without meeting EOS


@pytest.fixture
async def engine(tiny_model_dir: Path) -> AsyncIterator[CPUEngine]:
    engine = CPUEngine(tiny_model_dir, model_name="foundry-tiny", max_num_seqs=8)
    yield engine
    await engine.close()


async def collect(
    engine: CPUEngine, prompt: str, params: SamplingParams, request_id: str = "r"
) -> tuple[str, list[TokenDelta]]:
    deltas = [delta async for delta in engine.generate(prompt, params, request_id)]
    return "".join(d.text for d in deltas), deltas


async def started(coroutine) -> asyncio.Task:
    """Run ``coroutine`` (which calls ``generate``) in a task; return once its request has reached
    the engine, i.e. the task ran up to its first await."""
    task = asyncio.ensure_future(coroutine)
    await asyncio.sleep(0)  # a single loop turn, not a wait for time to pass
    return task


def hf_greedy_ids(model_dir: Path, prompt: str, max_new_tokens: int) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tokenizer.encode(prompt)
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(ids) :].tolist()


def variant(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "variant"
    shutil.copytree(model_dir, copy)
    return copy


async def test_implements_the_text_engine_protocol(engine: CPUEngine) -> None:
    assert isinstance(engine, TextEngine)
    assert engine.model_name == "foundry-tiny"
    assert engine.max_model_len == 2048


async def test_greedy_output_matches_transformers_generate(engine: CPUEngine, tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = tokenizer.decode(hf_greedy_ids(tiny_model_dir, PROMPT, 24), skip_special_tokens=True)
    text, deltas = await collect(engine, PROMPT, GREEDY)
    assert text == expected
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("length", 24)


async def test_concurrent_greedy_requests_match_sequential_ones(engine: CPUEngine) -> None:
    sequential = [await collect(engine, p, GREEDY, f"s{i}") for i, p in enumerate(PROMPTS)]
    concurrent = await asyncio.gather(*(collect(engine, p, GREEDY, f"c{i}") for i, p in enumerate(PROMPTS)))
    assert [text for text, _ in concurrent] == [text for text, _ in sequential]
    assert [d[-1] for _, d in concurrent] == [d[-1] for _, d in sequential]


async def test_request_joining_a_running_batch_gets_its_solo_result(engine: CPUEngine) -> None:
    first_params = SamplingParams(max_tokens=200, temperature=0)
    solo_first, _ = await collect(engine, LONG_PROMPTS[0], first_params)
    solo_second, _ = await collect(engine, PROMPTS[3], GREEDY)

    events: list[str] = []
    first = engine.generate(LONG_PROMPTS[0], first_params, "first")
    head = await anext(first)  # the first request is decoding now

    async def rest_of_first() -> str:
        text = head.text + "".join([d.text async for d in first])
        events.append("first done")
        return text

    async def second() -> str:
        deltas = [d async for d in engine.generate(PROMPTS[3], GREEDY, "second")]
        events.append("second done")
        return "".join(d.text for d in deltas)

    first_text, second_text = await asyncio.gather(rest_of_first(), second())
    assert events == ["second done", "first done"]  # it really ran while the first was mid-way
    assert (first_text, second_text) == (solo_first, solo_second)


async def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(engine: CPUEngine) -> None:
    seeded = SamplingParams(max_tokens=24, temperature=0.8, top_p=0.95, seed=1234)
    solo, _ = await collect(engine, PROMPT, seeded)
    again, _ = await collect(engine, PROMPT, seeded)
    other_seed, _ = await collect(engine, PROMPT, SamplingParams(max_tokens=24, temperature=0.8, top_p=0.95, seed=4321))
    assert solo == again
    assert solo != other_seed

    crowd = [collect(engine, p, GREEDY) for p in PROMPTS[:3]]
    crowd += [collect(engine, p, SamplingParams(max_tokens=30, temperature=1.0)) for p in PROMPTS[3:]]
    batched, *_ = await asyncio.gather(collect(engine, PROMPT, seeded), *crowd)
    assert batched[0] == solo


async def test_vanishing_temperature_or_top_p_decodes_greedily(engine: CPUEngine) -> None:
    greedy, _ = await collect(engine, PROMPT, GREEDY)
    tiny_top_p, _ = await collect(engine, PROMPT, SamplingParams(max_tokens=24, temperature=1.0, top_p=1e-6, seed=1))
    tiny_temperature, _ = await collect(engine, PROMPT, SamplingParams(max_tokens=24, temperature=1e-9, seed=1))
    assert tiny_top_p == greedy
    assert tiny_temperature == greedy


async def test_logit_bias_forces_and_bans_tokens(engine: CPUEngine, tiny_model_dir: Path) -> None:
    greedy = hf_greedy_ids(tiny_model_dir, PROMPT, 6)
    decode = AutoTokenizer.from_pretrained(tiny_model_dir).decode
    forced = next(t for t in range(100, 1000) if t not in greedy and decode([t]).strip().isalpha())
    text, _ = await collect(engine, PROMPT, SamplingParams(max_tokens=6, temperature=0, logit_bias=((forced, 100.0),)))
    assert text == decode([forced] * 6)
    text, _ = await collect(engine, PROMPT, SamplingParams(max_tokens=1, temperature=0, logit_bias=((greedy[0], -100.0),)))
    assert text and text != decode(greedy[:1])


class OpenAIPenalties(LogitsProcessor):
    """OpenAI's presence and frequency penalties over the generated tokens, for transformers'
    ``generate``: the reference the engine is checked against."""

    def __init__(self, prompt_len: int, presence: float, frequency: float) -> None:
        self.prompt_len, self.presence, self.frequency = prompt_len, presence, frequency

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, ids in enumerate(input_ids[:, self.prompt_len :]):
            counts = torch.bincount(ids, minlength=scores.shape[-1]).to(scores.dtype)
            scores[row] -= self.frequency * counts + self.presence * (counts > 0).to(scores.dtype)
        return scores


@pytest.mark.parametrize(("presence", "frequency"), [(0.0, 1.5), (1.0, 0.0), (-2.0, 0.5)])
async def test_penalties_match_a_reference_over_the_completions_own_tokens(
    engine: CPUEngine, tiny_model_dir: Path, presence: float, frequency: float
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = tokenizer.encode(PROMPT)
    penalties = LogitsProcessorList([OpenAIPenalties(len(ids), presence, frequency)])
    out = model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False, logits_processor=penalties)
    expected = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    params = SamplingParams(max_tokens=40, temperature=0, presence_penalty=presence, frequency_penalty=frequency)
    text, _ = await collect(engine, PROMPT, params)
    plain, _ = await collect(engine, PROMPT, SamplingParams(max_tokens=40, temperature=0))
    assert text == expected
    assert text != plain  # the penalties changed the answer
    (in_batch, _), (neighbour, _) = await asyncio.gather(collect(engine, PROMPT, params), collect(engine, PROMPT, GREEDY))
    assert (in_batch, neighbour) == (expected, plain[: len(neighbour)])  # each row counts its own tokens


async def test_stop_sequence_ends_the_stream_before_the_stop_text(engine: CPUEngine) -> None:
    full, _ = await collect(engine, PROMPT, GREEDY)
    stop = full[8:11]
    cut = full.find(stop)
    params = SamplingParams(max_tokens=24, temperature=0, stop=("never seen", stop))
    text, deltas = await collect(engine, PROMPT, params)
    assert text == full[:cut]
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].completion_tokens < 24


async def test_text_held_back_for_a_possible_stop_is_released_at_the_end(engine: CPUEngine) -> None:
    full, _ = await collect(engine, PROMPT, GREEDY)
    almost = full[-2:] + "\x00"  # the output ends with the start of this stop sequence
    text, deltas = await collect(engine, PROMPT, SamplingParams(max_tokens=24, temperature=0, stop=(almost,)))
    assert text == full
    assert deltas[-1].finish_reason == "length"


async def test_max_tokens_finishes_with_length_and_exact_counts(engine: CPUEngine, tiny_model_dir: Path) -> None:
    prompt_tokens = len(AutoTokenizer.from_pretrained(tiny_model_dir).encode(PROMPT))
    _, deltas = await collect(engine, PROMPT, SamplingParams(max_tokens=7, temperature=0.7, seed=3))
    assert [d.completion_tokens for d in deltas] == [1, 2, 3, 4, 5, 6, 7]
    assert [d.finish_reason for d in deltas] == [None] * 6 + ["length"]
    assert {d.prompt_tokens for d in deltas} == {prompt_tokens}


async def test_eos_token_finishes_with_stop(tiny_model_dir: Path, tmp_path: Path) -> None:
    greedy = hf_greedy_ids(tiny_model_dir, PROMPT, 12)
    at = greedy.index(greedy[6])  # declare the 7th generated token to be EOS
    model_dir = variant(tiny_model_dir, tmp_path)
    for name in ("config.json", "generation_config.json"):
        config = json.loads((model_dir / name).read_text())
        config["eos_token_id"] = greedy[at]
        (model_dir / name).write_text(json.dumps(config))
    engine = CPUEngine(model_dir, model_name="eos-variant")
    try:
        text, deltas = await collect(engine, PROMPT, GREEDY)
    finally:
        await engine.close()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert text == tokenizer.decode(greedy[:at], skip_special_tokens=True)
    assert (deltas[-1].finish_reason, deltas[-1].completion_tokens) == ("stop", at + 1)


async def test_abandoned_streams_free_their_slots(tiny_model_dir: Path) -> None:
    engine = CPUEngine(tiny_model_dir, model_name="foundry-tiny", max_num_seqs=2, max_queued=0)
    try:
        closed_early = engine.generate(LONG_PROMPTS[0], LONG, "closed-early")
        await anext(closed_early)
        events: list[str] = []

        async def long_one() -> None:
            async for delta in engine.generate(LONG_PROMPTS[1], LONG, "long"):
                if delta.finish_reason:
                    events.append("long done")

        long_task = await started(long_one())
        with pytest.raises(EngineOverloaded):
            await anext(engine.generate(PROMPT, GREEDY, "extra"))
        await closed_early.aclose()

        _, deltas = await collect(engine, PROMPT, GREEDY, "replacement")
        events.append("replacement done")
        assert deltas[-1].finish_reason == "length"
        assert events == ["replacement done"]  # served in the freed slot, not after the long request

        long_task.cancel()  # a consumer task cancelled mid-stream frees its slot as well
        with pytest.raises(asyncio.CancelledError):
            await long_task
        both = await asyncio.gather(*(collect(engine, p, GREEDY) for p in PROMPTS[:2]))
        assert [d[-1].finish_reason for _, d in both] == ["length", "length"]
    finally:
        await engine.close()


async def test_requests_beyond_the_queue_are_rejected(tiny_model_dir: Path) -> None:
    engine = CPUEngine(tiny_model_dir, model_name="foundry-tiny", max_num_seqs=1, max_queued=1)
    try:
        running = engine.generate(LONG_PROMPTS[0], LONG, "running")
        await anext(running)
        queued = await started(collect(engine, PROMPT, GREEDY, "queued"))
        with pytest.raises(EngineOverloaded) as rejected:
            await anext(engine.generate(PROMPT, GREEDY, "rejected"))
        assert (rejected.value.status, rejected.value.code) == (503, "engine_overloaded")
        assert not queued.done()
        await running.aclose()
        _, deltas = await asyncio.wait_for(queued, timeout=60)
        assert deltas[-1].finish_reason == "length"
    finally:
        await engine.close()


async def test_prompt_longer_than_the_context_is_rejected(tiny_model_dir: Path) -> None:
    engine = CPUEngine(tiny_model_dir, model_name="foundry-tiny", max_model_len=64)
    try:
        with pytest.raises(InvalidRequest) as too_long:
            await collect(engine, "word " * 100, GREEDY)
        assert too_long.value.param == "prompt" and "64" in too_long.value.message
        with pytest.raises(InvalidRequest) as chat:
            await anext(engine.generate("word " * 100, GREEDY, "chat", prompt_param="messages"))
        assert chat.value.param == "messages"
        with pytest.raises(InvalidRequest) as too_many:
            await collect(engine, PROMPT, SamplingParams(max_tokens=60))
        assert too_many.value.param == "max_tokens" and "64" in too_many.value.message
        assert too_many.value.status == 400
        text, _ = await collect(engine, PROMPT, SamplingParams(max_tokens=8))  # still serving
        assert text
    finally:
        await engine.close()
    with pytest.raises(ValueError, match="2048"):
        CPUEngine(tiny_model_dir, model_name="foundry-tiny", max_model_len=4096)


async def test_a_huge_prompt_is_refused_by_its_length_before_tokenizing_and_others_keep_going(engine) -> None:
    """4 MiB of text (the gateway's body limit): refused from its character count, without
    tokenizing it, while a request already running streams on."""
    running = asyncio.ensure_future(collect(engine, PROMPT, SamplingParams(max_tokens=64, temperature=0), "running"))
    huge = "lorem ipsum dolor sit amet " * (4 * 1024 * 1024 // 27)
    with pytest.raises(InvalidRequest) as refused:
        await anext(engine.generate(huge, GREEDY, "huge", prompt_param="messages"))
    # "at least": counted from the characters, not the tokens (the exact count says "has N tokens")
    assert refused.value.param == "messages" and "at least" in refused.value.message
    assert f"{len(huge)} characters" in refused.value.message
    text, deltas = await asyncio.wait_for(running, timeout=60)
    assert deltas[-1].finish_reason in ("length", "stop") and text


@pytest.mark.parametrize(
    ("params", "param"),
    [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(temperature=-0.5), "temperature"),
        (SamplingParams(top_p=0), "top_p"),
        (SamplingParams(top_p=1.5), "top_p"),
        (SamplingParams(presence_penalty=2.5), "presence_penalty"),
        (SamplingParams(frequency_penalty=-2.5), "frequency_penalty"),
        (SamplingParams(logit_bias=((10**6, 5.0),)), "logit_bias"),
    ],
)
async def test_invalid_sampling_parameters_are_rejected(engine: CPUEngine, params: SamplingParams, param: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        await collect(engine, PROMPT, params)
    assert error.value.param == param


async def test_a_failing_forward_fails_its_request_and_spares_the_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A tokenizer with a token the model has no embedding for: prefilling it raises inside torch.
    model_dir = variant(tiny_model_dir, tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.add_tokens(["<|unknown-to-the-model|>"])
    tokenizer.save_pretrained(model_dir)
    engine = CPUEngine(model_dir, model_name="broken-tokenizer")
    try:
        solo, _ = await collect(engine, PROMPT, SamplingParams(max_tokens=100, temperature=0))
        healthy = engine.generate(PROMPT, SamplingParams(max_tokens=100, temperature=0), "healthy")
        head = await anext(healthy)
        with pytest.raises(EngineError, match="request doomed"):
            await collect(engine, "hello <|unknown-to-the-model|>", GREEDY, "doomed")
        assert head.text + "".join([d.text async for d in healthy]) == solo
        text, _ = await collect(engine, PROMPT, GREEDY)
        assert text == solo[: len(text)]
    finally:
        await engine.close()


async def test_close_fails_open_streams_and_refuses_new_ones(tiny_model_dir: Path) -> None:
    engine = CPUEngine(tiny_model_dir, model_name="foundry-tiny")
    stream = engine.generate(LONG_PROMPTS[0], LONG, "open")
    await anext(stream)
    await engine.close()
    with pytest.raises(EngineError, match="shut down"):
        async for _ in stream:
            pass
    with pytest.raises(EngineError, match="shut down"):
        await collect(engine, PROMPT, GREEDY)


def test_chat_uses_the_tokenizer_template(engine: CPUEngine) -> None:
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hello"))
    assert engine.render_chat(messages) == "<|begin|><|system|>Be brief.<|end|>\n<|user|>Hello<|end|>\n<|assistant|>"
    with pytest.raises(InvalidRequest) as error:
        engine.render_chat((ChatMessage("wizard", "abracadabra"),))
    assert error.value.param == "messages"


async def test_chat_falls_back_to_plain_text_without_a_template(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = variant(tiny_model_dir, tmp_path)
    (model_dir / "chat_template.jinja").unlink()
    engine = CPUEngine(model_dir, model_name="no-template")
    try:
        messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hello"))
        assert engine.render_chat(messages) == "system: Be brief.\nuser: Hello\nassistant:"
    finally:
        await engine.close()


@pytest.mark.parametrize("architecture", ["gpt2", "mistral-sliding-window"])
async def test_other_architectures_batch_exactly(architecture: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    # Learned absolute positions (GPT-2) and a sliding window shorter than the generation (Mistral)
    # are what left padding gets wrong first.
    from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    common = {"vocab_size": len(tokenizer), "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.1}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if architecture == "gpt2":
            model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, n_positions=256, **common))
        else:
            model = MistralForCausalLM(MistralConfig(
                hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=256, sliding_window=8, **common,
            ))  # fmt: skip
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    engine = CPUEngine(tmp_path, model_name=architecture)
    params = SamplingParams(max_tokens=20, temperature=0)
    try:
        sequential = [(await collect(engine, p, params))[0] for p in PROMPTS[:4]]
        concurrent = [text for text, _ in await asyncio.gather(*(collect(engine, p, params) for p in PROMPTS[:4]))]
    finally:
        await engine.close()
    reference = [tokenizer.decode(hf_greedy_ids(tmp_path, p, 20), skip_special_tokens=True) for p in PROMPTS[:4]]
    assert concurrent == sequential == reference
