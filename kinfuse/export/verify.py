"""`verify()`: does an export serve the model kinfuse trained?

Two checks. The files: TGI's rules (tgi.check_files) and SageMaker's archive rules
(sagemaker.check_tar). The logits: the export is loaded by plain transformers (and peft) in a
fresh interpreter that never imports kinfuse (templates/verify_child.py), and its logits on a
few prompts are compared with those of the adapted model as kinfuse trained it (base, NF4 where
training quantized, plus the adapter through peft), within a tolerance that 16-bit rounding
stays inside and a wrong merge does not.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from .errors import ExportError, VerifyError
from .exporter import DTYPES, META_FILE
from .checkpoint import local_checkpoint
from .sagemaker import DEPLOY_FILE, check_tar
from .shapes import adapter_shape_problems, base_shapes, merged_shape_problems
from .source import Source, adapter_weights, load_source
from .tgi import LAUNCH_FILE, check_files, tgi_adapter_problems

PROMPTS = (
    "The capital of France is",
    "Water boils at one hundred degrees",
    "Here is a short story about a river that flows from the mountains to the sea.",
)
CHAT_PROMPT = "What is the capital of France?"


@dataclass
class VerifyReport:
    path: str
    kind: str  # "merged", "adapter" or "sagemaker"
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reference: str = ""  # what the export was compared with
    export_dtype: str = ""
    compute_dtype: str = ""
    prompts: int = 0
    max_abs_diff: float = float("nan")  # max |export logits - reference logits| over prompts and positions
    tolerance: float = float("nan")  # the allowed max |difference| (for the prompt with the least headroom)
    logit_scale: float = float("nan")  # max |reference logits|
    adapter_effect: float = float("nan")  # max |reference - base model without the adapter|
    top1_agreement: float = float("nan")  # fraction of positions whose argmax token agrees

    def summary(self) -> str:
        head = f"verify {self.path} ({self.kind}): {'OK' if self.ok else 'FAILED'}"
        lines = [head]
        if self.prompts:
            lines.append(
                f"  max |logit difference| {self.max_abs_diff:.4g} (tolerance {self.tolerance:.4g}; logit scale "
                f"{self.logit_scale:.3g}; the adapter itself moves logits by up to {self.adapter_effect:.3g}; "
                f"top-1 agreement {self.top1_agreement:.1%}) over {self.prompts} prompts"
            )
            lines.append(f"  export loaded as {self.export_dtype} weights, computed in {self.compute_dtype}; "
                         f"reference: {self.reference}")
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerance(scale: float, weights: str, compute: str) -> float:
    """Allowed max |Δlogit| for reference logits of magnitude `scale`.

    Wide enough for the rounding of a correct export (16-bit weights; fp16 keeps three more
    mantissa bits than bf16, so it is allowed a quarter as much), narrow enough that a LoRA
    scale off by a tenth, one module's LoRA missing or one weight zeroed fails. fp32 weights
    (adapters) are allowed float error only."""
    if compute in ("bfloat16", "float16"):  # the export was run in 16 bits too (too large for fp32 here)
        rtol, atol = (0.08, 0.2) if compute == "bfloat16" else (0.03, 0.06)
    else:
        rtol, atol = {"bfloat16": (0.05, 0.1), "float16": (0.0125, 0.025)}.get(weights, (1e-4, 1e-3))
    return rtol * scale + atol


def verify(path: str | os.PathLike, against: str | os.PathLike | None = None, *, base: str | None = None,
           check: bool = True, compare: bool = True, timeout: float = 1800, allow_incomplete: bool = False,
           echo: Callable[[str], Any] = print) -> VerifyReport:
    """Load an export with plain transformers (and peft) in a subprocess that does not import
    kinfuse, and compare its logits with the adapted model kinfuse trained; check TGI's file rules.

    compare=False checks only the files (layout, names, config, archive), loading no model.
    A run whose training did not complete is refused as the reference (ExportError) unless
    `allow_incomplete`. Returns the report; raises VerifyError when `check` and the export fails."""
    folder = Path(path).expanduser().absolute()
    if not folder.is_dir():
        raise ExportError(f"no such export folder: {str(folder)!r}")
    meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
    status = meta.get("run_status")
    if status not in (None, "completed") and not allow_incomplete:
        raise ExportError(f"{folder} was exported from run {meta.get('source')} whose training did not complete "
                          f"(run.json status {status!r}): export a completed run, or pass --allow-incomplete "
                          "(allow_incomplete=True) to check it anyway")
    with tempfile.TemporaryDirectory(prefix="kinfuse-verify-tar-") as tmp:
        if (folder / "model.tar.gz").is_file():
            kind = "sagemaker"
            problems = check_tar(folder / "model.tar.gz")
            if not problems:
                with tarfile.open(folder / "model.tar.gz", "r:gz") as archive:
                    archive.extractall(tmp, filter="data")
            model_dir = Path(tmp)
        elif (folder / "model" / "config.json").is_file() and (folder / DEPLOY_FILE).is_file():
            kind, problems, model_dir = "sagemaker", [], folder / "model"
        elif (folder / "adapter_config.json").is_file():
            kind, problems, model_dir = "adapter", [], folder
        elif (folder / "config.json").is_file():
            kind, problems, model_dir = "merged", [], folder
        else:
            raise ExportError(f"{folder} is not an export (no config.json, adapter_config.json or model.tar.gz)")
        report = VerifyReport(path=str(folder), kind=kind, problems=problems)
        if kind == "sagemaker" and not (folder / DEPLOY_FILE).is_file():
            report.problems.append("no deploy.py next to the model")
        if not (folder / LAUNCH_FILE).is_file():
            report.notes.append(f"no {LAUNCH_FILE}")
        if not report.problems:
            report.problems += check_files(model_dir, "adapter" if kind == "adapter" else "merged")
        local_base = base or meta.get("base_path")
        if not report.problems and local_base and Path(local_base).is_dir():  # shapes from headers: no download
            report.problems += _shape_problems(model_dir, kind, Path(local_base))
        source = against or meta.get("source")
        if not compare:
            report.notes.append("files only: the logits were not compared")
        elif not source:
            report.problems.append(f"nothing to compare with: pass --against RUN_OR_ADAPTER (no {META_FILE} here)")
        elif not report.problems:
            src = load_source(source, base or meta.get("base_path"), allow_incomplete=allow_incomplete)
            _compare(report, model_dir, src, meta, kind, timeout, echo)
    report.ok = not report.problems
    if check and not report.ok:
        raise VerifyError(report)
    return report


# -- the two sides of the comparison -------------------------------------------------------------


def _child_dtype(folder: Path, export_dtype: str) -> str:
    """fp32 compute when the upcast model fits comfortably in memory, else the export's own dtype."""
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        avail = 0
    factor = 2 if export_dtype in DTYPES else 1
    return "float32" if not avail or size * factor < 0.4 * avail else export_dtype


class _Child:
    """The export loaded by plain transformers in a fresh interpreter, started now, read by `result()`."""

    def __init__(self, args: dict[str, Any], timeout: float):
        self._tmp = tempfile.TemporaryDirectory(prefix="kinfuse-verify-")
        self.args = {**args, "out": str(Path(self._tmp.name) / "result")}
        self.timeout = timeout
        script = (resources.files(__package__) / "templates" / "verify_child.py").read_text(encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", script, json.dumps(self.args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=self._tmp.name)

    def result(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from safetensors.torch import load_file

        try:
            try:
                stdout, stderr = self.proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
                raise ExportError(f"loading the export with plain transformers took over {self.timeout:.0f} s") from None
            if self.proc.returncode != 0:
                tail = "\n".join((stderr or stdout).strip().splitlines()[-6:])
                raise ExportError(f"plain transformers{'/peft' if self.args['kind'] == 'adapter' else ''} could not "
                                  f"load the export:\n{tail}")
            out = Path(self.args["out"])
            return json.loads(out.with_suffix(".json").read_text()), load_file(str(out.with_suffix(".safetensors")))
        finally:
            self._tmp.cleanup()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._tmp.cleanup()


def reference_logits(src: Source, base: str, quantize: str, ids: list[list[int]],
                     quant_dtype: str = "float32") -> tuple[list[Any], list[Any]]:
    """Logits of the adapted model as kinfuse trained it (and of the base without the adapter), fp32 on CPU.

    NF4 weights are quantized from the weights cast to the run's compute dtype, as in training
    (a bf16 GPU run quantized bf16 weights), then everything computes in fp32."""
    import torch
    from peft import PeftModel

    from ..models import load_model

    load_dtype = getattr(torch, quant_dtype) if quantize == "nf4" else torch.float32
    # On the CPU, load_model keeps NF4 weights in the layout training used (the exact dequantize + matmul).
    model = load_model(base, quantize=quantize, compute_dtype=load_dtype, device=torch.device("cpu"))
    for module in model.modules():
        if hasattr(module, "compute_dtype"):
            module.compute_dtype = torch.float32
    if load_dtype != torch.float32:
        for p in list(model.parameters()) + list(model.buffers()):
            if p.is_floating_point() and p.dtype != torch.float32 and p.dtype != torch.uint8:
                p.data = p.data.float()
    model = PeftModel.from_pretrained(model, str(src.adapter_dir)).eval()
    adapted, plain = [], []
    with torch.no_grad():
        for row in ids:
            x = torch.tensor([row])
            adapted.append(model(input_ids=x).logits[0].float())
            with model.disable_adapter():
                plain.append(model(input_ids=x).logits[0].float())
    return adapted, plain


def _compare(report: VerifyReport, model_dir: Path, src: Source, meta: dict[str, Any], kind: str, timeout: float,
             echo: Callable[[str], Any]) -> None:
    base = src.base_path()
    if kind == "adapter":
        weights = adapter_weights(model_dir)
        problems = tgi_adapter_problems(json.loads((model_dir / "adapter_config.json").read_text()), list(weights))
        report.problems += [f"TGI: {p}" for p in problems]
        report.export_dtype = str(next(iter(weights.values())).dtype).replace("torch.", "")
        report.compute_dtype = "float32"
        quantize = "none"
        report.reference = f"{base} (unquantized, fp32) + {src.adapter_dir} with peft, as TGI applies the adapter"
    else:
        config = json.loads((model_dir / "config.json").read_text())
        report.export_dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
        report.compute_dtype = _child_dtype(model_dir, report.export_dtype)
        merged_into = meta.get("merge_into") or ("dequantized" if src.quantize == "nf4" else "original")
        quantize = "nf4" if merged_into == "dequantized" else "none"
        report.reference = (f"{base} ({'NF4 as trained' if quantize == 'nf4' else 'original weights'}, computed in "
                            f"fp32) + {src.adapter_dir} with peft")
        if quantize == "none" and src.quantize == "nf4":
            report.notes.append("this export was merged into the original weights, not the NF4 ones the adapter "
                                "was trained against: compared with base + adapter unquantized")
    from ..models import load_tokenizer

    tokenizer = load_tokenizer(src.tokenizer_dir(base))
    texts = list(PROMPTS)
    chat = (tokenizer.apply_chat_template([{"role": "user", "content": CHAT_PROMPT}], tokenize=False,
                                          add_generation_prompt=True) if tokenizer.chat_template else None)
    texts += [chat] if chat else []
    ids = [tokenizer(t).input_ids for t in texts]
    args = {"kind": "adapter" if kind == "adapter" else "merged", "path": str(model_dir), "base": base,
            "tokenizer": str(model_dir) if kind != "adapter" or (model_dir / "tokenizer_config.json").is_file() else base,
            "compute_dtype": report.compute_dtype, "texts": texts, "chat": CHAT_PROMPT}
    # A small model: the subprocess and the reference run side by side; a large one: one after the other.
    small = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) < 2**30
    echo(f"loading the export with plain transformers in a subprocess ({report.compute_dtype})")
    if (src.adapter_dir / "adapter_model.safetensors").is_file():
        wrong = adapter_shape_problems(src.adapter_dir / "adapter_model.safetensors", base_shapes(local_checkpoint(base)),
                                       what=f"the trained adapter ({src.adapter_dir}): tensor")
        if wrong:
            report.problems += wrong
            return
    child = _Child(args, timeout)
    try:
        if not small:
            info, logits = child.result()
        echo(f"computing the reference: {report.reference}")
        try:
            adapted, plain = reference_logits(src, base, quantize, ids, ((meta.get("nf4") or {}).get("dtype")
                                                                         or src.quant_dtype))
        except (RuntimeError, ValueError, KeyError) as e:  # peft/torch refusing the trained adapter's tensors
            raise ExportError(f"the trained adapter {src.adapter_dir} does not load onto {base}: "
                              + " ".join(str(e).split())[:500]) from e
        if small:
            info, logits = child.result()
    except ExportError as e:
        report.problems.append(str(e))
        return
    finally:
        child.stop()
    _judge(report, info, logits, chat, ids, adapted, plain)


def _shape_problems(model_dir: Path, kind: str, base_folder: Path) -> list[str]:
    """The export's tensors whose shapes do not fit the base checkpoint, by name."""
    base = base_shapes(base_folder)
    if kind == "adapter":
        return adapter_shape_problems(model_dir / "adapter_model.safetensors", base)
    return merged_shape_problems(model_dir, base)


def _judge(report: VerifyReport, info: dict[str, Any], logits: dict[str, Any], chat: str | None,
           ids: list[list[int]], adapted: list[Any], plain: list[Any]) -> None:
    """The child's load report and logits against the reference, into `report`."""
    if info.get("kinfuse_imported"):
        report.problems.append("the export check imported kinfuse")
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(key):
            report.problems.append(f"transformers reports {key.replace('_', ' ')}: {info[key][:5]}")
    if info.get("quantization_config"):
        report.problems.append("the loaded config has a quantization_config")
    report.problems += [f"peft: {w}" for w in info.get("warnings", [])]
    if info.get("chat") != chat:
        report.problems.append("the export's chat template differs from the run's" if chat and info.get("chat")
                               else "the export's tokenizer has no chat template" if chat
                               else "the export has a chat template the run's tokenizer lacks")
    if not chat:
        report.notes.append("the run's tokenizer has no chat template")
    if info["ids"] != ids:
        report.problems.append("the export's tokenizer encodes the prompts differently from the run's")
        return
    report.prompts = len(adapted)
    worst = -math.inf
    diffs, scales, effects, agree, total = [], [], [], 0, 0
    for i, (ref, without) in enumerate(zip(adapted, plain)):
        got = logits[f"logits_{i}"]
        if got.shape != ref.shape:
            report.problems.append(f"logits of prompt {i} have shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
            return
        diff = (got - ref).abs().max().item()
        scale = ref.abs().max().item()
        tol = tolerance(scale, report.export_dtype, report.compute_dtype)
        if not math.isfinite(diff) or diff - tol > worst:
            worst = diff - tol if math.isfinite(diff) else math.inf
            report.tolerance = tol
        diffs.append(diff)
        scales.append(scale)
        effects.append((ref - without).abs().max().item())
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += ref.shape[0]
    report.max_abs_diff = max(diffs)
    report.logit_scale = max(scales)
    report.adapter_effect = max(effects)
    report.top1_agreement = agree / max(1, total)
    if worst > 0:
        report.problems.append(
            f"logits differ from the trained model by up to {report.max_abs_diff:.4g}, over the tolerance "
            f"{report.tolerance:.4g} for {report.export_dtype} weights (the adapter's own effect is "
            f"{report.adapter_effect:.3g}): the export does not reproduce the trained model"
        )
    if report.adapter_effect < report.tolerance:
        report.notes.append(f"the adapter moves logits by at most {report.adapter_effect:.3g}, under the tolerance: "
                            "this check cannot tell it from no adapter at all")
