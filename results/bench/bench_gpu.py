"""GPU check of the training path (bf16 autocast on CUDA) and throughput, with a randomly initialised
model of multilingual-e5-small's shape (the real weights cannot travel to the device machine)."""
import json, os, time, sys, statistics
import torch
from hybrid_mlir.model import tiny_encoder
from hybrid_mlir.train import TrainConfig, train
from hybrid_mlir.data import load_lareqa, training_pairs
from hybrid_mlir.core import run_info
out = os.environ.get("OUT", "/tmp/out"); res = dict(machine=run_info())
print(res, flush=True)
GPU = torch.cuda.is_available(); DEV = "cuda" if GPU else "cpu"
enc = tiny_encoder(0, hidden=384, layers=12, heads=12) if GPU else tiny_encoder(0)
n_params = sum(p.numel() for p in enc.parameters()); n_emb = enc.model.embeddings.word_embeddings.weight.numel()
res["params"] = n_params; res["non_embedding_params"] = n_params - n_emb
enc.save("/tmp/e5rand")
# mean non-padding tokens per row (query + positive + negative) on MLQA-R training pairs
tp = training_pairs(load_lareqa("mlqa-r")).to_pandas().sample(2000, random_state=0)
tok = enc.tokenizer
def ntok(texts, prefix, L): return sum(min(len(x), L) for x in tok([prefix + t for t in texts.tolist()])["input_ids"]) / len(texts)
tpr = ntok(tp["query"], "query: ", 64) + ntok(tp["passage"], "passage: ", 128) + ntok(tp["negative"], "passage: ", 128)
res["tokens_per_row"] = tpr
peak = 989e12  # H100/H200 SXM dense bf16 tensor-core peak
for B, chunk, steps in ([(100, None, 25), (256, None, 25), (448, 112, 12)] if GPU else [(8, None, 6), (16, 4, 6)]):
    cfg = TrainConfig(model="/tmp/e5rand", strategy="hybrid", alpha=0.5, train=["mlqa-r"], eval=None, batch_size=B,
                      max_steps=steps, val_every=0, save_every=0, device=DEV, bf16=True, out=f"/tmp/run{B}",
                      keep_checkpoints=False, progress=False, grad_cache_chunk=chunk)
    GPU and torch.cuda.reset_peak_memory_stats(); t0 = time.time(); r = train(cfg); wall = time.time() - t0
    log = [json.loads(l) for l in open(f"/tmp/run{B}/train_log.jsonl") if '"loss"' in l]
    el = [x["elapsed"] for x in log]; dts = [b - a for a, b in zip(el, el[1:])][3:]  # skip warm-up steps
    st = statistics.median(dts); pps = B / st; tps = pps * tpr
    mfu = 6 * res["non_embedding_params"] * tps / peak
    row = dict(batch=B, grad_cache_chunk=chunk, steps=len(log), median_step_s=st, pairs_per_s=pps, tokens_per_s=tps,
               mfu_vs_bf16_dense_peak=mfu, peak_gpu_mem_gb=torch.cuda.max_memory_allocated() / 1e9 if GPU else None,
               first_loss=log[0]["loss"], last_loss=log[-1]["loss"], wall_s=wall)
    print(row, flush=True); res[f"train_b{B}"] = row
# encoding throughput on the MLQA-R candidates (fp32 weights, inference mode)
ds = load_lareqa("mlqa-r"); texts = ds.candidates.text.tolist()[: None if GPU else 300]
from hybrid_mlir.model import load_encoder
e = load_encoder("/tmp/e5rand", device=DEV)
e.encode(texts[:2000], kind="passage", batch_size=256)
GPU and torch.cuda.synchronize(); t0 = time.time(); e.encode(texts, kind="passage", batch_size=256, max_tokens=65536); GPU and torch.cuda.synchronize()
dt = time.time() - t0; res["encode"] = dict(texts=len(texts), seconds=dt, texts_per_s=len(texts) / dt)
print(res["encode"], flush=True)
json.dump(res, open(os.path.join(out, "gpu_bench.json"), "w"), indent=2, default=str)
