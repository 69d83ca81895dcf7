"""Export a trained adapter for serving, and verify an export against the model kinfuse trained.

    kinfuse export RUN_OR_ADAPTER --format tgi-adapter|merged|sagemaker --out DIR
    kinfuse verify DIR [--against RUN_OR_ADAPTER]

Formats:
- `tgi-adapter`: the PEFT adapter as TGI's `--lora-adapters` reads it (safetensors, plain LoRA on
  the projections TGI maps). Anything TGI would silently drop (DoRA magnitudes, rank/alpha
  patterns, trained embeddings, other modules) is refused, pointing at `--format merged`.
- `merged`: the LoRA folded into 16-bit weights, streamed tensor by tensor from the base
  checkpoint into shards of at most 2 GB. A run trained on an NF4 base is merged, by default,
  into the dequantized NF4 weights it was trained against.
- `sagemaker`: the merged layout as `model.tar.gz` (files at the archive root) or an uncompressed
  S3-prefix folder, with a `deploy.py` for the SageMaker Hugging Face LLM (TGI) container and an
  optional upload to S3.

Every export holds `tgi-launch.sh` (a ready `docker run` of TGI) and `kinfuse_export.json`
(what was done). The modules, in the order they build on each other:

    source      what to export: a run folder (run.json), an adapter folder, a checkpoint's adapter
    checkpoint  the base checkpoint, read tensor by tensor
    tgi         TGI's rules for adapters and model folders, its token limits, tgi-launch.sh
    merge       the NF4 round trip, the LoRA merge and the shard writer
    sagemaker   model.tar.gz, deploy.py (templates/deploy.py), the instance to suggest, S3
    exporter    export(): checks, the staging folder, one format, the swap into place
    shapes      an export's (or adapter's) tensor shapes against the base checkpoint, from headers
    verify      verify(): the file rules and the logits of the export, loaded without kinfuse
                (templates/verify_child.py), against the model as trained
"""

from .checkpoint import checkpoint_files, estimate_bytes, local_checkpoint
from .errors import ExportError, VerifyError
from .exporter import DTYPES, FORMATS, MERGE_INTO, META_FILE, export
from .merge import MAX_SHARD_BYTES, NF4_BLOCKSIZE, PREFIX, MergeInfo, merge_into_folder, nf4_roundtrip
from .sagemaker import check_tar, deploy_script, parse_s3_uri, suggest_instance, upload_files
from .source import LORA_SUFFIXES, Source, adapter_weights, load_source
from .tgi import (FORBIDDEN_NAME_PARTS, LAUNCH_FILE, NOT_SAFETENSORS, TGI_IMAGE, TGI_MODULES, TOKENIZER_FILES,
                  check_files, launch_script, serving_limits, tgi_adapter_problems)
from .verify import CHAT_PROMPT, PROMPTS, VerifyReport, reference_logits, tolerance, verify

__all__ = [
    "CHAT_PROMPT", "DTYPES", "ExportError", "FORBIDDEN_NAME_PARTS", "FORMATS", "LAUNCH_FILE", "LORA_SUFFIXES",
    "MAX_SHARD_BYTES", "MERGE_INTO", "META_FILE", "MergeInfo", "NF4_BLOCKSIZE", "NOT_SAFETENSORS", "PREFIX", "PROMPTS",
    "Source", "TGI_IMAGE", "TGI_MODULES", "TOKENIZER_FILES", "VerifyError", "VerifyReport", "adapter_weights",
    "check_files", "check_tar", "checkpoint_files", "deploy_script", "estimate_bytes", "export", "launch_script",
    "load_source", "local_checkpoint", "merge_into_folder", "nf4_roundtrip", "parse_s3_uri", "reference_logits",
    "serving_limits", "suggest_instance", "tgi_adapter_problems", "tolerance", "upload_files", "verify",
]
