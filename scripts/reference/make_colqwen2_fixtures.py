#!/usr/bin/env python3
"""Writes the ColQwen2 reference fixtures of tests/qwen.rs from colpali-engine.

    /work/.venv-qwen/bin/python scripts/reference/make_colqwen2_fixtures.py \
        [--data ../shared/data/vidore-arxivqa-mini] [--out tests/fixtures/colqwen2]

(the environment comes from scripts/reference/setup_colqwen2_env.sh; tests never run this).

No ColQwen2 weights can be downloaded here, so this builds a *tiny seeded* ColQwen2
(colpali_engine.models.ColQwen2 on a small Qwen2VLConfig: 2 vision blocks of width 64,
2 language layers of hidden 64 with 4 query / 2 key-value heads, M-RoPE sections
[2, 3, 3] (sum = head_dim / 2 = 8), a 128-d head), every parameter drawn from
torch.manual_seed(SEED) and rounded to bf16, saved with save_pretrained (bf16
safetensors, so the Rust loader reads the published checkpoints' dtype; the forward
pass runs in f32 on those bf16-exact values).

Tokenizer. No package on PyPI ships a Qwen2 tokenizer.json (bpe-qwen 0.1.5 ships only
a compiled BPE; transformers / colpali-engine ship no vocabularies), and a 151,936-row
vocabulary would make the tiny model 40 MB. So a small byte-level BPE is trained here
with the `tokenizers` package, with Qwen2's pre-tokenizer (its split regex + ByteLevel,
NFC normaliser) and Qwen2's special tokens (<|endoftext|>, <|im_start|>, <|im_end|>,
<|vision_start|>, <|vision_end|>, <|image_pad|>, ...) appended after the merges as in
Qwen2. The Rust side reads it through the tokenizers crate like any tokenizer.json.

Images: the 10 pages of vidore-arxivqa-mini downscaled (PIL LANCZOS, longest side
448 px) and committed under OUT/images; the processor resizes those copies with
max_num_visual_tokens = MAX_VISUAL_TOKENS (max_pixels = n · 28 · 28).

Outputs (OUT = tests/fixtures/colqwen2):
  model/        config.json, model.safetensors (bf16), tokenizer.json, processor files
  images/       0.png … 9.png (downscaled copies, provenance in images/PROVENANCE.md)
  colqwen2_fixtures.json   versions, queries, notes
  colqwen2_fixtures.safetensors
    doc_input_ids       I64 [2, Ld]   images 0 and 1 through process_images (one batch)
    doc_attention_mask  I64 [2, Ld]
    doc_pixel_values    F32 [sum patches, 1176] (unpadded, image 0 then image 1)
    doc_image_grid_thw  I64 [2, 3]
    doc_vectors         F32 [2, Ld, 128]  ColQwen2 output (× attention mask)
    doc_vision_embeds   F32 [sum merged tokens, 64]  visual() merger output (debug)
    doc_position_ids    I64 [3, 2, Ld]  M-RoPE positions (debug)
    query_input_ids     I64 [2, Lq]   process_queries (text + <|endoftext|> × 10), one batch
    query_attention_mask I64 [2, Lq]
    query_vectors       F32 [2, Lq, 128]
    all_grid_thw        I64 [10, 3]   every image's grid
    all_doc_vectors     F32 [sum real tokens, 128]  every image encoded alone (no padding)
    all_doc_offsets     I64 [11]
    scores              F32 [2, 10]   MaxSim of query_vectors vs all_doc_vectors

Checked against the installed sources (colpali-engine 0.3.18, transformers 5.24.0):
  * ColQwen2 = Qwen2VLModel + custom_text_proj (Linear hidden → 128, bias); output =
    proj / ‖proj‖ (no epsilon) × attention_mask; padding side left.
  * Document prompt: "<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>Describe
    the image.<|im_end|><|endoftext|>", the <|image_pad|> expanded by the processor to
    grid_t·grid_h·grid_w / 4 copies.
  * Query: query_prefix "" (colpali-engine has no "Query: " prefix; transformers' own
    ColQwen2Processor is not used by colpali-engine) + text + "<|endoftext|>" × 10.
  * Image processor (transformers 5: torchvision backend by default): smart_resize
    (factor 28, min_pixels 56·56, max_pixels), bicubic (antialiased) resize of the uint8
    image, then (x − 255·mean) / (255·std) in f32 (CLIP mean/std), patches ordered
    [h/2, w/2, 2, 2] and flattened as [channel, temporal (2 copies), 14, 14] = 1176.
  * Vision: Conv3d patch embed (no bias) ≡ linear 1176 → embed_dim; blocks x += attn(LN1 x);
    x += mlp(LN2 x), LayerNorm eps 1e-6 with bias, fused qkv with bias, quick_gelu MLP;
    2-D RoPE: inv_freq over head_dim/2 (θ 10000), angles [h·f, w·f] then duplicated;
    attention block-diagonal per image (cu_seqlens per frame). Merger: LN (eps 1e-6) →
    view(-1, 4·embed_dim) → Linear → GELU (exact erf) → Linear → hidden.
  * Text: M-RoPE θ = rope_theta, freq slot c of head_dim/2 takes axis (t, h, w) by
    mrope_section; text positions +1 on all axes; image tokens (t, start + row, start +
    col) on the merged grid; text after an image continues at start + max(h, w)/2.
    Left padding: positions count real tokens only (get_rope_index over the mask).
    Text-only batches (queries) get position_ids = arange(seq_len) (padding included),
    which RoPE's relativity makes equivalent up to rounding.
  * Decoder layer: RMSNorm (x · rsqrt(mean x² + eps) · w), q/k/v with bias, o without,
    GQA (kv head = q head // (q_heads / kv_heads)), causal + padding mask, SwiGLU MLP;
    final RMSNorm = last_hidden_state.
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

SEED = 20260901
MAX_VISUAL_TOKENS = 16
IMAGE_LONGEST_SIDE = 448
QWEN2_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]
# Qwen2's pre-tokenizer split pattern (from Qwen2's tokenizer.json).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CORPUS = """Describe the image. Find a document image that matches the given query.
The graph shows the surface density trend as a function of radius, with and without the
correction for fspec not equal to 1. Thread participation from JUL10 to FEB11Q grows.
A figure with axes, a legend, error bars and a caption; the table lists values per month.
What trend can be observed? Based on the progression, the impact is small at large radii."""


def build_tokenizer(path):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    tok.add_special_tokens(QWEN2_SPECIALS)
    tok.save(path)
    return tok


def downscale_images(data, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for i in range(10):
        img = Image.open(os.path.join(data, "images", f"{i}.png")).convert("RGB")
        scale = IMAGE_LONGEST_SIDE / max(img.size)
        size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
        img.resize(size, Image.LANCZOS).save(os.path.join(out_dir, f"{i}.png"), optimize=True)


def seeded_init(model):
    """Every parameter from the seed, rounded to bf16 (kept in f32)."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1:
                if name.endswith("weight"):  # LayerNorm / RMSNorm gains
                    v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
                else:
                    v = 0.1 * torch.randn(p.shape, generator=g)
            elif "embed_tokens" in name:
                v = torch.randn(p.shape, generator=g)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                v = torch.randn(p.shape, generator=g) / fan_in ** 0.5
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    ap.add_argument("--data", default=os.path.join(repo, "../shared/data/vidore-arxivqa-mini"))
    ap.add_argument("--out", default=os.path.join(repo, "tests/fixtures/colqwen2"))
    args = ap.parse_args()
    torch.manual_seed(SEED)

    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    model_dir = os.path.join(args.out, "model")
    os.makedirs(model_dir, exist_ok=True)
    build_tokenizer(os.path.join(model_dir, "tokenizer.json"))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
        eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
    )
    vocab = tokenizer.backend_tokenizer.get_vocab_size()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2_SPECIALS}

    image_processor = Qwen2VLImageProcessor(
        min_pixels=56 * 56, max_pixels=MAX_VISUAL_TOKENS * 28 * 28,
    )
    processor = ColQwen2Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  video_processor=Qwen2VLVideoProcessor())

    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=4096, hidden_act="silu", tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, embed_dim=64, hidden_size=64, num_heads=4, mlp_ratio=4, in_channels=3,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, hidden_act="quick_gelu",
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    model = ColQwen2(config).eval()
    seeded_init(model)
    # Save a bf16 copy: converting the model itself would also round its RoPE
    # inv_freq buffers to bf16 (a 3e-4 shift of the outputs, measured).
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(model_dir, safe_serialization=True)
    processor.save_pretrained(model_dir)

    img_dir = os.path.join(args.out, "images")
    downscale_images(args.data, img_dir)
    images = [Image.open(os.path.join(img_dir, f"{i}.png")) for i in range(10)]
    queries = [json.loads(l) for l in open(os.path.join(args.data, "queries.jsonl"))]
    query_texts = [q["text"] for q in queries[:2]]

    tensors = {}
    with torch.no_grad():
        docs = processor.process_images(images[:2])
        out = model(**docs)
        grid = docs["image_grid_thw"]
        n_patches = (grid[:, 1] * grid[:, 2]).tolist()
        pv = torch.cat([docs["pixel_values"][i, :n] for i, n in enumerate(n_patches)])
        vis = model.get_image_features(pixel_values=pv, image_grid_thw=grid)
        vis = getattr(vis, "pooler_output", vis)
        vis = torch.cat(list(vis)) if isinstance(vis, (list, tuple)) else vis
        pos, _ = model.get_rope_index(docs["input_ids"], mm_token_type_ids=docs["mm_token_type_ids"],
                                      image_grid_thw=grid, attention_mask=docs["attention_mask"])
        tensors.update(
            doc_input_ids=docs["input_ids"].numpy(), doc_attention_mask=docs["attention_mask"].numpy(),
            doc_pixel_values=pv.float().numpy(), doc_image_grid_thw=grid.numpy(),
            doc_vectors=out.float().numpy(), doc_vision_embeds=vis.float().numpy(),
            doc_position_ids=pos.numpy(),
        )
        q = processor.process_queries(query_texts)
        qout = model(**q)
        tensors.update(query_input_ids=q["input_ids"].numpy(), query_attention_mask=q["attention_mask"].numpy(),
                       query_vectors=qout.float().numpy())
        all_vecs, offsets, grids = [], [0], []
        for img in images:
            d = processor.process_images([img])
            v = model(**d)[0]
            v = v[d["attention_mask"][0].bool()]
            all_vecs.append(v)
            offsets.append(offsets[-1] + v.shape[0])
            grids.append(d["image_grid_thw"][0])
        tensors.update(all_doc_vectors=torch.cat(all_vecs).float().numpy(),
                       all_doc_offsets=np.array(offsets, dtype=np.int64),
                       all_grid_thw=torch.stack(grids).numpy())
        qv = [qout[i][q["attention_mask"][i].bool()] for i in range(2)]
        scores = torch.tensor([[float((qq @ dv.T).max(dim=1).values.sum()) for dv in all_vecs] for qq in qv])
        tensors["scores"] = scores.numpy().astype(np.float32)

    for k, v in tensors.items():
        assert np.isfinite(v).all() if v.dtype.kind == "f" else True, k
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              os.path.join(args.out, "colqwen2_fixtures.safetensors"))
    meta = {
        "generator": "scripts/reference/make_colqwen2_fixtures.py",
        "versions": {p: version(p) for p in ("colpali-engine", "transformers", "torch", "tokenizers", "pillow")},
        "seed": SEED, "max_num_visual_tokens": MAX_VISUAL_TOKENS, "image_longest_side": IMAGE_LONGEST_SIDE,
        "queries": query_texts, "special_token_ids": ids, "vocab_size": vocab,
        "ranking": [sorted(range(10), key=lambda j: -float(scores[i, j])) for i in range(2)],
        "image_processor": type(image_processor).__name__,
    }
    with open(os.path.join(args.out, "colqwen2_fixtures.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta, indent=1))
    for k, v in tensors.items():
        print(k, v.dtype, v.shape)


if __name__ == "__main__":
    main()
