"""Measure a pretrained base model of the synthetic world: held-out loss, copying, and layer-wise alignment.

These numbers say whether the base model is a usable substrate for the method: zero-shot slot values in
non-Latin scripts can only be right if the model copies, and mid-layer alignment should be measurable before
and after fine-tuning.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from midalign.analysis import layer_metrics, pair_metrics, pooled_states
from midalign.data.readers import read_multiway
from midalign.synthetic.world import COPY_MARKER, PIVOT, SEPARATOR, Phonology, World, WorldPaths


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], side: str = "right") -> dict[str, torch.Tensor]:
    tokenizer.padding_side = side
    return tokenizer(texts, return_tensors="pt", padding=True)


@torch.no_grad()
def heldout_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: list[str]) -> float:
    """Mean next-token loss (nats per token) on `sentences`, each scored as `BOS sentence EOS`."""
    total, count = 0.0, 0
    for i in range(0, len(sentences), 32):
        batch = _encode(tokenizer, [s + tokenizer.eos_token for s in sentences[i : i + 32]])
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        logits = model(**batch).logits[:, :-1]  # [B, T, V] -> [B, T-1, V]: position t predicts token t+1
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="sum")
        total += loss.item()
        count += int((labels[:, 1:] != -100).sum())
    return total / count


@torch.no_grad()
def greedy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new: int) -> list[str]:
    """Greedy continuations of `prompts` (left-padded batches), cut at EOS, special tokens dropped."""
    outputs = []
    for i in range(0, len(prompts), 32):
        batch = _encode(tokenizer, prompts[i : i + 32], side="left")
        generated = model.generate(
            **batch, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        new = generated[:, batch["input_ids"].shape[1] :]  # [B, T + new] -> [B, new]
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    return outputs


def copy_rates(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: World, n: int = 40, seed: int = 1
) -> dict[str, dict[str, float]]:
    """Per language, the exact-copy rate of greedy `text -> repeat:` completions on text the model has never seen.

    - `list`: two or three novel random names in the language's script (no memorised string can help);
    - `sentence`: a general-domain sentence freshly sampled (almost surely absent from the corpus).
    """
    rng = random.Random(seed)
    rates = {}
    for code, language in world.languages.items():
        texts = {
            "list": [
                ", ".join(language.spell(Phonology().word(rng, rng.randint(2, 3))) for _ in range(rng.randint(2, 3)))
                for _ in range(n)
            ],
            "sentence": [world.render_clause(world.sample_clause(rng), code) for _ in range(n)],
        }
        rates[code] = {}
        for kind, originals in texts.items():
            outputs = greedy(model, tokenizer, [f"{t}{SEPARATOR} {COPY_MARKER}" for t in originals], 64)
            rates[code][kind] = sum(o.strip() == t for o, t in zip(outputs, originals, strict=True)) / n
    return rates


def translation_scores(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, multiway: dict[str, list[str]], n: int = 40
) -> dict[str, float]:
    """Per non-pivot language, chrF++ of greedy `X -> en:` continuations on held-out multi-way sentences.

    The corpus's translated documents are written `X -> en: English` (or the reverse); this measures whether the base
    model learned to translate from them.
    """
    import sacrebleu

    english = multiway[PIVOT][:n]
    scores = {}
    for lang, sentences in multiway.items():
        if lang == PIVOT:
            continue
        outputs = greedy(model, tokenizer, [f"{s}{SEPARATOR} {PIVOT}:" for s in sentences[:n]], 48)
        hypotheses = [o.split(" . ")[0].strip() for o in outputs]
        scores[lang] = sacrebleu.corpus_chrf(hypotheses, [english], word_order=2).score
    return scores


@torch.no_grad()
def retrieval_by_layer(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, multiway: dict[str, list[str]]
) -> dict[str, dict[str, list[float]]]:
    """X -> English retrieval accuracy at every layer 0..L, per non-pivot language, raw and centred.

    The vectors and metrics are `midalign.analysis`'s: mean over the non-special tokens of each block's output,
    cosine nearest neighbour; centred subtracts each language's mean vector first (tiny models are so
    anisotropic that raw cosine hides most of the alignment there is).

    Returns:
        `{"raw" | "centred": {lang: [accuracy at layer 0, ..., layer L]}}`.
    """
    vectors = {lang: pooled_states(model, tokenizer, sentences, batch_size=64) for lang, sentences in multiway.items()}
    result: dict[str, dict[str, list[float]]] = {"raw": {}, "centred": {}}
    for lang, states in vectors.items():
        if lang == PIVOT:
            continue
        per_layer = [pair_metrics(x, y)["a->b"] for x, y in zip(states, vectors[PIVOT], strict=True)]
        result["raw"][lang] = [m["cosine"] for m in per_layer]
        result["centred"][lang] = [m["centred"] for m in per_layer]
    return result


@torch.no_grad()
def alignment_by_layer(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, multiway: dict[str, list[str]]
) -> dict:
    """The paper's measure of a base model: margin retrieval over every direction of the multi-way set, per layer.

    Returns:
        `{"margin": [average over all ordered pairs, per layer 0..L], "centred": [...],
        "per_language": {lang: [margin average over the directions to and from lang, per layer]},
        "to_pivot": {lang: [margin lang -> pivot, per layer]}}`, in percent.
    """
    states = {lang: pooled_states(model, tokenizer, sentences, batch_size=64) for lang, sentences in multiway.items()}
    n_layers = next(iter(states.values())).shape[0]
    result: dict = {
        "margin": [],
        "centred": [],
        "per_language": {lang: [] for lang in states},
        "to_pivot": {lang: [] for lang in states if lang != PIVOT},
    }
    for layer in range(n_layers):
        pairs = layer_metrics({lang: s[layer] for lang, s in states.items()})
        result["margin"].append(100 * sum(m["margin"] for m in pairs.values()) / len(pairs))
        result["centred"].append(100 * sum(m["centred"] for m in pairs.values()) / len(pairs))
        for lang in states:
            mine = [m["margin"] for (a, b), m in pairs.items() if lang in (a, b)]
            result["per_language"][lang].append(100 * sum(mine) / len(mine))
            if lang != PIVOT:
                result["to_pivot"][lang].append(100 * pairs[(lang, PIVOT)]["margin"])
    return result


def lexical_alignment(tokenizer: PreTrainedTokenizerBase, multiway: dict[str, list[str]]) -> dict:
    """What shared tokens alone retrieve: the margin measure of `alignment_by_layer` on bags of tokens.

    Each sentence becomes its token frequencies (one-hot tokens, mean-pooled, no special tokens), the embeddings of
    a model that knows no similarity between different tokens. A base's layer 0 above this has learned embeddings
    in which translations are close; its middle above it is alignment that spelling does not give.

    Returns:
        `{"margin": average over all ordered pairs, "to_pivot": {lang: margin lang -> pivot}}`, in percent.
    """
    size = len(tokenizer)

    def bags(sentences: list[str]) -> torch.Tensor:
        rows = [
            torch.tensor(ids, dtype=torch.long) for ids in tokenizer(sentences, add_special_tokens=False)["input_ids"]
        ]
        return torch.stack([torch.bincount(row, minlength=size).float() / max(1, len(row)) for row in rows])

    pairs = layer_metrics({lang: bags(sentences) for lang, sentences in multiway.items()})
    return {
        "margin": 100 * sum(m["margin"] for m in pairs.values()) / len(pairs),
        "to_pivot": {lang: 100 * pairs[(lang, PIVOT)]["margin"] for lang in multiway if lang != PIVOT},
    }


def probe_base_model(model_dir: str | Path, paths: WorldPaths, n_copy: int = 40) -> dict:
    """Held-out loss per language, copy rates per language, and layer-wise retrieval, as one JSON-able dict."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = json.loads(paths.info.read_text(encoding="utf-8"))["config"]
    world = World(
        config["n_languages"],
        config["seed"],
        config.get("everyday_share", 0.0),
        tuple(config["close_changes"]) if "close_changes" in config else None,  # older worlds: the table's
    )
    multiway = read_multiway(paths.multiway)
    return {
        "heldout_loss": {lang: heldout_loss(model, tokenizer, s) for lang, s in multiway.items()},
        "copy": copy_rates(model, tokenizer, world, n_copy),
        "retrieval": retrieval_by_layer(model, tokenizer, multiway),
        "alignment": alignment_by_layer(model, tokenizer, multiway),
        "lexical": lexical_alignment(tokenizer, multiway),
        "translation": translation_scores(model, tokenizer, multiway),
    }
