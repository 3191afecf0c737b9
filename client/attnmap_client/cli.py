"""The ``attnmap`` command: ``attnmap audit`` (images or sentences), ``attnmap models``, ``attnmap health``.

Exit codes: 0 done and the gate (if any) passed; 1 the gate failed; 2 usage errors, a server
that cannot be reached or lacks the model, or requests that got no answer (rerun with
``--resume``); 130 interrupted (Ctrl-C / SIGTERM), after writing a partial summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from attnmap_client import __version__
from attnmap_client.audit import images as image_audit
from attnmap_client.audit import text as text_audit
from attnmap_client.audit.inputs import InputError, find_images, load_boxes, load_text_lines, parse_fraction_region
from attnmap_client.audit.report import data_url, image_report, mime_of, text_report
from attnmap_client.audit.runner import JOURNAL, Interrupted, Progress, Record, Task, read_journal, run_all
from attnmap_client.client import Client, Method, SelectionOptions
from attnmap_client.errors import ApiError, AttnmapError, TransportError

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
RUN_FILE = "run.json"
ORIGINAL_INLINE_LIMIT = 256 * 1024  # larger originals are shown as the server's overlay with alpha 0


class UsageError(Exception):
    """Exit code 2 with a message."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``attnmap``."""
    parser = argparse.ArgumentParser(prog="attnmap", description="Client of the attnmap attention-map service.")
    parser.add_argument("--version", action="version", version=f"attnmap-client {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def server_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--server", action="append", metavar="URL",
                         help="service URL; repeat to spread the work over replicas (default $ATTNMAP_SERVER or "
                              "http://127.0.0.1:8000)")
        sub.add_argument("--token", default=os.environ.get("ATTNMAP_TOKEN"),
                         help="bearer token (default $ATTNMAP_TOKEN)")
        sub.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")

    audit = commands.add_parser("audit", help="measure attention over a folder of images or a JSONL file of sentences",
                                description="Measure attention over a whole data set; writes OUT/summary.json and "
                                            "OUT/report.html. Exit 0 pass, 1 gate failed, 2 usage/connection error.")
    server_options(audit)
    audit.add_argument("--model", action="append", required=True, help="model name; give two to compare them")
    source = audit.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="DIR", help="every PNG/JPEG/WebP under DIR, recursively")
    source.add_argument("--text", type=Path, metavar="FILE.jsonl", help="lines with text, query and key")
    where = audit.add_mutually_exclusive_group()
    where.add_argument("--region", metavar="x0,y0,x1,y1", help="region in fractions (0..1) of each image")
    where.add_argument("--boxes", type=Path, metavar="FILE", help="a pixel box per image (JSON or CSV)")
    audit.add_argument("--out", type=Path, required=True, help="output folder")
    audit.add_argument("--method", choices=("attention", "rollout", "gradient"), help="as the API (default attention)")
    audit.add_argument("--layer", type=int, help="layer index (images; default the API's: the last)")
    audit.add_argument("--head", help="head index or mean/max/min (default mean)")
    audit.add_argument("--discard-ratio", type=float, help="rollout only, as the API")
    audit.add_argument("--fail-above", type=float, metavar="M", help="images: gate on region mass above M")
    audit.add_argument("--fail-below", type=float, metavar="T", help="text: gate on a link below T")
    audit.add_argument("--max-share", type=float, default=0.0, metavar="S",
                       help="the gate fails when more than this share of inputs cross the threshold (default 0)")
    audit.add_argument("--concurrency", type=int, default=2, help="requests in flight (match the worker count)")
    audit.add_argument("--retries", type=int, default=30, help="retries of a 503 with Retry-After (default 30)")
    audit.add_argument("--resume", action="store_true", help="skip inputs already measured in OUT")
    audit.add_argument("--thumbnails", type=int, default=8, help="worst offenders shown per model (default 8)")
    audit.add_argument("--wait-ready", type=float, default=30.0, help="seconds to wait for /readyz (default 30)")
    audit.add_argument("--quiet", action="store_true", help="no progress line")

    for name, text in (("models", "list the models a server has loaded"), ("health", "liveness and readiness")):
        server_options(commands.add_parser(name, help=text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attnmap`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 for usage errors, 0 for --help
        return int(exc.code or 0)
    servers = args.server or [os.environ.get("ATTNMAP_SERVER", "http://127.0.0.1:8000")]
    try:
        clients = [Client(url, token=args.token, timeout=args.timeout, retries=getattr(args, "retries", 0))
                   for url in servers]
    except ValueError as exc:
        print(f"attnmap: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "models":
            return _models(clients)
        if args.command == "health":
            return _health(clients)
        previous = _terminate_as_interrupt()
        try:
            return _audit(args, clients)
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
    except (UsageError, InputError) as exc:
        print(f"attnmap: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AttnmapError as exc:
        print(f"attnmap: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _models(clients: Sequence[Client]) -> int:
    for client in clients:
        for info in client.models():
            print(f"{client.base_url}\t{info.name}\t{info.kind}\t{info.family}\t{info.layers}x{info.heads}\t{info.device}")
    return EXIT_OK


def _health(clients: Sequence[Client]) -> int:
    code = EXIT_OK
    for client in clients:
        try:
            ready = client.readyz()
            print(f"{client.base_url}\t{ready.status}\t{','.join(ready.models)}")
        except AttnmapError as exc:
            print(f"{client.base_url}\tnot ready\t{exc}")
            code = EXIT_USAGE
    return code


def _check_servers(clients: Sequence[Client], models: Sequence[str], kind: str, wait: float) -> None:
    """Every server must be ready and have every model, of the right kind: else a usage error."""
    for client in clients:
        try:
            client.wait_ready(timeout=wait)
            loaded = {info.name: info for info in client.models()}
        except TransportError as exc:
            raise UsageError(f"cannot reach {client.base_url}: {exc.message}") from exc
        except ApiError as exc:
            raise UsageError(f"{client.base_url} is not usable: {exc}") from exc
        for model in models:
            if model not in loaded:
                raise UsageError(f"{client.base_url} has no model {model!r} (it has: {', '.join(sorted(loaded))})")
            if loaded[model].kind != kind:
                raise UsageError(f"model {model!r} is a {loaded[model].kind} model; this audit needs a {kind} model")


def _api_options(args: argparse.Namespace) -> SelectionOptions:
    options = SelectionOptions()
    if args.layer is not None:
        options["layer"] = args.layer
    if args.head is not None:
        if args.head.isdigit():
            options["head"] = int(args.head)
        elif args.head in ("mean", "max", "min"):
            options["head"] = args.head
        else:
            raise UsageError(f"--head {args.head!r}: a head index or mean/max/min")
    if args.discard_ratio is not None:
        options["discard_ratio"] = args.discard_ratio
    return options


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader (or a second Ctrl-C) never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _audit(args: argparse.Namespace, clients: list[Client]) -> int:
    models = tuple(dict.fromkeys(args.model))
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if not 0.0 <= args.max_share <= 1.0:
        raise UsageError("--max-share must be in 0..1")
    options = _api_options(args)
    method = cast(Method | None, args.method)
    run: dict[str, Any] = {"servers": [c.base_url for c in clients], "models": list(models), "method": args.method,
                           "options": dict(options), "client": f"attnmap-client {__version__}"}
    if args.images is not None:
        if args.fail_below is not None:
            raise UsageError("--fail-below is for --text audits; images use --fail-above")
        if args.region is None and args.boxes is None:
            raise UsageError("an image audit needs --region x0,y0,x1,y1 (fractions) or --boxes FILE")
        region = parse_fraction_region(args.region) if args.region else None
        boxes = load_boxes(args.boxes) if args.boxes else None
        paths = find_images(args.images)
        if not paths:
            raise UsageError(f"--images {args.images}: no PNG, JPEG or WebP files")
        plan = image_audit.ImagePlan(root=args.images, models=models, method=method, region=region, boxes=boxes,
                                     options=options)
        tasks = image_audit.image_tasks(plan, paths)
        run.update(kind="images", images=str(args.images), region=list(region) if region else None,
                   boxes=str(args.boxes) if args.boxes else None, fail_above=args.fail_above, max_share=args.max_share)
        kind = "vision"
    else:
        if args.fail_above is not None or args.region or args.boxes:
            raise UsageError("--fail-above, --region and --boxes are for --images audits; text uses --fail-below")
        lines = load_text_lines(args.text)
        text_plan = text_audit.TextPlan(models=models, method=method, options=options)
        tasks = text_audit.text_tasks(text_plan, lines)
        run.update(kind="text", text=str(args.text), fail_below=args.fail_below, max_share=args.max_share)
        kind = "text"

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    identity = {k: run[k] for k in ("kind", "models", "method", "options") if k in run} | {
        k: run.get(k) for k in ("images", "region", "boxes", "text")}
    records: dict[str, Record] = {}
    if args.resume:
        previous = _read_json(out / RUN_FILE)
        if previous is not None and previous.get("identity") != identity:
            raise UsageError(f"--resume: {out} holds a different audit ({RUN_FILE} differs); use another --out")
        for record in read_journal(out):
            records[record["task"]] = record
    keep = {key for key, record in records.items() if not record.get("error")}
    records = {key: records[key] for key in keep}
    todo = [task for task in tasks if task.key not in keep]
    known = {task.key for task in tasks}
    records = {key: record for key, record in records.items() if key in known}

    _check_servers(clients, models, kind, args.wait_ready)
    run["started"] = _now()
    _write_atomic(out / RUN_FILE, json.dumps({"identity": identity, "run": run}, indent=2) + "\n")
    started = time.monotonic()
    progress = Progress(total=len(tasks), already=len(tasks) - len(todo), label="audit", enabled=not args.quiet)
    complete, interrupted_late = True, False
    measured = [0]

    def keep_record(record: Record) -> None:
        records[record["task"]] = record
        measured[0] += 1

    try:
        with open(out / JOURNAL, "a" if args.resume else "w", encoding="utf-8") as journal:
            if args.resume:
                # Rewrite the kept records only: failures of earlier runs are measured again.
                journal.truncate(0)
                for key in sorted(records):
                    journal.write(json.dumps(records[key], separators=(",", ":")) + "\n")
                journal.flush()
            run_all(todo, clients, args.concurrency, journal, progress, keep_record)
    except Interrupted:
        complete = False
    run["finished"] = _now()
    run["duration_s"] = round(time.monotonic() - started, 3)
    run["requests_retried"] = sum(c.retried for c in clients)
    run["resumed"] = len(tasks) - len(todo)
    run["measured"] = measured[0]
    ordered = [records[task.key] for task in tasks if task.key in records]
    if kind == "vision":
        summary, verdict = _image_summary(run, ordered, models, args, complete)
    else:
        summary, verdict = _text_summary(run, ordered, models, args, complete)
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    if kind == "vision":
        thumbnails: dict[str, dict[str, str]] = {}
        offenders: dict[str, list[Record]] = {}
        if complete:
            try:
                thumbnails, offenders = _thumbnails(summary, plan, clients, args)
            except KeyboardInterrupt:
                interrupted_late = True  # the summary is complete; the report goes without thumbnails
        _write_atomic(out / "report.html", image_report(summary, thumbnails, offenders))
    else:
        weakest = {m: text_audit.weakest(ordered, m, 10) for m in models}
        _write_atomic(out / "report.html", text_report(summary, weakest))
    _print_result(summary, out)
    if interrupted_late:
        print("attnmap: interrupted while fetching the report's thumbnails; summary.json is complete", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not complete:
        print(f"attnmap: interrupted; partial summary in {out / 'summary.json'} (continue with --resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    unanswered = sum(1 for r in ordered if (r.get("error") or {}).get("code") == "connection_error")
    if unanswered:
        print(f"attnmap: {unanswered} requests got no answer from any server; rerun with --resume", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_GATE if verdict else EXIT_OK


def _terminate_as_interrupt() -> Any:
    """SIGTERM (a cancelled CI job) ends the run like Ctrl-C: partial summary, exit 130."""
    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, handler)
    return signal.getsignal(signal.SIGTERM)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _public(record: Record) -> Record:
    return {k: v for k, v in record.items() if k != "task"}


def _image_summary(run: dict[str, Any], records: list[Record], models: Sequence[str], args: argparse.Namespace,
                   complete: bool) -> tuple[dict[str, Any], bool]:
    gate = image_audit.image_gate(records, models, args.fail_above, args.max_share) if args.fail_above is not None else None
    summary = {"kind": "images", "complete": complete, "run": run, "images": [_public(r) for r in records],
               "aggregate": image_audit.aggregate(records, models, args.fail_above), "gate": gate}
    return summary, bool(gate and gate["failed"])


def _text_summary(run: dict[str, Any], records: list[Record], models: Sequence[str], args: argparse.Namespace,
                  complete: bool) -> tuple[dict[str, Any], bool]:
    gate = text_audit.text_gate(records, models, args.fail_below, args.max_share) if args.fail_below is not None else None
    summary = {"kind": "text", "complete": complete, "run": run, "lines": [_public(r) for r in records],
               "aggregate": text_audit.aggregate(records, models, args.fail_below), "gate": gate}
    return summary, bool(gate and gate["failed"])


def _thumbnails(summary: dict[str, Any], plan: image_audit.ImagePlan, clients: Sequence[Client],
                args: argparse.Namespace) -> tuple[dict[str, dict[str, str]], dict[str, list[Record]]]:
    """Worst offenders per model, with the original and every model's overlay (region outlined) as data URLs."""
    records = summary["images"]
    offenders = {m: image_audit.worst_offenders(records, m, max(0, args.thumbnails)) for m in plan.models}
    paths = sorted({r["path"] for rows in offenders.values() for r in rows})
    regions = {r["path"]: r["region"] for r in records if r.get("region")}
    jobs = [(path, model) for path in paths for model in plan.models] + [(path, None) for path in paths]
    thumbnails: dict[str, dict[str, str]] = {path: {} for path in paths}

    def fetch(index: int, path: str, model: str | None) -> None:
        client = clients[index % len(clients)]
        data = (plan.root / path).read_bytes()
        try:
            if model is None:
                if len(data) <= ORIGINAL_INLINE_LIMIT:
                    thumbnails[path]["original"] = data_url(data, mime_of(data))
                    return
                # A large original: the service's overlay with alpha 0 is the image itself, bounded in size.
                model, alpha, key = plan.models[0], 0.0, "original"
            else:
                alpha, key = 0.5, model
            result = client.visualize(model=model, image=data, method=plan.method, region=regions.get(path),
                                      view="overlay", alpha=alpha, format="png", **plan.options)
            thumbnails[path][key] = data_url(result.png, "image/png")
        except AttnmapError:
            pass  # a missing thumbnail leaves an empty pane; the measurement is in the table

    pool = ThreadPoolExecutor(max_workers=max(1, args.concurrency))
    try:
        for future in [pool.submit(fetch, i, path, model) for i, (path, model) in enumerate(jobs)]:
            future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: do not wait for the queued fetches
    return thumbnails, offenders


def _print_result(summary: dict[str, Any], out: Path) -> None:
    aggregate = summary["aggregate"]
    for model, entry in aggregate.items():
        if summary["kind"] == "images":
            line = (f"{model}: {entry['count']} images, {entry['errors']} errors; region mass mean {_f(entry['mean'])} "
                    f"median {_f(entry['median'])} p90 {_f(entry['p90'])} (region area {_f(entry['area_share_mean'])})")
            if "share_above" in entry:
                line += f"; above {entry['threshold']:g}: {entry['above']} ({_f(entry['share_above'])})"
        else:
            line = (f"{model}: {entry['count']} lines, {entry['errors']} errors; link mean {_f(entry['mean'], 4)} "
                    f"median {_f(entry['median'], 4)} p10 {_f(entry['p10'], 4)}")
            if "share_below" in entry:
                line += f"; below {entry['threshold']:g}: {entry['below']} ({_f(entry['share_below'])})"
        print(line)
    gate = summary.get("gate")
    if gate:
        print("gate: FAILED for " + ", ".join(gate["failed"]) if gate["failed"] else "gate: passed")
    print(f"wrote {out / 'summary.json'} and {out / 'report.html'}")


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def entry_point() -> None:
    """``python -m attnmap_client``."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()


__all__ = ["Task", "main"]
