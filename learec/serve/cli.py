"""The ``export``, ``recommend`` and ``serve`` subcommands; heavy imports wait until a command runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from learec.errors import UserError

HISTORY_HELP = ("the user's items, oldest first, as the dataset's original ids: ID,ID,... or a JSON list "
                "(for ids holding commas). Only the last L (the model's history length) feed the model; "
                "an empty value ('') gets the popularity fallback")


def parse_history(text: str) -> list[Any]:
    """``"1,2, 3"`` -> ``["1", "2", "3"]``; ``'["a,b", 7]'`` -> ``["a,b", 7]``."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"--history looks like a JSON list but does not parse: {err}",
                            'write e.g. --history \'["a,b", "c"]\' or --history a,b,c') from None
        if not isinstance(items, list):
            raise UserError("--history must be a JSON list of ids")
        return items
    return [part.strip() for part in text.split(",") if part.strip()]


def tcp_port(text: str) -> int:
    """``--port``: a TCP port number; argparse reports anything else as a usage error."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def cmd_export(args: argparse.Namespace) -> None:
    from learec.serve.export import export_run

    rec = export_run(Path(args.run_dir), Path(args.out), args.checkpoint, args.force)
    s = rec.summary()
    print(f"exported {s['backbone']}/{s['objective']} ({s['n_items']} items, history length "
          f"{s['history_length']}, {s['id_type']} ids) to {args.out}")


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_recommend(args: argparse.Namespace) -> None:
    from learec.serve.recommender import Recommender

    _set_threads(args.threads)
    rec = Recommender.from_pretrained(args.model_dir)
    result = rec.recommend(parse_history(args.history), k=args.k, exclude_seen=args.exclude_seen,
                           unknown_items=args.unknown_items)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(f"{'rank':>4}  {'item':>10}  {'score':>10}  text")
    for rank, item in enumerate(result.items, 1):
        print(f"{rank:>4}  {str(item['id']):>10}  {item['score']:>10.4f}  {item['text']}")


def cmd_serve(args: argparse.Namespace) -> None:
    from learec.serve.api import ServeSettings, serve
    from learec.serve.recommender import Recommender

    _set_threads(args.threads)
    rec = Recommender.from_pretrained(args.model_dir)
    settings = ServeSettings(max_k=args.max_k, max_history=args.max_history, max_batch=args.max_batch,
                             max_body_bytes=args.max_body_bytes, micro_batch=args.micro_batch)
    s = rec.summary()
    print(f"serving {s['backbone']}/{s['objective']} ({s['n_items']} items) on http://{args.host}:{args.port} "
          f"(OpenAPI: /docs, /openapi.json); Ctrl-C stops", flush=True)
    serve(rec, args.host, args.port, settings, log_level=args.log_level, access_log=args.access_log)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``export``, ``recommend`` and ``serve`` on the ``learec`` subcommand parser."""
    p = sub.add_parser("export", help="export a trained run as a self-contained model directory",
                       description="Write RUN_DIR's ranking network (safetensors), config, item-id map with item "
                       "text and popularity to --out: everything `learec recommend`, `learec serve` and "
                       "learec.Recommender.from_pretrained need, without the training data, LE or LLM. Works for "
                       "every backbone and objective (RL runs rank by their rl.rank_by head). The run's prepared "
                       "data must be available ($LEAREC_DATA_DIR) for the id map.")
    p.add_argument("run_dir", help="a run directory made by `learec train`")
    p.add_argument("--out", "-o", required=True, help="the model directory to write")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="best validation weights (default) or the last checkpoint")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("recommend", help="top-k items for a history, from an exported model",
                       description="Rank the whole catalogue after a history of original item ids and print the "
                       "top k with scores and item text. Unknown ids are an error unless --unknown-items drop.")
    p.add_argument("model_dir", help="a directory made by `learec export`")
    p.add_argument("--history", required=True, help=HISTORY_HELP)
    p.add_argument("-k", type=_positive, default=10, help="number of items (default 10)")
    p.add_argument("--exclude-seen", action="store_true", help="leave every item of the history out of the answer")
    p.add_argument("--unknown-items", choices=["error", "drop"], default="error",
                   help="what to do with ids the model does not know (default: error)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON (the API's /recommend format)")
    p.add_argument("--threads", type=_positive, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("serve", help="serve an exported model over HTTP (FastAPI)",
                       description="HTTP API: POST /recommend {\"history\": [...], \"k\": 10, \"exclude_seen\": false, "
                       "\"unknown_items\": \"error\"|\"drop\"}, POST /recommend/batch {\"requests\": [...]}, "
                       "GET /items/{id}, GET /health, OpenAPI at /openapi.json and /docs. Bad input gets a 4xx "
                       "with a message, never a 5xx. Concurrent queries are micro-batched into one forward pass.")
    p.add_argument("model_dir", help="a directory made by `learec export`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=tcp_port, default=8000, help="port, 1-65535 (default 8000)")
    p.add_argument("--threads", type=_positive, default=1,
                   help="torch CPU threads (default 1: per-request forwards are small, and more threads compete "
                   "with the HTTP event loop)")
    p.add_argument("--max-k", type=_positive, default=1000, help="largest k a request may ask for (default 1000)")
    p.add_argument("--max-history", type=_positive, default=10_000, help="most ids in one history (default 10000)")
    p.add_argument("--max-batch", type=_positive, default=256, help="most queries in one /recommend/batch (default 256)")
    p.add_argument("--max-body-bytes", type=_positive, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--micro-batch", type=_positive, default=64,
                   help="most concurrent queries ranked in one forward pass; 1 turns micro-batching off (default 64)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (default warning)")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default: it costs throughput)")
    p.set_defaults(func=cmd_serve)
