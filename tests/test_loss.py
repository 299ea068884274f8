"""Tests of hybrid_mlir.loss: InfoNCE against an explicit-loop reference, false-negative masks, the alignment
term against a float64 numpy computation, GradCache gradients with dropout replay (mask, parallel queries), and a
2-process gloo run whose loss and gradients equal one process on the global batch."""
import math, os, tempfile
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.distributed as dist
import torch.multiprocessing as mp

from hybrid_mlir.core import ConfigError
from hybrid_mlir.loss import (InfoNCELoss, cached_step, gather_with_grad, dist_info, false_negative_mask,
                              alignment_loss)


def reference(q, p, n, t, variant, hard, mask=None):
    "InfoNCE written out: loops over queries, logsumexp over the denominator's scores (masked columns left out)."
    q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    n = F.normalize(n, dim=-1) if hard else None
    B, out = q.shape[0], []
    keep = (lambda i, j: True) if mask is None else (lambda i, j: not bool(mask[i, j]))
    for i in range(B):
        pos = torch.dot(q[i], p[i])/t
        den = [pos]
        if variant == "standard": den += [torch.dot(q[i], p[j])/t for j in range(B) if j != i and keep(i, j)]
        if hard: den += [torch.dot(q[i], n[j])/t for j in range(B) if keep(i, B + j)]
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


def test_moved_and_renamed_names():
    "gather-with-grad lives in distributed (loss re-exports it); the GradCache step is grad_cache_step (cached_step: old name)."
    import hybrid_mlir.distributed as D
    from hybrid_mlir.loss import grad_cache_step
    assert gather_with_grad is D.gather_with_grad and dist_info is D.dist_info and cached_step is grad_cache_step


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


def chunked_plain(enc, qs, ps, ns, loss_fn, chunk, mask=None, parallel=None):
    parts = [(qs, "query"), (ps, "passage")] + ([(ns, "passage")] if ns is not None else [])
    if parallel is not None: parts.append((parallel, "query"))
    embs = [torch.cat([enc(x[i:i+chunk], k) for i in range(0, len(x), chunk)]) for x, k in parts]
    kw = dict(mask=mask) if mask is not None else {}
    if parallel is not None: kw["q_par"] = embs.pop()
    loss = loss_fn(*embs, **kw); loss.backward()
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


# the global batch's question ids: rows 0/5 and 2/7 parallel, some hard negatives answer another row's question
Q_IDS = ["a", "b", "c", "d", "e", "a", "f", "c"]
POS_IDS = [["a"], ["b", "g"], ["c"], ["d"], ["e"], ["a"], ["f", "b"], ["c"]]
NEG_IDS = [["d"], [], ["a"], [], ["f"], [], [], ["g", "e"]]


def _objective(loss_fn, offset, align):
    "InfoNCE with the false-negative mask, plus (align) 0.2 * JSD on parallel queries, as the trainer combines them."
    def f(q, p, n, mask=None, q_par=None):
        loss = loss_fn(q, p, n, mask=mask)
        if align: loss = loss + 0.2*alignment_loss(q, q_par, loss_fn.candidates(p, n), mask, offset=offset)
        return loss
    return f


def _run(enc, ids, loss_fn, cached, chunk, config, rank):
    if config == "plain": return cached_step(enc, *ids, loss_fn, 3) if cached else chunked_plain(enc, *ids, loss_fn, chunk)
    lo, hi = rank*B, rank*B + len(ids[0])
    mask = false_negative_mask(Q_IDS[lo:hi], POS_IDS, NEG_IDS, offset=lo)
    fn, par = _objective(loss_fn, lo, config == "aligned"), (ids[0].flip(1) if config == "aligned" else None)
    if cached: return cached_step(enc, *ids, fn, 3, mask=mask, parallel=par)
    return chunked_plain(enc, *ids, fn, chunk, mask=mask, parallel=par)


CONFIGS = [(v, c, k) for v in ("standard", "paper") for c in (False, True) for k in ("plain", "masked", "aligned")]


def _single_process(variant, cached, config):
    torch.manual_seed(0); enc = Tiny(p=0.0)
    ids, loss_fn = _batch(), InfoNCELoss(0.05, variant=variant, gather=False)
    loss = _run(enc, ids, loss_fn, cached, W*B, config, 0)
    return loss, grads(enc)


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=W)
    try:
        assert dist_info() == (rank, W)
        res = {}
        for variant, cached, config in CONFIGS:
            torch.manual_seed(0); enc = Tiny(p=0.0)          # same init on every rank, like DDP
            ids = [x[rank*B:(rank + 1)*B] for x in _batch()]  # this rank's slice of the global batch
            loss_fn = InfoNCELoss(0.05, variant=variant)       # gather=True
            loss = _run(enc, ids, loss_fn, cached, B, config, rank)
            gs = grads(enc)
            for g in gs: dist.all_reduce(g); g /= W            # what DDP does: average over ranks
            l = loss.clone(); dist.all_reduce(l); l /= W
            res[(variant, cached, config)] = (l, gs)
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes (mp.spawn, gloo)
def test_two_process_gloo_equals_global_batch():
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(os.path.join(d, "init"), d), nprocs=W, join=True)
        for rank in range(W):
            res = torch.load(os.path.join(d, f"rank{rank}.pt"), weights_only=True)
            assert sorted(res) == sorted(CONFIGS)
            for (variant, cached, config), (loss, gs) in res.items():
                ref_loss, ref_gs = _single_process(variant, cached, config)
                torch.testing.assert_close(loss, ref_loss)
                for a, b in zip(gs, ref_gs): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_global_mask_has_masked_entries():
    "The gloo test's ids really mask positives and negatives (else it would not test the column order)."
    m = false_negative_mask(Q_IDS, POS_IDS, NEG_IDS)
    assert m[:, :W*B].any() and m[:, W*B:].any()
    assert m[:, :W*B].any(0)[B:].any() and m[:B, B:W*B].any()   # a rank-0 query masks a rank-1 column


# ---- false-negative mask ---------------------------------------------------------------------

def test_false_negative_mask_rules():
    m = false_negative_mask(["a", "b", "a", "c"], ["a", ["b", "c"], "a", "c"], [["a"], [], ["c", "b"], ["x"]])
    assert m.dtype == torch.bool and m.shape == (4, 8)
    want = {(0, 2), (0, 4), (2, 0), (2, 4), (1, 6), (3, 1), (3, 6)}
    assert {tuple(x) for x in m.nonzero().tolist()} == want
    assert not m[torch.arange(4), torch.arange(4)].any()                         # own positives never masked
    assert false_negative_mask(["a", "b"], ["a", "b"]).shape == (2, 2)           # no negatives: positive columns only
    assert false_negative_mask(torch.tensor([3, 4, 3]), torch.tensor([3, 4, 3])).nonzero().tolist() == [[0, 2], [2, 0]]
    assert not false_negative_mask(["a", "b"], ["a", "b"], [[], []]).any()


def test_false_negative_mask_offset_equals_global_rows():
    rng = np.random.default_rng(0)
    Wn, Bn = 3, 5
    q = [f"x{v}" for v in rng.integers(0, 6, Wn*Bn)]
    pos = [[x] + ([f"x{rng.integers(0, 6)}"] if rng.random() < 0.3 else []) for x in q]
    neg = [[f"x{v}" for v in rng.integers(0, 6, rng.integers(0, 3))] for _ in q]
    g = false_negative_mask(q, pos, neg)
    assert g.sum() > 0
    for r in range(Wn):
        local = false_negative_mask(q[r*Bn:(r + 1)*Bn], pos, neg, offset=r*Bn)
        assert torch.equal(local, g[r*Bn:(r + 1)*Bn])
    with pytest.raises(ConfigError, match="offset"): false_negative_mask(q[:Bn], pos, neg, offset=11*Bn)


@pytest.mark.parametrize("variant,hard", [("standard", True), ("standard", False), ("paper", True)])
@pytest.mark.parametrize("B,seed", [(1, 0), (5, 1), (9, 2)])
def test_masked_loss_matches_reference(variant, hard, B, seed):
    g = torch.Generator().manual_seed(seed)
    raw = [torch.randn(B, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    C = 2*B if hard else B
    mask = torch.rand(B, C, generator=g) < 0.4
    loss_fn = InfoNCELoss(0.05, hard_negatives=hard, variant=variant)
    loss = loss_fn(*raw, mask=mask)
    clean = mask.clone(); clean[torch.arange(B), torch.arange(B)] = False
    ref = reference(*raw, 0.05, variant, hard, clean)
    torch.testing.assert_close(loss, ref)
    used = clean if variant == "standard" else clean[:, B:]
    assert loss_fn.last_masked == int(used.sum())
    wrt = raw[:2] + ([raw[2]] if hard else [])
    for a, b in zip(torch.autograd.grad(loss, wrt), torch.autograd.grad(ref, wrt)): torch.testing.assert_close(a, b)


def test_mask_none_or_empty_gives_the_unmasked_numbers():
    q, p, n = (torch.randn(6, 8) for _ in range(3))
    for kw in (dict(), dict(variant="paper")):
        f = InfoNCELoss(**kw)
        base = f(q, p, n)
        assert torch.equal(f(q, p, n, mask=None), base) and f.last_masked == 0
        assert torch.equal(f(q, p, n, mask=torch.zeros(6, 12, dtype=torch.bool)), base)
        own = torch.zeros(6, 12, dtype=torch.bool); own[torch.arange(6), torch.arange(6)] = True
        assert torch.equal(f(q, p, n, mask=own), base) and f.last_masked == 0         # own positive forced unmasked
    f = InfoNCELoss(variant="paper")                                                  # paper reads negative columns only
    pos_only = torch.zeros(6, 12, dtype=torch.bool); pos_only[:, :6] = True
    assert torch.equal(f(q, p, n, mask=pos_only), f(q, p, n)) and f.last_masked == 0
    full = torch.ones(6, 12, dtype=torch.bool)                                        # everything else masked: loss 0
    torch.testing.assert_close(InfoNCELoss()(q, p, n, mask=full), torch.tensor(0.0))


def test_mask_errors():
    q = torch.randn(4, 8)
    with pytest.raises(ConfigError, match="bool"): InfoNCELoss()(q, q, q, mask=torch.zeros(4, 8))
    with pytest.raises(ConfigError, match=r"\(B, C\) = \(4, 8\)"): InfoNCELoss()(q, q, q, mask=torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ConfigError, match=r"\(4, 4\)"): InfoNCELoss(hard_negatives=False)(q, q, mask=torch.zeros(4, 8, dtype=torch.bool))


@pytest.mark.parametrize("variant", ["standard", "paper"])
def test_gradcache_with_mask_and_parallel(variant):
    torch.manual_seed(0)
    enc = Tiny(); ids = [torch.randint(0, 60, (12, 5)) for _ in range(4)]
    mask = false_negative_mask([i % 7 for i in range(12)], [i % 7 for i in range(12)], [[(i + 2) % 7] for i in range(12)])
    loss_fn = InfoNCELoss(0.05, variant=variant)
    for par, fn in ((None, loss_fn), (ids[3], _objective(loss_fn, 0, True))):
        enc.zero_grad(); torch.manual_seed(42); l1 = chunked_plain(enc, *ids[:3], fn, 5, mask=mask, parallel=par); g1 = grads(enc)
        enc.zero_grad(); torch.manual_seed(42); l2 = cached_step(enc, *ids[:3], fn, 5, mask=mask, parallel=par); g2 = grads(enc)
        torch.testing.assert_close(l1, l2)
        for a, b in zip(g1, g2): torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert loss_fn.last_masked == int((mask if variant == "standard" else mask[:, 12:]).sum()) > 0


# ---- alignment term ------------------------------------------------------------------------------

def np_alignment(q, qp, C, mask, t, kind, valid):
    "The term written out in float64 numpy: softmax over the kept columns, divergences summed over them."
    nz = lambda x: x/np.linalg.norm(x, axis=-1, keepdims=True)
    q, qp, C = nz(q), nz(qp), nz(C)
    out = []
    for i in range(len(q)):
        if not valid[i]: continue
        keep = [j for j in range(len(C)) if j == i or not mask[i, j]]
        def sm(x):
            s = C[keep] @ x/t; e = np.exp(s - s.max()); return e/e.sum()
        P, Q = sm(q[i]), sm(qp[i])
        kl = lambda a, b: float(np.sum(a*np.log(a/b)))
        out.append(kl(P, Q) if kind == "kl" else 0.5*kl(P, (P + Q)/2) + 0.5*kl(Q, (P + Q)/2))
    return float(np.mean(out))


def _align_inputs(B=6, C=12, d=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, d, generator=g, dtype=dtype)
    qp = q + 0.5*torch.randn(B, d, generator=g, dtype=dtype)
    cands = torch.randn(C, d, generator=g, dtype=dtype)
    mask = torch.rand(B, C, generator=g) < 0.3
    return q, qp, cands, mask


@pytest.mark.parametrize("kind", ["jsd", "kl"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("t,seed", [(0.05, 0), (0.1, 1), (1.0, 2)])
def test_alignment_matches_numpy(kind, masked, t, seed):
    q, qp, C, mask = _align_inputs(seed=seed)
    valid = torch.tensor([True, False, True, True, False, True])
    m = mask if masked else None
    got = alignment_loss(q, qp, C, m, temperature=t, kind=kind, valid=valid)
    want = np_alignment(q.numpy(), qp.numpy(), C.numpy(), mask.numpy() if masked else np.zeros((6, 12), bool), t, kind, valid.numpy())
    assert abs(got.item() - want) < 1e-10*max(1.0, abs(want)), (got.item(), want)
    all_rows = alignment_loss(q, qp, C, m, temperature=t, kind=kind)
    want_all = np_alignment(q.numpy(), qp.numpy(), C.numpy(), mask.numpy() if masked else np.zeros((6, 12), bool), t, kind,
                            np.ones(6, bool))
    assert abs(all_rows.item() - want_all) < 1e-10*max(1.0, abs(want_all))


def test_alignment_offset_keeps_own_positive():
    q, qp, C, _ = _align_inputs()
    mask = torch.zeros(6, 12, dtype=torch.bool); mask[torch.arange(6), torch.arange(6) + 3] = True
    assert torch.equal(alignment_loss(q, qp, C, mask, offset=3), alignment_loss(q, qp, C, None))
    assert not torch.equal(alignment_loss(q, qp, C, mask, offset=0), alignment_loss(q, qp, C, None))


def test_jsd_symmetric_and_zero():
    q, qp, C, mask = _align_inputs(seed=3)
    for m in (None, mask):
        torch.testing.assert_close(alignment_loss(q, qp, C, m), alignment_loss(qp, q, C, m), rtol=1e-12, atol=1e-14)
        assert abs(alignment_loss(q, q, C, m).item()) < 1e-12
        assert abs(alignment_loss(q, q, C, m, kind="kl").item()) < 1e-12
        assert alignment_loss(q, qp, C, m) > 0
    assert alignment_loss(q, qp, C, mask) <= math.log(2)                   # JSD is bounded by log 2


def test_alignment_finite_with_masks_and_extreme_scores():
    q, qp, C, mask = _align_inputs(dtype=torch.float32)
    heavy = torch.ones_like(mask)                                           # only the own positive left
    for m in (None, mask, heavy):
        for t in (1e-4, 0.05):
            for kind in ("jsd", "kl"):
                for norm, scale in ((True, 1.0), (False, 1e3)):
                    qq, pp = (q*scale).requires_grad_(), (qp*scale).requires_grad_()
                    loss = alignment_loss(qq, pp, C*scale, m, temperature=t, kind=kind, normalize=norm)
                    assert torch.isfinite(loss), (m is None, t, kind, norm)
                    loss.backward()
                    assert torch.isfinite(pp.grad).all() and (qq.grad is None or torch.isfinite(qq.grad).all())
    assert alignment_loss(q, qp, C, heavy).item() == 0.0                     # one column: P = Q = 1


def test_alignment_gradients():
    q, qp, C, mask = _align_inputs()
    for m in (None, mask):
        a, b, c = (x.clone().requires_grad_() for x in (q, qp, C))
        alignment_loss(a, b, c, m, kind="jsd").backward()
        assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0 and c.grad.abs().sum() > 0
        a, b, c = (x.clone().requires_grad_() for x in (q, qp, C))
        alignment_loss(a, b, c, m, kind="kl").backward()
        assert a.grad is None and b.grad.abs().sum() > 0                      # P detached: the source side is the teacher
    a, b = q.clone().requires_grad_(), qp.clone().requires_grad_()
    valid = torch.tensor([1, 0, 0, 0, 0, 0]).bool()
    alignment_loss(a, b, C, mask, valid=valid).backward()
    assert a.grad[1:].abs().sum() == 0 and b.grad[1:].abs().sum() == 0 and a.grad[0].abs().sum() > 0


def test_alignment_no_valid_rows_is_zero_with_graph():
    q, qp, C, mask = _align_inputs()
    a = q.clone().requires_grad_()
    loss = alignment_loss(a, qp, C, mask, valid=torch.zeros(6, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward(); assert a.grad.abs().sum() == 0


@pytest.mark.parametrize("variant", ["standard", "paper"])
def test_infonce_plus_zero_term_is_infonce(variant):
    q, p, n, qp = (torch.randn(8, 16, dtype=torch.float32, requires_grad=True) for _ in range(4))
    mask = torch.rand(8, 16, generator=torch.Generator().manual_seed(0)) < 0.3
    f = InfoNCELoss(0.05, variant=variant)
    for m in (None, mask):
        plain = f(q, p, n, mask=m)
        gp = torch.autograd.grad(plain, (q, p, n))
        both = f(q, p, n, mask=m) + 0*alignment_loss(q, qp, f.candidates(p, n), m)
        gb = torch.autograd.grad(both, (q, p, n))
        assert torch.equal(plain, both)
        for x, y in zip(gp, gb): assert torch.equal(x, y)


def test_candidates_and_alignment_errors():
    p, n = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(InfoNCELoss().candidates(p, n), torch.cat([F.normalize(p, dim=-1), F.normalize(n, dim=-1)]))
    assert InfoNCELoss(hard_negatives=False).candidates(p, n).shape == (3, 4)
    assert torch.equal(InfoNCELoss(normalize=False).candidates(p), p)
    q = torch.randn(3, 4)
    with pytest.raises(ConfigError, match="kind"): alignment_loss(q, q, p, kind="js")
    with pytest.raises(ConfigError, match="q_par"): alignment_loss(q, q[:2], p)
    with pytest.raises(ConfigError, match="cands"): alignment_loss(q, q, torch.randn(3, 5))
    with pytest.raises(ConfigError, match="mask"): alignment_loss(q, q, p, torch.zeros(3, 4, dtype=torch.bool))
