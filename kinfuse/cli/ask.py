"""`kinfuse ask RUN "question" [--compare | --no-adapter]` and `kinfuse chat RUN [--compare]`: the
infused model, loaded as trained (kinfuse.load_run), answering one question or a conversation.

`ask` answers as the Evaluator answered at the end of `infuse` (greedy, the run's
eval.max_new_tokens, the chat template unless the run trained without it). `chat` streams each
answer as it is written and keeps the conversation; `/reset` starts a new one, `/exit` (or
Ctrl-D) ends it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

EXIT_COMMANDS = ("/exit", "/quit")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments that load a run (shared with `kinfuse eval`)."""
    p.add_argument("source", metavar="RUN_OR_ADAPTER", help="a run folder (run.json + adapter/) or an adapter folder")
    p.add_argument("--base", metavar="MODEL", help="the base model, when the one the run names has moved "
                                                    "(needed for an adapter folder that names none)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="use a run whose training was interrupted or failed (its adapter is partial)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--quantize", choices=["nf4", "none"],
                   help="how to hold the base weights for an adapter folder without a run record (default nf4); "
                        "a run's record decides for a run")


def add(sub: Any) -> None:
    a = sub.add_parser("ask", help="ask the infused model one question (greedy, as the evaluation asked it)")
    add_run_arguments(a)
    a.add_argument("question", help="the question (asked through the chat template unless the run trained without)")
    which = a.add_mutually_exclusive_group()
    which.add_argument("--compare", action="store_true", help="print the base model's answer beside the adapted one")
    which.add_argument("--no-adapter", action="store_true", help="ask the base model alone (the adapter off)")
    a.add_argument("--max-new-tokens", type=int, help="answer length limit (default: the run's eval.max_new_tokens)")
    a.set_defaults(handler=run_ask)
    c = sub.add_parser("chat", help="chat with the infused model; answers stream as they are written")
    add_run_arguments(c)
    c.add_argument("--compare", action="store_true", help="the base model answers each turn too, before the adapted one")
    c.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit per turn (default 256)")
    c.set_defaults(handler=run_chat)


def load(args: argparse.Namespace) -> Any:
    from ..session import load_run

    print(f"loading {args.source} ...", file=sys.stderr)
    run = load_run(args.source, base=args.base, allow_incomplete=args.allow_incomplete, device=args.device,
                   quantize=args.quantize)
    print(f"loaded {run.adapter_dir} on {run.base} ({run.quantize}, {run.compute_dtype}, {run.device}"
          f"{'' if run.chat else ', no chat template'})", file=sys.stderr)
    return run


def run_ask(args: argparse.Namespace, argv: list[str]) -> int:
    run = load(args)
    limit = args.max_new_tokens
    if args.compare:
        print(f"base:    {run.ask(args.question, adapter=False, max_new_tokens=limit)}")
        print(f"adapted: {run.ask(args.question, max_new_tokens=limit)}")
    else:
        print(run.ask(args.question, adapter=not args.no_adapter, max_new_tokens=limit))
    return 0


def run_chat(args: argparse.Namespace, argv: list[str]) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input(), where available)
    except ImportError:
        pass
    run = load(args)
    chat(run, compare=args.compare, max_new_tokens=args.max_new_tokens)
    return 0


def chat(run: Any, *, compare: bool = False, max_new_tokens: int | None = None, out: TextIO = sys.stdout) -> None:
    """The conversation loop: read a line, stream the answer(s), until /exit or end of input."""
    sides = [("base", False), ("adapted", True)] if compare else [("model", True)]
    history: dict[str, list[dict[str, str]]] = {name: [] for name, _ in sides}
    how = "a conversation" if run.chat else "one prompt at a time (the run trained without a chat template)"
    print(f"chat with {run.path}: {how}. /reset starts over, /exit ends.", file=out, flush=True)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print(file=out)
            return
        text = line.strip()
        if not text:
            continue
        if text in EXIT_COMMANDS:
            return
        if text == "/reset":
            history = {name: [] for name, _ in sides}
            print("(a new conversation)", file=out, flush=True)
            continue
        for name, adapter in sides:
            turns = history[name] if run.chat else []
            messages = fit(run, [*turns, {"role": "user", "content": text}], max_new_tokens)
            print(f"{name}> ", end="", file=out, flush=True)
            answer = ""
            try:
                for piece in run.stream(messages, adapter=adapter, max_new_tokens=max_new_tokens):
                    answer += piece
                    print(piece, end="", file=out, flush=True)
            except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat
                print(" [stopped]", end="", file=out)
            print(file=out, flush=True)
            history[name] = [*messages, {"role": "assistant", "content": answer.strip()}]


def fit(run: Any, messages: list[dict[str, str]], max_new_tokens: int | None) -> list[dict[str, str]]:
    """The latest turns that fit the model's context with room for the answer (the oldest go)."""
    context = getattr(getattr(run.model, "config", None), "max_position_embeddings", None)
    if not context or not run.chat:
        return messages
    room = context - (max_new_tokens or run.max_new_tokens)
    evaluator = run.evaluator()
    while len(messages) > 1 and len(evaluator.encode({"messages": messages})[1]) > room:
        messages = messages[2:]  # one question and its answer
    return messages
