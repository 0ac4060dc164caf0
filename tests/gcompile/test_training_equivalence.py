"""Whole-step compile trains exactly like eager: every optimizer x scheduler x
clipping recipe on a small MLP, and whole recipes (CNN, char-LMs, GPT block,
accumulation, frozen layers, train/eval switches).

Each case runs the same step function eagerly and compiled from the same seed
and compares per-step losses, returned values, final parameters and buffers
(rtol 2e-4), and checks that a compiled plan really ran: no graph break, no
eager fallback, and later steps served by a plan rather than a fresh trace.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import gcompile as torch
from gcompile import nn
from gcompile.compiler.api import GraphBreakWarning, RecompileLimitWarning
from gcompile.optim import lr_scheduler as S

RTOL, ATOL = 2e-4, 1e-5  # atol: elements near 0 after cancellation (FMA in kernels)
STEPS = 6

OPTIMIZERS = {
    "SGD": lambda p: torch.optim.SGD(p, lr=0.05),
    "SGD-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "SGD-nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "Adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "Adam-amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True, weight_decay=1e-2),
    "AdamW": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "Adamax": lambda p: torch.optim.Adamax(p, lr=1e-2, weight_decay=1e-2),
    "NAdam": lambda p: torch.optim.NAdam(p, lr=1e-2),
    "RAdam": lambda p: torch.optim.RAdam(p, lr=1e-2),
    "RMSprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5, centered=True),
    "Adagrad": lambda p: torch.optim.Adagrad(p, lr=0.05, lr_decay=1e-2),
    "Adadelta": lambda p: torch.optim.Adadelta(p, lr=1.0, rho=0.8),
}


def _cycles_momentum(opt) -> bool:
    return "momentum" in opt.defaults or "betas" in opt.defaults


SCHEDULERS = {
    "none": None,
    "StepLR": lambda o: S.StepLR(o, step_size=2, gamma=0.5),
    "OneCycleLR": lambda o: S.OneCycleLR(o, max_lr=0.05, total_steps=STEPS + 1,
                                         cycle_momentum=_cycles_momentum(o)),
    "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, T_max=STEPS),
    "ReduceLROnPlateau": lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=0),
}

CLIPPING = {
    "none": None,
    "norm": lambda ps: nn.utils.clip_grad_norm_(ps, max_norm=0.05),
    "value": lambda ps: nn.utils.clip_grad_value_(ps, 0.01),
}


def _close(a, b, what):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=RTOL, atol=ATOL, err_msg=what)


def _state_arrays(model, opt):
    out = {f"param {n}": p.detach().numpy().copy() for n, p in model.named_parameters()}
    out.update({f"buffer {n}": b.numpy().copy() for n, b in model.named_buffers()})
    for i, p in enumerate(opt.param_groups[0]["params"]):
        for k, v in opt.state[p].items():
            if isinstance(v, torch.Tensor):
                out[f"state {i} {k}"] = v.detach().numpy().copy()
    return out


def run_recipe(make, steps=STEPS, sched_step=None, between=None):
    """``make()`` -> (model, opt, sched, step_fn, batches); runs it eagerly and
    compiled and compares everything. ``sched_step(sched, ret)`` steps the
    scheduler outside the step; ``between(model, i)`` runs between steps."""
    results = []
    for compiled in (False, True):
        model, opt, sched, step_fn, batches = make()
        fn = torch.compile(step_fn) if compiled else step_fn
        rets = []
        with warnings.catch_warnings():
            warnings.simplefilter("error", GraphBreakWarning)
            warnings.simplefilter("error", RecompileLimitWarning)
            for i in range(steps):
                if between is not None:
                    between(model, i)
                ret = fn(*batches[i % len(batches)])
                rets.append(ret)
                if sched is not None:
                    sched_step(sched, ret) if sched_step else sched.step()
        results.append((model, opt, rets, fn))
    (m_e, o_e, r_e, _), (m_c, o_c, r_c, fn) = results
    assert not fn.graph_breaks and not fn._eager, "the compiled step fell back to eager"
    assert fn.entries, "no compiled plan was built"
    assert fn.num_traces < steps, "every step traced: no call ran a plan"
    for i, (a, b) in enumerate(zip(r_e, r_c)):
        a = a if isinstance(a, tuple) else (a,)
        b = b if isinstance(b, tuple) else (b,)
        for j, (x, y) in enumerate(zip(a, b)):
            _close(x.detach().numpy(), y.detach().numpy(), f"step {i} returned value {j}")
    se, sc = _state_arrays(m_e, o_e), _state_arrays(m_c, o_c)
    assert se.keys() == sc.keys()
    for k in se:
        _close(se[k], sc[k], k)
    return fn


def plain_step(model, opt, crit, set_to_none: bool = True):
    """The ordinary training step: zero the grads, forward, backward, update."""
    def step(x, y):
        opt.zero_grad(set_to_none=set_to_none)
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


# ---- optimizer x scheduler x clipping on a small MLP ------------------------------------
def _mlp_case(opt_name, sched_name, clip_name):
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        opt = OPTIMIZERS[opt_name](model.parameters())
        sched = SCHEDULERS[sched_name](opt) if SCHEDULERS[sched_name] else None
        clip = CLIPPING[clip_name]
        crit = nn.CrossEntropyLoss()

        def step(x, y):
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            norm = clip(model.parameters()) if clip else None
            opt.step()
            return (loss, norm) if norm is not None else loss

        g = torch.Generator().manual_seed(1)
        batches = [(torch.randn(10, 6, generator=g), torch.randint(0, 3, (10,), generator=g))
                   for _ in range(2)]
        return model, opt, sched, step, batches
    return make


def _plateau_step(sched, ret):
    loss = ret[0] if isinstance(ret, tuple) else ret
    sched.step(loss.item())


@pytest.mark.parametrize("clip_name", list(CLIPPING))
@pytest.mark.parametrize("sched_name", list(SCHEDULERS))
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_optimizer_scheduler_clipping(opt_name, sched_name, clip_name):
    run_recipe(_mlp_case(opt_name, sched_name, clip_name),
               sched_step=_plateau_step if sched_name == "ReduceLROnPlateau" else None)


# ---- hyper-parameters changed by hand --------------------------------------------------
def test_hand_edits_to_every_group_value_match_eager_without_recompiling():
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
        crit = nn.MSELoss()

        step = plain_step(model, opt, crit)
        g = torch.Generator().manual_seed(1)
        return model, opt, None, step, [(torch.randn(5, 6, generator=g),
                                         torch.randn(5, 3, generator=g))]

    runs = []
    for compiled in (False, True):
        model, opt, _, step_fn, batches = make()
        fn = torch.compile(step_fn) if compiled else step_fn
        losses = []
        for i in range(8):
            g = opt.param_groups[0]
            if i == 2:
                g["betas"] = (0.5, 0.9)
            if i == 3:
                g["eps"] = 1e-3
            if i == 4:
                g["weight_decay"] = 0.3  # non-zero -> non-zero: same graph
            if i == 5:
                g["lr"] = 0.1
            losses.append(fn(*batches[0]).item())
        runs.append((model, losses, fn))
    (m_e, l_e, _), (m_c, l_c, fn) = runs
    np.testing.assert_allclose(l_c, l_e, rtol=RTOL)
    for p, q in zip(m_e.parameters(), m_c.parameters()):
        _close(p.detach().numpy(), q.detach().numpy(), "param")
    assert fn.num_traces <= 2  # float edits are run-time inputs: no retrace


def test_a_flag_change_retraces_and_matches():
    """weight_decay 0 -> non-zero and nesterov change the graph: guarded, retraced."""
    def run(compiled):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = torch.randn(3, 4), torch.randn(3, 2)

        def step():
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        fn = torch.compile(step) if compiled else step
        for i in range(6):
            if i == 2:
                opt.param_groups[0]["weight_decay"] = 0.1
            if i == 4:
                opt.param_groups[0]["nesterov"] = True
            fn()
        return model, fn
    m_e, _ = run(False)
    m_c, fn = run(True)
    for p, q in zip(m_e.parameters(), m_c.parameters()):
        _close(p.detach().numpy(), q.detach().numpy(), "param")
    assert fn.num_traces >= 3


# ---- whole recipes -------------------------------------------------------------------
def test_cnn_batchnorm_sgd_nesterov_onecycle():
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
        sched = S.OneCycleLR(opt, max_lr=0.1, total_steps=STEPS + 1)
        crit = nn.CrossEntropyLoss()

        step = plain_step(model, opt, crit)
        g = torch.Generator().manual_seed(2)
        batches = [(torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 5, (6,), generator=g))
                   for _ in range(2)]
        return model, opt, sched, step, batches
    run_recipe(make)


class _CharLM(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.rnn = cell(8, 12, batch_first=True)
        self.head = nn.Linear(12, 11)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.head(out)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_char_lm_adam_steplr_clipping(cell):
    def make():
        torch.manual_seed(0)
        model = _CharLM(getattr(nn, cell))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        sched = S.StepLR(opt, step_size=2, gamma=0.5)
        crit = nn.CrossEntropyLoss()

        def step(x, y):
            opt.zero_grad()
            logits = model(x)
            loss = crit(logits.reshape(-1, 11), y.reshape(-1))
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            return loss, norm
        g = torch.Generator().manual_seed(3)
        data = torch.randint(0, 11, (4, 9), generator=g)
        return model, opt, sched, step, [(data[:, :-1], data[:, 1:])]
    run_recipe(make)


class _GPTBlock(nn.Module):
    def __init__(self, vocab=13, d=16, heads=2, T=6):
        super().__init__()
        self.heads = heads
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(T, d) * 0.02)
        self.ln1, self.ln2, self.lnf = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        # no qkv bias: the key bias has an exactly-zero gradient (softmax ignores a
        # shift shared by a row), and Adam would blow its rounding noise up to +-lr
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        self.register_buffer("mask", torch.tril(torch.ones(T, T)).bool())

    def forward(self, idx):
        B, T = idx.shape
        x = self.tok(idx) + self.pos[:T]
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(h.shape[-1], dim=-1)
        hd = h.shape[-1] // self.heads

        def split(t):
            return t.reshape(B, T, self.heads, hd).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        att = (q @ k.transpose(-2, -1)) * hd ** -0.5
        att = att.masked_fill(~self.mask[:T, :T], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.proj(y)
        x = x + self.mlp(self.ln2(x))
        return self.head(self.lnf(x))


def test_gpt_block_tied_adamw_cosine_clipping_two_groups():
    def make():
        torch.manual_seed(0)
        model = _GPTBlock()
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=3e-3)
        sched = S.CosineAnnealingLR(opt, T_max=STEPS)
        crit = nn.CrossEntropyLoss()

        def step(x, y):
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = crit(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss
        g = torch.Generator().manual_seed(4)
        data = torch.randint(0, 13, (3, 7), generator=g)
        return model, opt, sched, step, [(data[:, :-1], data[:, 1:])]
    run_recipe(make)


def _small(opt_fn=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    return model, opt_fn(model.parameters())


def test_gradient_accumulation_over_two_micro_batches():
    def make():
        model, opt = _small(lambda p: torch.optim.Adam(p, lr=1e-2))
        crit = nn.MSELoss()

        def step(x, y):
            opt.zero_grad()
            total = 0
            for xb, yb in ((x[:4], y[:4]), (x[4:], y[4:])):
                loss = crit(model(xb), yb) / 2
                loss.backward()
                total = total + loss.detach()
            opt.step()
            return total
        g = torch.Generator().manual_seed(5)
        return model, opt, None, step, [(torch.randn(8, 5, generator=g),
                                         torch.randn(8, 2, generator=g))]
    run_recipe(make)


def test_frozen_first_layer_and_freezing_midway():
    def make():
        model, opt = _small(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1))
        model[0].weight.requires_grad_(False)
        crit = nn.MSELoss()

        step = plain_step(model, opt, crit)
        g = torch.Generator().manual_seed(6)
        return model, opt, None, step, [(torch.randn(4, 5, generator=g),
                                         torch.randn(4, 2, generator=g))]

    def between(model, i):
        if i == 3:  # freeze the rest of the first layer: it must stop moving
            model[0].bias.requires_grad_(False)
    fn = run_recipe(make, between=between)
    assert fn.num_traces >= 2


def test_zero_grad_set_to_none_false():
    def make():
        model, opt = _small()
        crit = nn.MSELoss()

        step = plain_step(model, opt, crit, set_to_none=False)
        g = torch.Generator().manual_seed(7)
        return model, opt, None, step, [(torch.randn(4, 5, generator=g),
                                         torch.randn(4, 2, generator=g))]
    run_recipe(make)


def test_train_eval_alternating_between_calls():
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        crit = nn.MSELoss()

        step = plain_step(model, opt, crit)
        g = torch.Generator().manual_seed(8)
        return model, opt, None, step, [(torch.randn(6, 5, generator=g),
                                         torch.randn(6, 2, generator=g))]

    def between(model, i):
        model.train(i % 2 == 0)
    fn = run_recipe(make, steps=8, between=between)
    assert fn.num_traces <= 4  # one plan per mode (plus state creation), then reused


def test_lion_from_a_test_file_compiles_under_onecycle():
    """An optimizer written the ordinary way, with no compiler-side code, compiles
    and matches eager while OneCycleLR cycles its lr and beta1."""
    class Lion(torch.optim.Optimizer):
        def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
            super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    state = self.state[p]
                    if len(state) == 0:
                        state["exp_avg"] = torch.zeros_like(p)
                    exp_avg = state["exp_avg"]
                    beta1, beta2 = group["betas"]
                    update = exp_avg * beta1 + p.grad * (1 - beta1)
                    p.add_(torch.sign(update), alpha=-group["lr"])
                    exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)

    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))
        opt = Lion(model.parameters(), lr=1e-3, weight_decay=0.1)
        sched = S.OneCycleLR(opt, max_lr=1e-2, total_steps=STEPS + 1)
        crit = nn.MSELoss()

        step = plain_step(model, opt, crit)
        g = torch.Generator().manual_seed(9)
        return model, opt, sched, step, [(torch.randn(4, 5, generator=g),
                                          torch.randn(4, 2, generator=g))]
    fn = run_recipe(make)
    assert fn.num_traces <= 2


def test_explain_does_not_train():
    model, opt = _small(lambda p: torch.optim.Adam(p, lr=0.1))
    crit = nn.MSELoss()
    x, y = torch.randn(4, 5), torch.randn(4, 2)

    def step():
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        return loss

    step()  # optimizer state exists, grads exist
    before = copy.deepcopy((model.state_dict(), opt.state_dict()))
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    ex = torch.explain(step)
    assert ex.num_kernels > 0
    after = (model.state_dict(), opt.state_dict())
    for k, v in before[0].items():
        np.testing.assert_array_equal(after[0][k].numpy(), v.numpy())
    for i, st in before[1]["state"].items():
        for k, v in st.items():
            np.testing.assert_array_equal(after[1]["state"][i][k].numpy(), v.numpy())
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(p.grad.numpy(), g)
    # and a fresh optimizer gets no state from explaining a step
    model2, opt2 = _small(lambda p: torch.optim.Adam(p, lr=0.1))

    def step2():
        opt2.zero_grad()
        crit(model2(x), y).backward()
        opt2.step()
    w0 = model2[0].weight.detach().numpy().copy()
    torch.explain(step2)
    assert len(opt2.state) == 0
    assert all(p.grad is None for p in model2.parameters())
    np.testing.assert_array_equal(model2[0].weight.detach().numpy(), w0)
