"""DISAL top-2 jvp: a loop of K jvps vs one vmap over the K checkpoints (batched tangents), CPU seconds.

Measures whether batching the K checkpoints into one call shares work (docs/method.md, "The top-N
regime"). Same numbers either way (max diff printed). Run:
    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python bench/top_jvp_batched.py
"""
import time, torch, numpy as np
from torch.func import functional_call, jvp, vmap
from disal.data import load_dataset
from disal.training.adapter import HFTextAdapter
from disal.training.hidden_cache import HiddenStateCache
from disal.training.top import TopBlocks
ds = load_dataset("bbc"); texts = list(ds.train_texts[:32])
ad = HFTextAdapter(None, num_labels=5)
c = HiddenStateCache(2); c.fill(ad, list(range(32)), texts)
top = TopBlocks(ad, 2).eval()
g = torch.Generator().manual_seed(0)
base = {n: p.detach().clone() for n, p in top.named_parameters()}
K = 5
cps = [base] + [{n: t + 1e-3 * torch.randn(t.shape, generator=g) for n, t in base.items()} for _ in range(K)]
dirs = [{n: cps[k][n] - cps[0][n] for n in base} for k in range(1, K + 1)]
batch = c.batch(list(range(32)))
f = lambda p: functional_call(top, p, args=(), kwargs=batch)
def loop():
    return [jvp(f, (cps[k],), (dirs[k - 1],))[1] for k in range(1, K + 1)]
P = {n: torch.stack([cps[k][n] for k in range(1, K + 1)]) for n in base}
T = {n: torch.stack([d[n] for d in dirs]) for n in base}
def batched():
    return vmap(lambda p, t: jvp(f, (p,), (t,))[1])(P, T)
with torch.no_grad():
    def plain(): return f(cps[-1])
    for name, fn in (("plain", plain), ("loop", loop), ("vmap", batched), ("plain", plain), ("loop", loop), ("vmap", batched)):
        c0 = time.process_time(); out = fn(); print(name, round(time.process_time() - c0, 2), flush=True)
    a = torch.stack(loop()); b = batched(); print("max diff", float((a - b).abs().max()))
