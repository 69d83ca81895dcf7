#!/usr/bin/env python
"""Kernel speed and memory: kinfuse's Triton ops against their torch twins and the stock code.

For each op, at the layer shapes of Llama-2-7B and Llama-3-8B, one forward + backward step of

  triton  kinfuse.kernels.<op file>         (the Triton op)
  torch   kinfuse.kernels.reference.<op>    (its pure-torch twin)
  stock   what transformers / peft / bitsandbytes run today:
            rms_norm                    HF LlamaRMSNorm
            apply_rotary                transformers' apply_rotary_pos_emb
            swiglu                      LlamaMLP's act_fn(gate) * up
            fused_linear_cross_entropy  lm_head + F.cross_entropy on the full fp32 logits
            nf4_dequantize              bitsandbytes.functional.dequantize_4bit (forward only)
            qlora_linear                peft LoRA over bitsandbytes Linear4bit

is timed with triton.testing.do_bench (median ms, gradients reset between runs) and its peak
CUDA memory above the inputs is taken from one more step. Every implementation's outputs and
gradients are also compared with the twin's (max error relative to the largest entry), so a
GPU run checks bf16 correctness at real shapes too. nf4_dequantize / qlora_linear are
benchmarked when their files exist in this build.

    python benchmarks/bench_kernels.py                          # CUDA: both archs, every op
    python benchmarks/bench_kernels.py --arch llama-3-8b --ops swiglu,rms_norm
    python benchmarks/bench_kernels.py --smoke                  # tiny shapes: checks this script

Writes benchmarks/results/kernels-<device>-<UTC time>.json and prints a table. Without CUDA
it exits with a message (no numbers), except with --smoke, which runs tiny shapes on the CPU
under Triton's interpreter (TRITON_INTERPRET=1): its times say nothing about the kernels.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import math
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import git_commit, version, write_result  # noqa: E402

RESULTS = HERE / "results"

ARCHS: dict[str, dict[str, Any]] = {
    "llama-2-7b": dict(hidden=4096, intermediate=11008, vocab=32000, heads=32, kv_heads=32, head_dim=128,
                       rope_theta=10000.0, eps=1e-5),
    "llama-3-8b": dict(hidden=4096, intermediate=14336, vocab=128256, heads=32, kv_heads=8, head_dim=128,
                       rope_theta=500000.0, eps=1e-5),
}
# Tiny shapes for --smoke: none a multiple of a block size, so masking paths run too.
SMOKE_ARCH = dict(hidden=72, intermediate=136, vocab=523, heads=4, kv_heads=2, head_dim=24, rope_theta=10000.0,
                  eps=1e-5)

OPS = ("rms_norm", "apply_rotary", "swiglu", "fused_linear_cross_entropy", "nf4_dequantize", "qlora_linear")
LORA_R, LORA_ALPHA = 64, 16  # bench_train's LoRA; dropout 0 here so that outputs can be compared
# Error of an implementation against the twin, relative to the twin's largest entry, above
# which the JSON marks it as not matching (bf16 keeps 8 mantissa bits).
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2}


# -- cases ---------------------------------------------------------------------------------


@dataclass
class Impl:
    """One implementation of a case: step() runs forward + backward and returns the forward
    outputs; leaves are the tensors whose .grad the step fills, in the same order for every
    implementation of the case."""

    step: Callable[[], tuple[Any, ...]]
    leaves: list[Any] = field(default_factory=list)


@dataclass
class Case:
    op: str
    arch: str
    shape: dict[str, Any]
    impls: dict[str, Callable[[], Impl]]  # name -> builder (built lazily: a failing one is recorded)
    note: str = ""


def _randn(shape, dtype, device, scale=1.0, grad=False):
    import torch

    x = (torch.randn(shape, device=device, dtype=torch.float32) * scale).to(dtype)
    return x.requires_grad_(grad)


def _backward(outs, grads) -> None:
    import torch

    torch.autograd.backward(list(outs), list(grads))


def case_rms_norm(arch: str, a: dict, tokens: int, seq: int, dtype, device) -> Case:
    import torch
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from kinfuse.kernels import reference
    from kinfuse.kernels.rmsnorm import rms_norm

    h = a["hidden"]
    x = _randn((tokens, h), dtype, device, grad=True)  # (N, H)
    w = (1 + 0.1 * torch.randn(h, device=device)).to(dtype)  # (H,), frozen as in QLoRA
    dy = _randn((tokens, h), dtype, device)

    def functional(fn):
        def build() -> Impl:
            def step():
                y = fn(x, w, a["eps"])
                y.backward(dy)
                return (y,)
            return Impl(step, [x])
        return build

    def stock() -> Impl:
        module = LlamaRMSNorm(h, eps=a["eps"]).to(device, dtype)
        module.weight.requires_grad_(False)
        module.weight.copy_(w)

        def step():
            y = module(x)
            y.backward(dy)
            return (y,)
        return Impl(step, [x])

    return Case("rms_norm", arch, {"x": [tokens, h]}, {
        "triton": functional(rms_norm), "torch": functional(reference.rms_norm), "stock": stock},
        note="weight frozen (QLoRA): gradient for x only")


def case_apply_rotary(arch: str, a: dict, tokens: int, seq: int, dtype, device) -> Case:
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from kinfuse.kernels import reference
    from kinfuse.kernels.rope import apply_rotary

    b, t, d, hq, hk = max(1, tokens // seq), min(seq, tokens), a["head_dim"], a["heads"], a["kv_heads"]
    q_proj = _randn((b, t, hq * d), dtype, device, grad=True)  # q_proj's output (B, T, Hq*D)
    k_proj = _randn((b, t, hk * d), dtype, device, grad=True)
    inv = 1.0 / (a["rope_theta"] ** (torch.arange(0, d, 2, device=device).float() / d))  # (D/2,)
    freqs = torch.arange(t, device=device).float()[:, None] * inv  # (T, D/2)
    emb = torch.cat([freqs, freqs], -1)[None].expand(b, t, d)  # (B, T, D), as LlamaRotaryEmbedding
    cos, sin = emb.cos().to(dtype).contiguous(), emb.sin().to(dtype).contiguous()
    dq = _randn((b, hq, t, d), dtype, device)
    dk = _randn((b, hk, t, d), dtype, device)

    def build(fn):
        def make() -> Impl:
            def step():
                # As in LlamaAttention: view (B, T, H, D), transpose to (B, H, T, D). The clone
                # gives the in-place op a fresh non-leaf each step; every implementation pays it.
                q = q_proj.clone().view(b, t, hq, d).transpose(1, 2)
                k = k_proj.clone().view(b, t, hk, d).transpose(1, 2)
                qe, ke = fn(q, k, cos, sin)
                _backward((qe, ke), (dq, dk))
                return qe, ke
            return Impl(step, [q_proj, k_proj])
        return make

    return Case("apply_rotary", arch, {"q": [b, hq, t, d], "k": [b, hk, t, d]}, {
        "triton": build(apply_rotary), "torch": build(reference.apply_rotary), "stock": build(apply_rotary_pos_emb)},
        note="each step includes a clone of q and k (all implementations)")


def case_swiglu(arch: str, a: dict, tokens: int, seq: int, dtype, device) -> Case:
    from transformers.activations import ACT2FN

    from kinfuse.kernels import reference
    from kinfuse.kernels.swiglu import swiglu

    i = a["intermediate"]
    gate = _randn((tokens, i), dtype, device, scale=2.0, grad=True)  # (N, I)
    up = _randn((tokens, i), dtype, device, grad=True)
    dy = _randn((tokens, i), dtype, device)
    act = ACT2FN["silu"]

    def build(fn):
        def make() -> Impl:
            def step():
                y = fn(gate, up)
                y.backward(dy)
                return (y,)
            return Impl(step, [gate, up])
        return make

    return Case("swiglu", arch, {"gate": [tokens, i], "up": [tokens, i]}, {
        "triton": build(swiglu), "torch": build(reference.swiglu), "stock": build(lambda g, u: act(g) * u)})


def case_fused_linear_cross_entropy(arch: str, a: dict, tokens: int, seq: int, dtype, device) -> Case:
    import torch
    import torch.nn.functional as F

    from kinfuse.kernels import reference
    from kinfuse.kernels.cross_entropy import fused_linear_cross_entropy

    h, v = a["hidden"], a["vocab"]
    hidden = _randn((tokens, h), dtype, device, grad=True)  # (N, H): final norm output
    weight = _randn((v, h), dtype, device, scale=0.02)  # (V, H) lm_head, frozen (QLoRA)
    targets = torch.randint(0, v, (tokens,), device=device)

    def build(fn):
        def make() -> Impl:
            def step():
                loss = fn(hidden, weight, targets)
                loss.backward()
                return (loss,)
            return Impl(step, [hidden])
        return make

    def stock(hd, w, t):  # what QLoRATrainer.loss_sum does today
        return F.cross_entropy(F.linear(hd, w).float(), t, reduction="sum")

    return Case("fused_linear_cross_entropy", arch, {"hidden": [tokens, h], "weight": [v, h]}, {
        "triton": build(fused_linear_cross_entropy), "torch": build(reference.fused_linear_cross_entropy),
        "stock": build(stock)}, note="reduction sum, lm_head frozen: gradient for hidden only")


def _linear_shapes(a: dict) -> list[tuple[str, int, int]]:
    """The distinct (out, in) projection shapes of a decoder layer, named by a module that has it
    (--smoke: gate_proj's alone, non-square, enough to check the script)."""
    h, i, kv = a["hidden"], a["intermediate"], a["kv_heads"] * a["head_dim"]
    if a is SMOKE_ARCH:
        return [("gate_proj", i, h)]
    seen, out = set(), []
    for name, o, n in [("q_proj", h, h), ("k_proj", kv, h), ("gate_proj", i, h), ("down_proj", h, i)]:
        if (o, n) not in seen:
            seen.add((o, n))
            out.append((name, o, n))
    return out


def _nf4_weight(out_f: int, in_f: int, dtype, device):
    """A Params4bit holding a random (out, in) weight, NF4 with double quantization (QLoRA's)."""
    import bitsandbytes as bnb

    w = _randn((out_f, in_f), dtype, device, scale=0.02)
    param = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=True, blocksize=64)
    # bitsandbytes quantizes when the parameter moves to its device ("cuda" or "cpu").
    return param.to(device)


def cases_nf4_dequantize(arch: str, a: dict, tokens: int, seq: int, dtype, device) -> list[Case]:
    import bitsandbytes.functional as bnbf

    from kinfuse.kernels import reference
    from kinfuse.kernels.nf4 import nf4_dequantize

    cases = []
    for name, out_f, in_f in _linear_shapes(a):
        def shape_case(out_f=out_f, in_f=in_f) -> dict[str, Callable[[], Impl]]:
            holder: dict[str, Any] = {}

            def weight():
                if "w" not in holder:
                    holder["w"] = _nf4_weight(out_f, in_f, dtype, device)
                return holder["w"]

            def build(fn):
                def make() -> Impl:
                    w = weight()
                    return Impl(lambda: (fn(w),), [])
                return make

            return {"triton": build(lambda w: nf4_dequantize(w, dtype=dtype)),
                    "torch": build(lambda w: reference.nf4_dequantize(w, dtype=dtype)),
                    "stock": build(lambda w: bnbf.dequantize_4bit(w.data, w.quant_state).to(dtype))}

        cases.append(Case("nf4_dequantize", arch, {"module": name, "weight": [out_f, in_f]}, shape_case(),
                          note="forward only (the base weight is frozen); double-quantized absmax, blocksize 64"))
    return cases


def cases_qlora_linear(arch: str, a: dict, tokens: int, seq: int, dtype, device) -> list[Case]:
    import torch

    from kinfuse.kernels import reference
    from kinfuse.kernels.qlora_linear import qlora_linear

    scaling = LORA_ALPHA / LORA_R
    cases = []
    for name, out_f, in_f in _linear_shapes(a):
        def shape_case(out_f=out_f, in_f=in_f) -> dict[str, Callable[[], Impl]]:
            holder: dict[str, Any] = {}

            def tensors():
                if not holder:
                    holder["w"] = _nf4_weight(out_f, in_f, dtype, device)
                    holder["x"] = _randn((tokens, in_f), dtype, device, grad=True)  # (N, in) activations
                    # fp32 LoRA master weights, as QLoRATrainer keeps them; B non-zero so that every
                    # gradient is non-trivial.
                    holder["A"] = _randn((LORA_R, in_f), torch.float32, device, scale=0.01, grad=True)
                    holder["B"] = _randn((out_f, LORA_R), torch.float32, device, scale=0.01, grad=True)
                    holder["dy"] = _randn((tokens, out_f), dtype, device)
                return holder

            def autocast():
                return torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda")

            def build(fn):
                def make() -> Impl:
                    t = tensors()

                    def step():
                        with autocast():  # as QLoRATrainer runs its forward on CUDA
                            y = fn(t["x"], t["w"], t["A"], t["B"], scaling)
                        y.backward(t["dy"])
                        return (y,)
                    return Impl(step, [t["x"], t["A"], t["B"]])
                return make

            def stock() -> Impl:
                import bitsandbytes as bnb
                from peft import LoraConfig, get_peft_model

                t = tensors()
                base = bnb.nn.Linear4bit(in_f, out_f, bias=False, compute_dtype=dtype, quant_type="nf4",
                                         compress_statistics=True, device=device)
                base.weight = t["w"]

                class One(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.proj = base

                    def forward(self, x):
                        return self.proj(x)

                model = get_peft_model(One(), LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                                         target_modules=["proj"]))
                layer = model.base_model.model.proj
                lora_a, lora_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
                with torch.no_grad():
                    lora_a.copy_(t["A"])
                    lora_b.copy_(t["B"])
                lora_a.data, lora_b.data = lora_a.data.float(), lora_b.data.float()

                def step():
                    with autocast():
                        y = model(t["x"])
                    y.backward(t["dy"])
                    return (y,)
                return Impl(step, [t["x"], lora_a, lora_b])

            return {"triton": build(qlora_linear), "torch": build(reference.qlora_linear), "stock": stock}

        cases.append(Case("qlora_linear", arch, {"module": name, "x": [tokens, in_f], "weight": [out_f, in_f],
                                                 "lora_r": LORA_R}, shape_case(),
                          note="NF4 + double quant, LoRA r=64 alpha=16 dropout 0, fp32 LoRA weights, autocast on CUDA; "
                               "gradients for x, A, B"))
    return cases


BUILDERS: dict[str, Callable[..., Any]] = {
    "rms_norm": case_rms_norm,
    "apply_rotary": case_apply_rotary,
    "swiglu": case_swiglu,
    "fused_linear_cross_entropy": case_fused_linear_cross_entropy,
    "nf4_dequantize": cases_nf4_dequantize,
    "qlora_linear": cases_qlora_linear,
}
OP_MODULE = {"rms_norm": "rmsnorm", "apply_rotary": "rope", "swiglu": "swiglu",
             "fused_linear_cross_entropy": "cross_entropy", "nf4_dequantize": "nf4", "qlora_linear": "qlora_linear"}


# -- measuring -----------------------------------------------------------------------------


def _outputs(impl: Impl) -> list[Any]:
    """One step from zeroed gradients: forward outputs then the leaves' gradients, as fp32."""
    for x in impl.leaves:
        x.grad = None
    # Copies: .float() of an fp32 tensor is the tensor itself, and later steps accumulate into
    # the same .grad in place (do_bench's warm-up does not reset it), which would move the
    # reference the others are checked against.
    outs = [o.detach().float().clone() for o in impl.step()]
    return outs + [x.grad.detach().float().clone() for x in impl.leaves]


def _rel_err(got: list[Any], want: list[Any]) -> float:
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        if g.shape != w.shape:
            return math.inf
        scale = max(w.abs().max().item(), 1e-12)
        worst = max(worst, (g - w).abs().max().item() / scale)
    return worst


def _measure(impl: Impl, device, warmup_ms: int, rep_ms: int) -> dict[str, Any]:
    import torch

    if device.type != "cuda":  # --smoke on the CPU interpreter: one timed step, no memory figure
        for x in impl.leaves:
            x.grad = None
        t = time.perf_counter()
        impl.step()
        return {"ms": (time.perf_counter() - t) * 1e3, "peak_extra_bytes": None}
    from triton.testing import do_bench

    ms = do_bench(impl.step, warmup=warmup_ms, rep=rep_ms, grad_to_none=impl.leaves, return_mode="median")
    for x in impl.leaves:
        x.grad = None
    gc.collect()
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    impl.step()
    torch.cuda.synchronize(device)
    return {"ms": ms, "peak_extra_bytes": torch.cuda.max_memory_allocated(device) - base}


def run_case(case: Case, device, dtype_name: str, warmup_ms: int, rep_ms: int) -> dict[str, Any]:
    import torch

    row: dict[str, Any] = {"op": case.op, "arch": case.arch, "shape": case.shape, "impls": {}}
    if case.note:
        row["note"] = case.note
    want = None
    for name in ("torch", "triton", "stock"):  # the twin first: it is what the others are checked against
        r: dict[str, Any] = {}
        try:
            impl = case.impls[name]()
            got = _outputs(impl)
            if name == "torch":
                want = got
            if want is not None:
                r["max_rel_err_vs_torch"] = _rel_err(got, want)
                r["matches_torch"] = r["max_rel_err_vs_torch"] <= TOLERANCE[dtype_name]
            del got
            r.update(_measure(impl, device, warmup_ms, rep_ms))
            r["ok"] = True
        except Exception as e:  # noqa: BLE001  (one failing implementation must not end the run)
            r = {"ok": False, "error": f"{type(e).__name__}: {e}"[:1000], "traceback": traceback.format_exc()[-2000:]}
        finally:
            impl = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        row["impls"][name] = r
    t = row["impls"]
    ok = {k: v for k, v in t.items() if v.get("ok")}
    if "triton" in ok and device.type == "cuda":  # interpreter times compare nothing
        for other in ("torch", "stock"):
            if other in ok:
                row[f"speedup_vs_{other}"] = ok[other]["ms"] / ok["triton"]["ms"] if ok["triton"]["ms"] else None
                pt, po = ok["triton"]["peak_extra_bytes"], ok[other]["peak_extra_bytes"]
                row[f"memory_ratio_vs_{other}"] = pt / po if pt is not None and po else None
    return row


# -- report --------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    mib = 2**20
    lines = [f"{report['device']}  {report['dtype']}  tokens {report['tokens']} (seq {report['seq']})"
             + ("  SMOKE: CPU interpreter, times mean nothing" if report["smoke"] else ""),
             f"{'op':<27} {'arch':<10} {'shape':<22} {'triton ms':>9} {'torch ms':>9} {'stock ms':>9} "
             f"{'x stock':>7} {'MiB tri/stock':>15}  check"]
    for row in report["results"]:
        t = row["impls"]

        def ms(name):
            r = t.get(name, {})
            return f"{r['ms']:9.3f}" if r.get("ok") else f"{'FAIL':>9}"

        tri, st = t.get("triton", {}), t.get("stock", {})
        mem = "-"
        if tri.get("ok") and st.get("ok") and tri.get("peak_extra_bytes") is not None:
            mem = f"{tri['peak_extra_bytes'] / mib:.0f}/{st['peak_extra_bytes'] / mib:.0f}"
        speed = row.get("speedup_vs_stock")
        shape = row["shape"].get("module") or "x".join(map(str, next(iter(row["shape"].values()))))
        checks = [n for n in ("triton", "stock") if t.get(n, {}).get("ok") and not t[n].get("matches_torch")]
        check = "ok" if not checks and all(r.get("ok") for r in t.values()) else (
            "MISMATCH " + ",".join(checks) if checks else "FAILED " + ",".join(n for n, r in t.items() if not r.get("ok")))
        lines.append(f"{row['op']:<27} {row['arch']:<10} {shape:<22} {ms('triton')} {ms('torch')} {ms('stock')} "
                     f"{(f'{speed:.2f}x' if speed else '-'):>7} {mem:>15}  {check}")
    for line in report.get("skipped", []):
        lines.append(f"skipped: {line}")
    return "\n".join(lines)


def _available(op: str) -> str | None:
    """None when the op's Triton file is in this build, else why not."""
    import importlib.util

    name = f"kinfuse.kernels.{OP_MODULE[op]}"
    if importlib.util.find_spec(name) is None:
        return f"{op}: {name.replace('.', '/')}.py is not in this build"
    return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCHS), action="append", help="repeatable (default: both)")
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    p.add_argument("--tokens", type=int, default=4096, help="tokens per step, N = micro-batch x block (default 4096)")
    p.add_argument("--seq", type=int, default=2048, help="block length T for RoPE; batch = tokens / seq")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--warmup-ms", type=int, default=25, help="do_bench warm-up time per measurement")
    p.add_argument("--rep-ms", type=int, default=200, help="do_bench timed repetitions per measurement")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes, one step each, fp32; on the CPU under TRITON_INTERPRET=1 when no GPU: checks "
                        "that this script and the ops run and agree, measures nothing")
    a = p.parse_args(argv)
    ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        p.error(f"--ops: unknown {', '.join(unknown)}; choose from {', '.join(OPS)}")

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not a.smoke:
        p.exit(2, "bench_kernels.py times CUDA kernels and no CUDA GPU is visible here "
                  "(torch.cuda.is_available() is False): run it on a GPU machine, or pass --smoke to check the "
                  "script on this CPU (no timings worth reading)\n")
    if not cuda:
        # The Triton ops run on a CPU only in Triton's interpreter, chosen when the kernels are
        # defined: set it before kinfuse.kernels' Triton files are imported.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    try:
        import triton
    except ImportError:
        p.exit(2, "bench_kernels.py needs triton: pip install 'kinfuse[kernels]'\n")

    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    dtype_name = "float32" if a.smoke else a.dtype
    dtype = getattr(torch, dtype_name)
    if a.smoke:
        archs = {"smoke": SMOKE_ARCH}
        tokens, seq = 13, 13  # few rows: the interpreter runs each program in Python
    else:
        archs = {name: ARCHS[name] for name in (a.arch or sorted(ARCHS))}
        tokens, seq = a.tokens, a.seq
    torch.manual_seed(0)

    results, skipped = [], []
    for op in ops:
        why = _available(op)
        if why:
            skipped.append(why)
            continue
        for arch, shapes in archs.items():
            print(f"[bench] {op} {arch} ...", file=sys.stderr, flush=True)
            try:
                built = BUILDERS[op](arch, shapes, tokens, seq, dtype, device)
            except Exception as e:  # noqa: BLE001  (e.g. bitsandbytes without GPU support)
                results.append({"op": op, "arch": arch, "error": f"{type(e).__name__}: {e}"[:1000],
                                "traceback": traceback.format_exc()[-2000:], "impls": {}})
                continue
            for case in built if isinstance(built, list) else [built]:
                results.append(run_case(case, device, dtype_name, a.warmup_ms, a.rep_ms))
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()

    device_name = torch.cuda.get_device_name(device) if cuda else "cpu (Triton interpreter)"
    report = {
        "device": device_name,
        "device_kind": device.type,
        "smoke": a.smoke,
        "dtype": dtype_name,
        "tokens": tokens,
        "seq": seq,
        "archs": archs,
        "do_bench": {"warmup_ms": a.warmup_ms, "rep_ms": a.rep_ms, "return_mode": "median"},
        "torch": version("torch"),
        "triton": getattr(triton, "__version__", None) or version("triton"),
        "transformers": version("transformers"),
        "peft": version("peft"),
        "bitsandbytes": version("bitsandbytes"),
        "cuda": torch.version.cuda,
        "git_commit": git_commit(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join(["python", "benchmarks/bench_kernels.py", *argv]),
        "notes": [
            "ms: median of triton.testing.do_bench over forward + backward (forward only for nf4_dequantize), "
            "gradients set to None before each run, L2 cache flushed by do_bench",
            "peak_extra_bytes: torch.cuda.max_memory_allocated during one more step minus memory_allocated "
            "before it (inputs and weights excluded; outputs, saved tensors, gradients included)",
            "speedup_vs_X = X ms / triton ms (above 1: the Triton op is faster); memory_ratio_vs_X = triton "
            "peak_extra_bytes / X's (below 1: the Triton op uses less)",
            f"max_rel_err_vs_torch: max |impl - twin| / max |twin| over the outputs and gradients; matches_torch: "
            f"at most {TOLERANCE[dtype_name]} for {dtype_name}",
        ] + (["SMOKE RUN: tiny shapes on the CPU interpreter; times are one un-warmed step and say nothing "
              "about the kernels"] if a.smoke and not cuda else []),
        "skipped": skipped,
        "results": results,
    }
    path = write_result(report, a.results_dir, f"kernels-{'smoke-' if a.smoke else ''}{device.type}")
    report["_path"] = str(path)
    print(table(report))
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
