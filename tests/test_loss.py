"""Tests of hybrid_mlir.loss: InfoNCE against an explicit-loop reference, GradCache gradients with dropout
replay, and a 2-process gloo run whose loss and gradients equal one process on the global batch."""
import os, tempfile
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.distributed as dist
import torch.multiprocessing as mp

from hybrid_mlir.core import ConfigError
from hybrid_mlir.loss import InfoNCELoss, cached_step, gather_with_grad, dist_info


def reference(q, p, n, t, variant, hard):
    "InfoNCE written out: loops over queries, logsumexp over the denominator's scores."
    q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    n = F.normalize(n, dim=-1) if hard else None
    B, out = q.shape[0], []
    for i in range(B):
        pos = torch.dot(q[i], p[i])/t
        den = [pos]
        if variant == "standard": den += [torch.dot(q[i], p[j])/t for j in range(B) if j != i]
        if hard: den += [torch.dot(q[i], n[j])/t for j in range(B)]
        out.append(torch.logsumexp(torch.stack(den), 0) - pos)
    return torch.stack(out).mean()


@pytest.mark.parametrize("variant,hard", [("standard", True), ("standard", False), ("paper", True)])
@pytest.mark.parametrize("B,d,t,seed", [(1, 4, 0.05, 0), (5, 8, 0.05, 1), (7, 3, 1.0, 2), (16, 32, 0.02, 3)])
def test_loss_matches_reference(variant, hard, B, d, t, seed):
    g = torch.Generator().manual_seed(seed)
    raw = [torch.randn(B, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    loss = InfoNCELoss(t, hard_negatives=hard, variant=variant)(*raw)
    ref = reference(*raw, t, variant, hard)
    torch.testing.assert_close(loss, ref)
    ga = torch.autograd.grad(loss, raw[:2] + ([raw[2]] if hard else []))
    gb = torch.autograd.grad(ref, raw[:2] + ([raw[2]] if hard else []))
    for a, b in zip(ga, gb): torch.testing.assert_close(a, b)


def test_paper_has_fewer_denominator_terms():
    q, p, n = (F.normalize(torch.randn(6, 8), dim=-1) for _ in range(3))
    assert InfoNCELoss(variant="standard")(q, p, n) > InfoNCELoss(variant="paper")(q, p, n)
    # with one triplet the two forms coincide (no other positives to count)
    torch.testing.assert_close(InfoNCELoss(variant="standard")(q[:1], p[:1], n[:1]), InfoNCELoss(variant="paper")(q[:1], p[:1], n[:1]))


def test_hard_negatives_switch_and_normalize():
    q, p, n = (torch.randn(4, 8) for _ in range(3))
    torch.testing.assert_close(InfoNCELoss(hard_negatives=False)(q, p, n), InfoNCELoss(hard_negatives=False)(q, p))
    torch.testing.assert_close(InfoNCELoss()(3*q, 2*p, 5*n), InfoNCELoss()(q, p, n))   # scale-free: cosine


def test_loss_errors():
    q = torch.randn(4, 8)
    with pytest.raises(ConfigError, match="temperature"): InfoNCELoss(0)
    with pytest.raises(ConfigError, match="temperature"): InfoNCELoss(-1.0)
    with pytest.raises(ConfigError, match="variant"): InfoNCELoss(variant="clip")
    with pytest.raises(ConfigError, match="paper"): InfoNCELoss(variant="paper", hard_negatives=False)
    with pytest.raises(ConfigError, match="negative"): InfoNCELoss()(q, q)
    with pytest.raises(ConfigError, match="B, d"): InfoNCELoss()(q, q[:3], q)
    with pytest.raises(ConfigError, match="chunk_size"): cached_step(lambda x, k: x, q, q, q, InfoNCELoss(), 0)


def test_single_process_gather_is_identity():
    assert dist_info() == (0, 1)
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


# ---- GradCache -------------------------------------------------------------------------------

class Tiny(nn.Module):
    "Embedding bag over token ids + dropout + linear; query and passage heads differ by a bias."
    def __init__(self, vocab=60, d=16, p=0.3):
        super().__init__()
        self.emb, self.drop, self.lin = nn.EmbeddingBag(vocab, d), nn.Dropout(p), nn.Linear(d, d)
        self.qb = nn.Parameter(torch.zeros(d))
    def forward(self, ids, kind):
        h = self.lin(self.drop(self.emb(ids)))
        return h + self.qb if kind == "query" else h


def chunked_plain(enc, qs, ps, ns, loss_fn, chunk):
    parts = [(qs, "query"), (ps, "passage")] + ([(ns, "passage")] if ns is not None else [])
    embs = [torch.cat([enc(x[i:i+chunk], k) for i in range(0, len(x), chunk)]) for x, k in parts]
    loss = loss_fn(*embs); loss.backward()
    return loss.detach()


def grads(m): return [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("chunk", [1, 3, 4, 12, 50])
@pytest.mark.parametrize("variant", ["standard", "paper"])
def test_gradcache_equals_plain_with_dropout(chunk, variant):
    torch.manual_seed(0)
    enc = Tiny(); ids = [torch.randint(0, 60, (12, 5)) for _ in range(3)]
    loss_fn = InfoNCELoss(0.05, variant=variant)
    torch.manual_seed(42); l1 = chunked_plain(enc, *ids, loss_fn, chunk); g1 = grads(enc); after1 = torch.rand(3)
    enc.zero_grad()
    torch.manual_seed(42); l2 = cached_step(enc, *ids, loss_fn, chunk); g2 = grads(enc); after2 = torch.rand(3)
    torch.testing.assert_close(l1, l2)
    for a, b in zip(g1, g2): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after1, after2)        # the RNG continues as after the plain step
    assert not l2.requires_grad


def test_gradcache_without_replay_would_differ():
    "Sanity: dropout matters here, so the equality above really tests the RNG replay."
    torch.manual_seed(0)
    enc = Tiny(); ids = [torch.randint(0, 60, (12, 5)) for _ in range(3)]
    torch.manual_seed(1); chunked_plain(enc, *ids, InfoNCELoss(), 4); g1 = grads(enc); enc.zero_grad()
    torch.manual_seed(2); chunked_plain(enc, *ids, InfoNCELoss(), 4); g2 = grads(enc)
    assert not all(torch.allclose(a, b) for a, b in zip(g1, g2))


def test_gradcache_equals_full_batch_in_eval_and_no_negatives():
    torch.manual_seed(0)
    enc = Tiny().eval(); q, p = (torch.randint(0, 60, (10, 4)) for _ in range(2))
    loss_fn = InfoNCELoss(hard_negatives=False)
    l1 = loss_fn(enc(q, "query"), enc(p, "passage")); l1.backward(); g1 = grads(enc); enc.zero_grad()
    l2 = cached_step(enc, q, p, None, loss_fn, 3); g2 = grads(enc)
    torch.testing.assert_close(l1.detach(), l2)
    for a, b in zip(g1, g2): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradcache_with_text_lists():
    "encoder_fn gets slices of a list of strings and the kind."
    torch.manual_seed(0)
    enc = Tiny().eval(); seen = []
    def encode(texts, kind):
        seen.append((len(texts), kind))
        return enc(torch.tensor([[hash(t) % 60 for t in s.split()] for s in texts]), kind)
    qs = [f"w{i} w{i+1}" for i in range(5)]; ps = [f"w{i+2} w{i}" for i in range(5)]; ns = [f"w{i+7} w3" for i in range(5)]
    cached_step(encode, qs, ps, ns, InfoNCELoss(), 2)
    assert seen[:3] == [(2, "query"), (2, "query"), (1, "query")]
    assert {k for _, k in seen} == {"query", "passage"} and len(seen) == 2*9


# ---- two processes on gloo ---------------------------------------------------------------------

W, B, D = 2, 4, 8

def _batch():
    g = torch.Generator().manual_seed(123)
    return [torch.randint(0, 60, (W*B, 5), generator=g) for _ in range(3)]


def _single_process(variant, cached):
    torch.manual_seed(0); enc = Tiny(p=0.0)
    ids, loss_fn = _batch(), InfoNCELoss(0.05, variant=variant, gather=False)
    loss = cached_step(enc, *ids, loss_fn, 3) if cached else chunked_plain(enc, *ids, loss_fn, W*B)
    return loss, grads(enc)


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=W)
    try:
        assert dist_info() == (rank, W)
        res = {}
        for variant in ("standard", "paper"):
            for cached in (False, True):
                torch.manual_seed(0); enc = Tiny(p=0.0)          # same init on every rank, like DDP
                ids = [x[rank*B:(rank + 1)*B] for x in _batch()]  # this rank's slice of the global batch
                loss_fn = InfoNCELoss(0.05, variant=variant)       # gather=True
                loss = cached_step(enc, *ids, loss_fn, 3) if cached else chunked_plain(enc, *ids, loss_fn, B)
                gs = grads(enc)
                for g in gs: dist.all_reduce(g); g /= W            # what DDP does: average over ranks
                l = loss.clone(); dist.all_reduce(l); l /= W
                res[(variant, cached)] = (l, gs)
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_global_batch():
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(os.path.join(d, "init"), d), nprocs=W, join=True)
        for rank in range(W):
            res = torch.load(os.path.join(d, f"rank{rank}.pt"), weights_only=True)
            for (variant, cached), (loss, gs) in res.items():
                ref_loss, ref_gs = _single_process(variant, cached)
                torch.testing.assert_close(loss, ref_loss)
                for a, b in zip(gs, ref_gs): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
