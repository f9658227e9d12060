"""Math of the objective pinned by equivalence tests: pooling, info_nce, hidden states, alignment loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from midalign import alignment_loss, hidden_states_at, info_nce, mean_pool
from midalign.errors import ConfigError, UnsupportedModelError
from midalign.layers import decoder_layers, resolve_layer
from midalign.losses import retrieval_accuracy
from midalign.pooling import last_token_pool, pool
from tests.conftest import make_model


def batch(tokenizer, sentences, side="right"):
    tokenizer.padding_side = side
    enc = tokenizer(sentences, return_tensors="pt", padding=True)
    tokenizer.padding_side = "right"
    return enc["input_ids"], enc["attention_mask"]


SRC = ["the cat sat on the mat", "wake me up at nine am", "play song by artist", "big red house"]
TGT = ["le chat", "despierta me a las nueve viernes", "el gato perro", "maison rouge"]


# ---------------------------------------------------------------- pooling
def test_mean_pool_matches_loop():
    torch.manual_seed(0)
    hidden, mask = torch.randn(3, 5, 4), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 0]])
    expected = torch.stack([hidden[b][mask[b].bool()].mean(0) for b in range(3)])
    torch.testing.assert_close(mean_pool(hidden, mask), expected)


def test_mean_pool_invariant_to_padding_side():
    torch.manual_seed(0)
    states = [torch.randn(n, 8) for n in (2, 5, 3)]
    right = torch.zeros(3, 5, 8)
    left = torch.full((3, 5, 8), 7.0)  # garbage in the pad positions must not leak in
    mask_r, mask_l = torch.zeros(3, 5), torch.zeros(3, 5)
    for i, s in enumerate(states):
        right[i, : len(s)], mask_r[i, : len(s)] = s, 1
        left[i, 5 - len(s) :], mask_l[i, 5 - len(s) :] = s, 1
    torch.testing.assert_close(mean_pool(right, mask_r), mean_pool(left, mask_l))
    torch.testing.assert_close(last_token_pool(right, mask_r), last_token_pool(left, mask_l))
    torch.testing.assert_close(last_token_pool(right, mask_r), torch.stack([s[-1] for s in states]))


def test_pooling_invariant_to_padding_side_through_model(tokenizer):
    # RoPE is relative, so a left-padded batch gives the same real-token states (up to rounding).
    model = make_model("llama")
    with torch.no_grad():
        ids_r, m_r = batch(tokenizer, SRC, "right")
        ids_l, m_l = batch(tokenizer, SRC, "left")
        a = mean_pool(hidden_states_at(model, ids_r, m_r, 2), m_r)
        b = mean_pool(hidden_states_at(model, ids_l, m_l, 2), m_l)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_mean_pool_rejects_empty_rows():
    with pytest.raises(ValueError, match="no token to pool"):
        mean_pool(torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(torch.randn(2, 3, 4), torch.ones(2, 3), "first")  # type: ignore[arg-type]


# ---------------------------------------------------------------- info_nce
def test_info_nce_equals_closed_form():
    torch.manual_seed(0)
    q, c = torch.randn(6, 16), torch.randn(6, 16)
    sim = F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T
    expected = F.cross_entropy(sim / 0.1, torch.arange(6))
    torch.testing.assert_close(info_nce(q, c, 0.1), expected)
    sym = (expected + F.cross_entropy(sim.T / 0.1, torch.arange(6))) / 2
    torch.testing.assert_close(info_nce(q, c, 0.1, symmetric=True), sym)


def test_info_nce_with_more_candidates_than_queries():
    """A rank's queries against the global batch: query i's positive is candidate offset + i."""
    torch.manual_seed(0)
    q, c = torch.randn(3, 16), torch.randn(9, 16)
    sim = F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T  # [3, 9]
    expected = F.cross_entropy(sim / 0.1, torch.arange(3) + 6)
    torch.testing.assert_close(info_nce(q, c, 0.1, positive_offset=6), expected)
    assert retrieval_accuracy(c[6:], c, positive_offset=6).item() == 1.0
    with pytest.raises(ValueError, match="do not fit"):
        info_nce(q, c, positive_offset=7)
    with pytest.raises(ValueError, match="symmetric"):
        info_nce(q, c, symmetric=True)


def test_gather_negatives_without_a_process_group_is_the_local_loss(tokenizer):
    model = make_model("llama")
    batch = tokenizer(["the cat sat", "a big red house", "wake me up"], return_tensors="pt", padding=True)
    args = (batch["input_ids"], batch["attention_mask"], batch["input_ids"].flip(0), batch["attention_mask"].flip(0))
    local = alignment_loss(model, *args, layer=2)
    torch.testing.assert_close(alignment_loss(model, *args, layer=2, gather_negatives=True), local)


def test_info_nce_detach_stops_candidate_gradient():
    torch.manual_seed(0)
    q, c = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    info_nce(q, c, detach_candidates=True).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert c.grad is None
    info_nce(q, c).backward()
    assert c.grad is not None and c.grad.abs().sum() > 0


def test_info_nce_bf16_inputs_give_fp32_loss():
    q, c = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    assert info_nce(q, c).dtype == torch.float32


def test_retrieval_accuracy():
    c = torch.eye(4)
    assert retrieval_accuracy(c, c).item() == 1.0
    assert retrieval_accuracy(c, c[[1, 0, 2, 3]]).item() == 0.5


def test_info_nce_rejects_bad_shapes():
    with pytest.raises(ValueError):
        info_nce(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)


# ---------------------------------------------------------------- hidden states
@pytest.mark.parametrize("layer", [0, 1, 2, 3])
@pytest.mark.parametrize("early_exit", [True, False])
def test_hidden_states_at_equals_output_hidden_states(arch, tokenizer, layer, early_exit):
    model = make_model(arch)
    ids, mask = batch(tokenizer, SRC)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
        got = hidden_states_at(model, ids, mask, layer, early_exit=early_exit)
    assert torch.equal(got, ref)  # bitwise: the same kernels run on the same inputs
    assert len(decoder_layers(model)) == 4  # the blocks are restored after early exit


def test_top_layer_is_before_the_final_norm(tokenizer):
    model = make_model("llama")
    ids, mask = batch(tokenizer, SRC)
    model.config.tie_last_hidden_states = False  # ask HF for the pre-norm state at index L
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[4]
        got = hidden_states_at(model, ids, mask, 4)
    assert torch.equal(got, ref)


def test_early_exit_runs_only_the_lower_blocks(tokenizer):
    model = make_model("llama")
    calls = []
    for i, block in enumerate(decoder_layers(model)):
        block.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    ids, mask = batch(tokenizer, SRC)
    with torch.no_grad():
        hidden_states_at(model, ids, mask, 2, early_exit=True)
    assert calls == [0, 1]


def test_hidden_states_at_with_lora_and_gradient_checkpointing(tokenizer):
    from peft import LoraConfig, get_peft_model

    model = make_model("llama")
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    ids, mask = batch(tokenizer, SRC)
    with torch.no_grad():
        ref = peft_model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2]
    peft_model.train()
    peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.enable_input_require_grads()
    h = hidden_states_at(peft_model, ids, mask, 2)
    torch.testing.assert_close(h, ref)
    h.pow(2).mean().backward()
    lora_grads = {n: p.grad for n, p in peft_model.named_parameters() if "lora_" in n}
    below = [g for n, g in lora_grads.items() if ".layers.0." in n or ".layers.1." in n]
    above = [g for n, g in lora_grads.items() if ".layers.2." in n or ".layers.3." in n]
    assert below and all(g is not None and g.abs().sum() > 0 for g in below)
    assert above and all(g is None for g in above)


def gemma2_tied():
    """Tiny Gemma 2: tied input/output embeddings, final-logit soft-capping, embeddings scaled by sqrt(H)."""
    return make_model("gemma2", head_dim=8, tie_word_embeddings=True, final_logit_softcapping=30.0)


def lora_checkpointed():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        make_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "lm_head"], init_lora_weights=False)
    )
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    return model


@pytest.mark.parametrize("build", ["llama", "qwen2", "gemma2-tied", "lora-checkpointed"])
def test_no_lm_head_product_on_alignment_steps_or_extraction(tokenizer, build):
    """The head is called (engines' hooks fire as usual) but on no position: no vocabulary-wide product runs."""
    from midalign.analysis import pooled_states
    from midalign.layers import unwrap_model

    builders = {"gemma2-tied": gemma2_tied, "lora-checkpointed": lora_checkpointed}
    model = builders.get(build, lambda: make_model(build).train())()
    head = unwrap_model(model).get_output_embeddings()
    head_inputs = []
    head.register_forward_hook(lambda m, args, out: head_inputs.append(tuple(args[0].shape)))
    s_ids, s_mask = batch(tokenizer, SRC)
    t_ids, t_mask = batch(tokenizer, TGT)
    for early_exit in (True, False):
        loss = alignment_loss(model, s_ids, s_mask, t_ids, t_mask, layer=2, early_exit=early_exit)
        loss.backward()
    pooled_states(model, tokenizer, SRC + TGT, batch_size=3)
    assert len(head_inputs) == 2 + 3  # two alignment forwards, three extraction batches
    assert all(shape[1] == 0 for shape in head_inputs), head_inputs  # [B, 0, H]: no position projected
    # the model's own forward is untouched: its head still projects every position
    model(input_ids=s_ids, attention_mask=s_mask)
    assert head_inputs[-1] == (*s_ids.shape, 32)


def test_hidden_states_with_tied_embeddings_and_soft_capping(tokenizer):
    model = gemma2_tied()
    ids, mask = batch(tokenizer, SRC)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for layer in (0, 2, 3):
            assert torch.equal(hidden_states_at(model, ids, mask, layer), hidden[layer])


def test_bad_layers_and_models(tokenizer):
    model = make_model("llama")
    ids, mask = batch(tokenizer, SRC)
    with pytest.raises(ConfigError, match="out of range"):
        hidden_states_at(model, ids, mask, 5)
    with pytest.raises(ConfigError, match="out of range"):
        hidden_states_at(model, ids, mask, -1)
    with pytest.raises(UnsupportedModelError, match="layers"):
        hidden_states_at(torch.nn.Linear(3, 3), ids, mask, 1)


def test_resolve_layer():
    assert resolve_layer(16, 32) == 16
    assert resolve_layer(-1, 32) == 32
    assert resolve_layer(-33, 32) == 0
    assert resolve_layer(0.5, 32) == 16
    assert resolve_layer("0.5", 28) == 14
    assert resolve_layer("1.0", 8) == 8
    assert resolve_layer("3", 8) == 3
    for bad in (33, -34, 1.5, "middle", True):
        with pytest.raises(ConfigError):
            resolve_layer(bad, 32)


# ---------------------------------------------------------------- alignment loss
def reference_loss(model, src_ids, src_mask, tgt_ids, tgt_mask, layer, tau):
    """The released method, written out independently: full forward, hidden_states[layer], masked mean per
    sentence in a Python loop, cosine similarity matrix, cross-entropy with the src side as queries."""
    model.config.tie_last_hidden_states = False  # the released code aligns the top block before the final norm
    hs = model(input_ids=src_ids, attention_mask=src_mask, output_hidden_states=True).hidden_states[layer]
    ht = model(input_ids=tgt_ids, attention_mask=tgt_mask, output_hidden_states=True).hidden_states[layer]
    s = torch.stack([hs[i][src_mask[i].bool()].mean(0) for i in range(len(hs))])
    t = torch.stack([ht[i][tgt_mask[i].bool()].mean(0) for i in range(len(ht))])
    sims = torch.tensor([[F.cosine_similarity(s[i], t[j], dim=0) for j in range(len(t))] for i in range(len(s))])
    return F.cross_entropy(sims / tau, torch.arange(len(s)))


@pytest.mark.parametrize("layer", [1, 2, 4])
def test_alignment_loss_equals_reference(arch, tokenizer, layer):
    model = make_model(arch)
    s_ids, s_mask = batch(tokenizer, SRC)
    t_ids, t_mask = batch(tokenizer, TGT)
    with torch.no_grad():
        ref = reference_loss(model, s_ids, s_mask, t_ids, t_mask, layer, 0.1)
        got = alignment_loss(model, s_ids, s_mask, t_ids, t_mask, layer=layer, temperature=0.1)
        two = alignment_loss(model, s_ids, s_mask, t_ids, t_mask, layer=layer, temperature=0.1, early_exit=False)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(two, ref, atol=1e-5, rtol=1e-5)


def test_alignment_loss_symmetric_and_detach(tokenizer):
    model = make_model("llama").train()
    s_ids, s_mask = batch(tokenizer, SRC)
    t_ids, t_mask = batch(tokenizer, TGT)
    sym = alignment_loss(model, s_ids, s_mask, t_ids, t_mask, layer=2, symmetric=True)
    fwd = alignment_loss(model, s_ids, s_mask, t_ids, t_mask, layer=2)
    rev = alignment_loss(model, t_ids, t_mask, s_ids, s_mask, layer=2)
    torch.testing.assert_close(sym, (fwd + rev) / 2, atol=1e-5, rtol=1e-5)
    loss = alignment_loss(model, s_ids, s_mask, t_ids, t_mask, layer=2, detach_tgt=True)
    torch.testing.assert_close(loss, fwd)
    loss.backward()
    assert all(p.grad is not None for p in decoder_layers(model)[0].parameters())
    assert all(p.grad is None for p in decoder_layers(model)[3].parameters())
