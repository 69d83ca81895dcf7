"""benchmarks/bench_kernels.py --smoke: every op runs through the script at tiny shapes (on a
CPU under Triton's interpreter) and agrees with its torch twin; without CUDA and without
--smoke the script refuses rather than print numbers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="bench_kernels.py needs triton (pip install 'kinfuse[kernels]')")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_kernels.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_kernels", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


# About 8 s of CPU on one core; no tighter timeout than the suite's (a shared machine stretches wall time).
def test_smoke_runs_every_op_and_checks_it(bench, tmp_path):
    report = bench.main(["--smoke", "--results-dir", str(tmp_path)])
    path = Path(report["_path"])
    assert path.parent == tmp_path and path.name.startswith("kernels-smoke-")
    saved = json.loads(path.read_text())
    for key in ("device", "torch", "triton", "git_commit", "dtype", "tokens", "results", "notes", "command"):
        assert key in saved, key
    assert saved["smoke"] is True
    ran = {row["op"] for row in saved["results"]}
    assert ran | {s.split(":")[0] for s in saved["skipped"]} == set(bench.OPS)
    assert {"rms_norm", "apply_rotary", "swiglu", "fused_linear_cross_entropy"} <= ran
    for row in saved["results"]:
        assert "error" not in row, row
        for name in ("triton", "torch", "stock"):
            r = row["impls"][name]
            assert r["ok"], (row["op"], name, r.get("traceback"))
            assert r["matches_torch"], (row["op"], name, r["max_rel_err_vs_torch"])
            assert r["ms"] > 0
        if not torch.cuda.is_available():  # interpreter times compare nothing: no ratios are written
            assert "speedup_vs_stock" not in row


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_cuda(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--results-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no JSON, no numbers


def test_mismatch_is_flagged(bench):
    # The correctness column must catch a wrong implementation, not only crashes.
    x = torch.ones(3)
    assert bench._rel_err([x * 1.1], [x]) == pytest.approx(0.1)
    assert bench._rel_err([x], [x]) == 0.0
    assert bench._rel_err([torch.ones(2)], [x]) == float("inf")


def test_reference_outputs_are_copies_later_steps_cannot_move(bench):
    # fp32 leaves: .float() would hand back the live .grad, which the timing runs then
    # accumulate into in place (on the GPU this once flagged correct ops as mismatching).
    w = torch.randn(3, 4, requires_grad=True)
    x = torch.randn(5, 4)

    def step():
        y = x @ w.T
        y.sum().backward()
        return (y,)

    impl = bench.Impl(step, [w])
    out, grad = bench._outputs(impl)
    first = grad.clone()
    for _ in range(3):
        impl.step()  # accumulates into w.grad, as do_bench's warm-up does
    assert torch.equal(grad, first) and not torch.equal(w.grad, first)
