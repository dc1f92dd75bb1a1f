#!/usr/bin/env python3
"""Writes the ColPali reference fixtures of tests/colpali.rs from colpali-engine.

    /work/.venv-qwen/bin/python scripts/reference/make_colpali_fixtures.py \
        [--images tests/fixtures/colqwen2/images] [--out tests/fixtures/colpali]

(the environment comes from scripts/reference/setup_colqwen2_env.sh: colpali-engine 0.3.18,
transformers 5.24.0, torch 2.13.0; tests never run this).

No ColPali weights can be downloaded here, so this builds a *tiny seeded* ColPali
(colpali_engine.models.ColPali on a small PaliGemmaConfig) and runs the real
ColPaliProcessor (PaliGemmaProcessor + SiglipImageProcessor) on the committed page
images (the 10 vidore-arxivqa-mini pages, downscaled copies shared with the ColQwen2
fixtures) and on the two queries.

Tiny model: SigLIP with image_size 112 (8 × 8 = 64 patches of 14 px; the real model
is 448 → 1024), width 32, 2 layers of 2 heads, MLP 64, tanh GELU; projector 32 → 32;
Gemma with hidden 32, 2 layers, 2 query heads and 1 key/value head of head_dim 256
(the real head size, so the 256-wide attention runs in the tests), GeGLU MLP 64, tanh
GELU, RoPE θ 10000; custom_text_proj 32 → 128. Every parameter is drawn from
torch.manual_seed(SEED) and rounded to bf16; the checkpoint is saved in bf16
(safetensors) by save_pretrained, the forward pass runs in f32 on those values.

Tokenizer. Gemma's tokenizer.json cannot be downloaded here, so a small one of the
same kind is built with `tokenizers`: BPE with byte fallback (<0x00> … <0xFF>), the
normaliser replacing ' ' with '▁' (no pre-tokenizer, no dummy prefix, as Gemma's),
special tokens at Gemma's ids <pad> 0, <eos> 1, <bos> 2, <unk> 3, a '\\n' token, and a
template post-processor adding <bos> (which PaliGemmaProcessor switches off). The
processor adds <image> and the 1024 <locNNNN> + 128 <segNNN> tokens after the vocabulary,
as it does for the real tokenizer (there <image> is already id 257152).

Outputs (OUT = tests/fixtures/colpali):
  model/    config.json, model.safetensors (bf16; colpali-engine's layout as
            transformers 5.24 saves it: model.vision_tower.*, model.multi_modal_projector.*,
            model.language_model.model.*, custom_text_proj.*), tokenizer.json,
            processor files
  adapter/  a PEFT LoRA adapter (r 2, α 4, random A and B) on model/, on the language
            model's q/k/v/o/gate/up/down and custom_text_proj, as colpali-v1.3's
            target_modules; base_model_name_or_path = "../model"
  hf_config.json   the config.json of transformers' ColPaliForRetrieval for the same model
  page448.png      image 0 as SiglipImageProcessor(size 448 × 448) resizes it (uint8,
                   lossless; pixel_values = (x/255 − 0.5)/0.5 recovered exactly)
  colpali_fixtures.json         versions, queries, ids, notes, measured facts
  colpali_fixtures.safetensors
    doc_input_ids, doc_attention_mask, doc_token_type_ids  I64 [2, Ld]  (images 0, 1)
    doc_pixel_values    F32 [1, 3, 112, 112]  (image 0)
    doc_vectors         F32 [2, Ld, 128]
    doc_image_features  F32 [2, 64, 32]   projector output (debug)
    query_input_ids, query_attention_mask  I64 [2, Lq]   process_queries, one batch
    query_vectors_batch F32 [2, Lq, 128]  that batch (left-padded: see the mask note)
    query_vectors_0, query_vectors_1  F32 [Lq_i, 128]  each query alone (no padding)
    all_doc_vectors     F32 [10·Ld, 128]  every image encoded (all the same length)
    all_doc_offsets     I64 [11]
    scores              F32 [2, 10]  MaxSim of the single-query vectors vs all_doc_vectors
    adapter_doc_vectors, adapter_query_vectors_0  F32  image 0 / query 0 with the adapter
    hf_doc_vectors      F32  image 0 through ColPaliForRetrieval with the renamed weights
                        (colpali-engine's ids for it)
    hf_processor_doc_ids, hf_processor_query_ids  I64  transformers' ColPaliProcessor's ids
                        for image 0 and query 0 (its prompts: one <bos>, "Question: ", "\n")

Checked against the installed sources (colpali-engine 0.3.18, transformers 5.24.0):
  * Document prompt: ColPaliProcessor.visual_prompt_prefix "<image><bos>Describe the image.";
    PaliGemmaProcessor inserts <bos> after the last <image> and appends "\\n", expands
    <image> to image_seq_length copies, and tokenizes with add_bos_token = False:
    <image> × N, <bos>, <bos>, "Describe the image.", "\\n" (the doubled <bos> is real).
    token_type_ids are all 0 (no suffix), so the prefix-LM block covers the whole prompt.
  * Query: process_queries → process_texts(bos + query_prefix "" + text + <pad> × 10) with
    the same tokenizer (add_bos_token False): one <bos>, no "Question: " prefix and no "\\n"
    (transformers' own ColPaliProcessor, not used by colpali-engine, differs).
  * Padding side left (Gemma's tokenizer class); position ids = arange(seq) + 1 over the
    padded row (PaliGemma positions are 1-indexed; padding is counted).
  * Attention mask in 5.24: create_causal_mask(causal OR (token_type 0 on both sides)) AND
    padding; with sdpa, when no row is padded and no token_type_ids are given, the mask is
    skipped and GemmaAttention.is_causal is False (PaliGemmaConfig sets
    use_bidirectional_attention = True), so an unpadded query batch is bidirectional while a
    padded one is causal. Measured below ("query_mask_facts"). transformers 4.x at inference
    made every non-padding key visible (bidirectional) for documents and queries alike.
  * SigLIP: Conv2d 14/14 with bias ≡ linear over [channel, 14, 14] patches in row-major
    patch order; + position_embedding (no interpolation at the trained size); pre-LN layers
    (eps 1e-6) with biased q/k/v/out, scale head_dim^-0.5, fc1 → gelu_pytorch_tanh → fc2;
    post_layernorm; no head. Projector linear with bias; image features inserted unscaled.
  * Gemma: embed_tokens × sqrt(hidden) (a f32 scalar) for text tokens only; RMSNorm
    x · rsqrt(mean x² + eps) · (1 + w) in f32; q/k/v/o without bias; RoPE rotate-half with
    inv_freq = 1/θ^(2i/head_dim); MQA (kv head = q head // 2); GeGLU down(gelu_tanh(gate) ·
    up); final norm; colpali-engine takes hidden_states[-1] (= last_hidden_state, checked).
  * Head: custom_text_proj (with bias) → / ‖·‖ (no epsilon) → × attention_mask.
"""
import argparse
import copy
import json
import os
from importlib.metadata import version

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file

SEED = 20261001
TINY_IMAGE = 112
CORPUS = """Describe the image. Find a document image that matches the given query.
The graph shows the surface density trend as a function of radius, with and without the
correction for fspec not equal to 1. Thread participation from JUL10 to FEB11Q grows.
A figure with axes, a legend, error bars and a caption; the table lists values per month.
What trend can be observed? Based on the progression, the impact is small at large radii."""
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def build_tokenizer(path):
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=360, min_frequency=1, show_progress=False,
                                  special_tokens=GEMMA_SPECIALS, initial_alphabet=["\n", "▁"])
    tok.train_from_iterator(CORPUS.replace("\n", " \n ").split(" \n ") + ["\n"], trainer=trainer)
    # Byte-fallback tokens, as Gemma's vocabulary has them.
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    data["model"]["byte_fallback"] = True
    data["decoder"] = None
    tok = Tokenizer.from_str(json.dumps(data))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
    assert [tok.token_to_id(t) for t in GEMMA_SPECIALS] == [0, 1, 2, 3]
    tok.save(path)


def seeded_init(model):
    """Every parameter from the seed, rounded to bf16 (kept in f32)."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                if "language_model" in name and name.endswith("weight"):  # Gemma (1 + w)
                    v = 0.2 * torch.randn(p.shape, generator=g)
                elif name.endswith("weight"):  # LayerNorm gains
                    v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
                else:
                    v = 0.1 * torch.randn(p.shape, generator=g)
            elif "embed_tokens" in name:
                v = 0.5 * torch.randn(p.shape, generator=g)
            elif "position_embedding" in name:
                v = 0.5 * torch.randn(p.shape, generator=g)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                v = torch.randn(p.shape, generator=g) / fan_in ** 0.5
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def real_rows(v, mask):
    return v[mask.bool()]


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    ap.add_argument("--images", default=os.path.join(repo, "tests/fixtures/colqwen2/images"))
    ap.add_argument("--queries", default=os.path.join(repo, "tests/fixtures/colqwen2/queries.jsonl"))
    ap.add_argument("--out", default=os.path.join(repo, "tests/fixtures/colpali"))
    args = ap.parse_args()
    torch.manual_seed(SEED)

    from colpali_engine.models import ColPali, ColPaliProcessor
    from transformers import PaliGemmaConfig, PreTrainedTokenizerFast
    from transformers.models.siglip import SiglipImageProcessor

    model_dir = os.path.join(args.out, "model")
    os.makedirs(model_dir, exist_ok=True)
    build_tokenizer(os.path.join(model_dir, "tokenizer.json"))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
        pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
        padding_side="left",
    )
    n_patches = (TINY_IMAGE // 14) ** 2
    image_processor = SiglipImageProcessor(
        size={"height": TINY_IMAGE, "width": TINY_IMAGE}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        resample=3, rescale_factor=1 / 255,
    )
    image_processor.image_seq_length = n_patches
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vocab = len(processor.tokenizer)
    image_token_id = processor.image_token_id

    config = PaliGemmaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=TINY_IMAGE, patch_size=14, num_channels=3, vision_use_head=False,
                           hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                         hidden_activation="gelu_pytorch_tanh", hidden_act="gelu_pytorch_tanh",
                         rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                         pad_token_id=0, bos_token_id=2, eos_token_id=1),
        image_token_index=image_token_id, vocab_size=vocab, projection_dim=32, hidden_size=32,
    )
    model = ColPali(config).eval()
    seeded_init(model)
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(model_dir, safe_serialization=True)
    processor.save_pretrained(model_dir)
    attn = model.config._attn_implementation

    images = [Image.open(os.path.join(args.images, f"{i}.png")).convert("RGB") for i in range(10)]
    queries = [json.loads(l) for l in open(args.queries)]
    query_texts = [q["text"] for q in queries[:2]]

    tensors, facts = {}, {}
    with torch.no_grad():
        docs = processor.process_images(images[:2])
        out = model(**docs)
        feats = model.model.model.get_image_features(docs["pixel_values"]).pooler_output
        # colpali-engine's hidden_states[-1] is the final-norm output.
        full = model.model(**{k: v for k, v in docs.items() if k != "labels"}, output_hidden_states=True)
        facts["hidden_states_last_equals_normed"] = bool(
            torch.equal(full.hidden_states[-1], model.model.model(
                **{k: v for k, v in docs.items() if k != "labels"}).last_hidden_state))
        tensors.update(
            doc_input_ids=docs["input_ids"].numpy(), doc_attention_mask=docs["attention_mask"].numpy(),
            doc_token_type_ids=docs["token_type_ids"].numpy(),
            doc_pixel_values=docs["pixel_values"][:1].float().numpy(), doc_vectors=out.float().numpy(),
            doc_image_features=feats.float().numpy(),
        )
        q = processor.process_queries(query_texts)
        qout = model(**q)
        tensors.update(query_input_ids=q["input_ids"].numpy(), query_attention_mask=q["attention_mask"].numpy(),
                       query_vectors_batch=qout.float().numpy())
        single = []
        for i, t in enumerate(query_texts):
            qi = processor.process_queries([t])
            vi = model(**qi)[0]
            single.append(vi)
            tensors[f"query_vectors_{i}"] = vi.float().numpy()
            tensors[f"query_input_ids_{i}"] = qi["input_ids"][0].numpy()
        # Which mask did each path use? Compare against the model run with explicit masks.
        def with_mask(ids, kind):
            n = ids.shape[1]
            if kind == "causal":
                m = torch.tril(torch.ones(n, n, dtype=torch.bool))
            else:
                m = torch.ones(n, n, dtype=torch.bool)
            emb = model.model.model.get_input_embeddings()(ids)
            pos = torch.arange(n).unsqueeze(0) + 1
            h = model.model.model.language_model(inputs_embeds=emb, position_ids=pos,
                                                 attention_mask=m[None, None]).last_hidden_state
            p = model.custom_text_proj(h)
            return (p / p.norm(dim=-1, keepdim=True))[0]
        for i in range(2):
            ids = torch.tensor(tensors[f"query_input_ids_{i}"])[None]
            pad = int((q["attention_mask"][i] == 0).sum())
            batch_rows = qout[i][pad:]
            for kind in ("causal", "bidirectional"):
                ref = with_mask(ids, kind)
                facts[f"query{i}_alone_vs_{kind}"] = float((single[i] - ref).abs().max())
                facts[f"query{i}_in_padded_batch_vs_{kind}"] = float((batch_rows - ref).abs().max())
            facts[f"query{i}_pad_rows_in_batch"] = pad

        all_vecs, offsets = [], [0]
        for img in images:
            d = processor.process_images([img])
            v = real_rows(model(**d)[0], d["attention_mask"][0])
            all_vecs.append(v)
            offsets.append(offsets[-1] + v.shape[0])
        tensors.update(all_doc_vectors=torch.cat(all_vecs).float().numpy(),
                       all_doc_offsets=np.array(offsets, dtype=np.int64))
        scores = torch.tensor([[float((qq @ dv.T).max(dim=1).values.sum()) for dv in all_vecs] for qq in single])
        tensors["scores"] = scores.numpy().astype(np.float32)

        # 448 × 448 pre-processing of image 0, the real model's input size.
        big = SiglipImageProcessor(size={"height": 448, "width": 448}, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3, resample=3, rescale_factor=1 / 255)
        pv = big(images[0], return_tensors="pt")["pixel_values"][0]
        u8 = torch.round(pv * 127.5 + 127.5).clamp(0, 255).to(torch.uint8)
        back = (u8.float() / 255 - 0.5) / 0.5
        facts["page448_roundtrip_max_diff"] = float((back - pv).abs().max())
        assert facts["page448_roundtrip_max_diff"] < 1e-6
        Image.fromarray(u8.permute(1, 2, 0).numpy()).save(os.path.join(args.out, "page448.png"), optimize=True)

        # transformers' ColPaliForRetrieval with the same weights (vlm.*, embedding_proj_layer.*).
        from transformers import ColPaliConfig, ColPaliForRetrieval
        hf_cfg = ColPaliConfig(vlm_config=config.to_dict(), embedding_dim=128)
        hf = ColPaliForRetrieval(hf_cfg).eval()
        sd = {}
        for k, v in model.state_dict().items():
            if k.startswith("custom_text_proj."):
                sd["embedding_proj_layer." + k[len("custom_text_proj."):]] = v
            elif k.startswith("model.model."):
                sd["vlm." + k[len("model.model."):]] = v
            elif k.startswith("model.lm_head"):
                sd["vlm." + k[len("model."):]] = v
        missing, unexpected = hf.load_state_dict(sd, strict=False)
        facts["hf_missing_keys"] = list(missing)
        facts["hf_unexpected_keys"] = list(unexpected)
        hf_tmp = "/tmp/colpali_hf_layout"
        copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(hf_tmp, safe_serialization=True)
        from safetensors import safe_open
        with safe_open(os.path.join(hf_tmp, "model.safetensors"), "pt") as f:
            facts["hf_saved_key_prefixes"] = sorted({".".join(k.split(".")[:3]) for k in f.keys()})
        with open(os.path.join(hf_tmp, "config.json")) as f:
            hf_json = json.load(f)
        with open(os.path.join(args.out, "hf_config.json"), "w") as f:
            json.dump(hf_json, f, indent=1)
        # transformers' own ColPaliProcessor (the prompts of the ColPaliForRetrieval layout).
        from transformers import ColPaliProcessor as HfColPaliProcessor
        hf_proc = HfColPaliProcessor(image_processor=image_processor, tokenizer=processor.tokenizer)
        hd = hf_proc(images=images[:1], return_tensors="pt")
        hq = hf_proc(text=query_texts[:1], return_tensors="pt")
        tensors["hf_processor_doc_ids"] = hd["input_ids"][0].numpy()
        tensors["hf_processor_query_ids"] = hq["input_ids"][0].numpy()
        facts["hf_processor_doc_text"] = hf_proc.tokenizer.decode(hd["input_ids"][0, n_patches - 1:])
        facts["hf_processor_query_text"] = hf_proc.tokenizer.decode(hq["input_ids"][0])
        d0 = processor.process_images(images[:1])
        hv = hf(input_ids=d0["input_ids"], pixel_values=d0["pixel_values"],
                attention_mask=d0["attention_mask"], token_type_ids=d0["token_type_ids"]).embeddings[0]
        tensors["hf_doc_vectors"] = hv.float().numpy()
        facts["hf_vs_colpali_engine_doc0"] = float((hv - model(**d0)[0]).abs().max())

        # A PEFT LoRA adapter on the language model and the head.
        from peft import LoraConfig, get_peft_model
        lcfg = LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, lora_dropout=0.0,
                          target_modules=r"(.*(language_model).*(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj).*$|.*(custom_text_proj).*$)")
        base = copy.deepcopy(model)
        pm = get_peft_model(base, lcfg).eval()
        g = torch.Generator().manual_seed(SEED + 1)
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.data.copy_((0.3 * torch.randn(p.shape, generator=g)).to(torch.bfloat16).float())
        adapter_dir = os.path.join(args.out, "adapter")
        pm.save_pretrained(adapter_dir)
        os.remove(os.path.join(adapter_dir, "README.md"))
        acfg_path = os.path.join(adapter_dir, "adapter_config.json")
        acfg = json.load(open(acfg_path))
        acfg["base_model_name_or_path"] = "../model"
        json.dump(acfg, open(acfg_path, "w"), indent=1)
        tensors["adapter_doc_vectors"] = pm(**d0)[0].float().numpy()
        q0 = processor.process_queries(query_texts[:1])
        tensors["adapter_query_vectors_0"] = pm(**q0)[0].float().numpy()

    for k, v in tensors.items():
        assert np.isfinite(v).all() if v.dtype.kind == "f" else True, k
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              os.path.join(args.out, "colpali_fixtures.safetensors"))
    meta = {
        "generator": "scripts/reference/make_colpali_fixtures.py",
        "versions": {p: version(p) for p in ("colpali-engine", "transformers", "torch", "tokenizers",
                                             "pillow", "peft")},
        "seed": SEED, "tiny_image_size": TINY_IMAGE, "image_seq_length": n_patches,
        "attn_implementation": attn,
        "queries": query_texts, "vocab_size": vocab, "image_token_id": image_token_id,
        "doc_ids_tail": tensors["doc_input_ids"][0, n_patches:].tolist(),
        "doc_text": processor.tokenizer.decode(tensors["doc_input_ids"][0, n_patches - 1:]),
        "query_text_0": processor.tokenizer.decode(tensors["query_input_ids_0"]),
        "ranking": [sorted(range(10), key=lambda j: -float(scores[i, j])) for i in range(2)],
        "query_mask_facts": facts,
    }
    with open(os.path.join(args.out, "colpali_fixtures.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta, indent=1))
    for k, v in tensors.items():
        print(k, v.dtype, v.shape)


if __name__ == "__main__":
    main()
