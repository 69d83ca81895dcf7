"""The kinfuse demo: infuse an example site into the embedded default model
(SmolLM2-135M-Instruct), then compare base and adapted answers.

The example's pages are served from a local HTTP server on 127.0.0.1 and loaded with
Corpus.from_urls, exactly as a user's web pages would be, then trained with the example's
`infuse.toml`. Output goes to out/ (adapter, metrics.json, train_log.jsonl, report.html,
generated.jsonl). Runs on a GPU when one is present, else on the CPU.

    python examples/run_demo.py [--example aws-summit-2023|product-docs] [--config infuse.toml]
                                [--out-dir out] [--seed N] [--epochs E]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path

from kinfuse import Corpus, InfuseConfig, KinfuseError, infuse

HERE = Path(__file__).resolve().parent
EXAMPLES = sorted(p.name for p in HERE.iterdir() if (p / "infuse.toml").is_file())


def serve(folder: Path) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep the demo's output readable
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="aws-summit-2023", choices=EXAMPLES,
                        help="which example site to infuse (default: aws-summit-2023)")
    parser.add_argument("--out-dir", default="out", help="where to write the adapter and metrics (default: out)")
    parser.add_argument("--config", default="infuse.toml",
                        help="the recipe, a TOML file in the example's folder (default: infuse.toml)")
    parser.add_argument("--seed", type=int, help="override train.seed (LoRA init, dropout, data order)")
    parser.add_argument("--max-steps", type=int, help="override train.max_steps (for a quick look)")
    parser.add_argument("--epochs", type=float,
                        help="override train.epochs (more than the recipe's 4: a longer run that learns more facts)")
    parser.add_argument("--device", help="auto, cpu or cuda")
    args = parser.parse_args()

    example = HERE / args.example
    config = InfuseConfig.from_toml(example / args.config)
    config.out_dir = str(Path(args.out_dir).resolve())
    if args.max_steps:
        config.train.max_steps = args.max_steps
    if args.epochs is not None:
        config.train.epochs = args.epochs
    if args.seed is not None:
        config.train.seed = args.seed
    if args.device:
        config.train.device = args.device
    server = serve(example / "pages")
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = [f"{base}/{page.name}" for page in sorted((example / "pages").glob("*.html"))]
        corpus = Corpus.from_urls(urls, allow_private=True)  # the pages are served on 127.0.0.1
    finally:
        server.shutdown()
    try:
        infuse(config, corpus=corpus)
    except KinfuseError as e:
        print(f"kinfuse: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
