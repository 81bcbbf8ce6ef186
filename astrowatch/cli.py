"""Command line entry point.

Only argparse is imported here: each sub-command lives in ``astrowatch/commands/<name>.py``
and is imported when it runs, so ``astrowatch --help`` starts in milliseconds and never pulls
in torch, diffusers, transformers or even pydantic.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from astrowatch import __version__


def _add_config(p: argparse.ArgumentParser, nested: bool = False) -> None:
    p.add_argument("-c", "--config", default=argparse.SUPPRESS if nested else None,
                   help="config file (default: $ASTROWATCH_CONFIG, else ./config.yaml)")


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for this run, e.g. --set sdxl.steps=20 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astrowatch",
        description="Watch data/Utilisateurs/<user>/ and turn natal charts and photos into reviewed images.",
    )
    parser.add_argument("--version", action="version", version=f"astrowatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _daemon_commands(sub)
    _review_commands(sub)
    _one_shot_commands(sub)
    _personal_data_commands(sub)
    return parser


def _personal_data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("forget", help="erase everything stored about one user (GDPR art. 17); safe while the daemon runs")
    _add_config(p)
    p.add_argument("user", help="the user folder name (Utilisateurs/<user>)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--keep-loras", action="store_true", help="spare the per-user LoRA files ({user} in sdxl.loras)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("dataset", help="a user's filed LoRA dataset (datasets/<user>/)")
    _add_config(p)
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    dp = dsub.add_parser("recaption", help="re-caption the dataset with the caption: models (reviewer edits kept)")
    _add_config(dp, nested=True)
    dp.add_argument("user", help="the user folder name (datasets/<user>)")
    dp.add_argument("--dry-run", action="store_true", help="say what would be re-captioned, write nothing")
    dp.add_argument("--force", action="store_true", help="re-caption edited captions too")

    p = sub.add_parser("export", help="a zip of everything stored about one user (GDPR art. 15 and 20)")
    _add_config(p)
    p.add_argument("user", help="the user folder name (Utilisateurs/<user>)")
    p.add_argument("--out", required=True, metavar="FILE.zip", help="where to write the zip")


def _daemon_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the daemon in the foreground (systemd Type=notify aware)")
    _add_config(p)
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="override log.format")

    p = sub.add_parser("drain", help="process everything pending (inputs and decisions), then exit")
    _add_config(p)
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="override log.format")

    p = sub.add_parser("status", help="a summary: counts by state, kind and backend, oldest waiting, failures")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sizes", action="store_true", help="also the sizes of archive/, the cache and logs (walks them)")

    p = sub.add_parser("jobs", help="jobs in detail, a page at a time (status gives the summary)")
    _add_config(p)
    jsub = p.add_subparsers(dest="action", metavar="ACTION")
    jsub.required = True
    jp = jsub.add_parser("list", help="jobs in one state, oldest first")
    jp.add_argument("--state", default="inbox", help="queued, running, waiting, inbox, failed, ... (default: inbox)")
    jp.add_argument("--json", action="store_true", help="a JSON array (the next cursor on stderr)")
    _add_paging(jp)
    _add_config(jp, nested=True)

    p = sub.add_parser("init", help="create the data folders (shared with the group) and a commented config.yaml")
    p.add_argument("dir", nargs="?", default=".", help="where to create config.yaml and data/ (default: .); "
                   "unused when --config or $ASTROWATCH_CONFIG names a config")
    _add_config(p)

    p = sub.add_parser("doctor", help="check config, folders, permissions, inotify limits, backends")
    _add_config(p)

    p = sub.add_parser("worker", help="a GPU host's Celery worker for executor: celery (one per device)")
    _add_config(p)
    p.add_argument("--device", help="device for the backends, e.g. cuda:0 (default: the config's)")
    p.add_argument("--name", help="worker name (default: <device>@<hostname>)")
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="override log.format")



def _add_paging(p: argparse.ArgumentParser) -> None:
    from astrowatch.storage.paging import DEFAULT_LIMIT

    p.add_argument("--user", help="only this user's")
    p.add_argument("--kind", choices=["astro", "enhance"], help="only this kind")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"items per page (default {DEFAULT_LIMIT}, max 1000)")
    p.add_argument("--cursor", help="the next page: the cursor the previous page printed")


def _review_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("review", help="list the inbox or decide on a result (same as moving the file)")
    _add_config(p)
    rsub = p.add_subparsers(dest="action", metavar="ACTION")
    rsub.required = True
    rp = rsub.add_parser("list", help="list results waiting in the inbox")
    rp.add_argument("--json", action="store_true")
    _add_paging(rp)
    _add_config(rp, nested=True)
    for action in ("approve", "reject"):
        rp = rsub.add_parser(action, help=f"{action} a result (job id or inbox image path)")
        rp.add_argument("item", nargs="+", help="job id (or a unique prefix) or path of the inbox image")
        _add_config(rp, nested=True)
        if action == "approve":
            rp.add_argument("--force", action="store_true",
                            help="deliver a theme result even if a newer chart exists (marks its sidecar)")
            rp.add_argument("--variant", type=int, metavar="K",
                            help="the variant to deliver, for a job with several (astro.variants)")
    rp = rsub.add_parser("caption", help="show or rewrite the caption sentence of an enhance result (line 1)")
    _add_config(rp, nested=True)
    rp.add_argument("item", help="job id (or a unique prefix) or path of the inbox image")
    rp.add_argument("--text", help="the new sentence (after the trigger word, before the tags)")
    rp.add_argument("--json", action="store_true")
    rp = rsub.add_parser("tags", help="show or edit the tags of an enhance result's line 1 (filed on approval)")
    _add_config(rp, nested=True)
    rp.add_argument("item", help="job id (or a unique prefix) or path of the inbox image")
    rp.add_argument("--set", dest="set_tags", metavar="'A, B'", help="replace the tags (comma-separated, in order)")
    rp.add_argument("--add", action="append", default=[], metavar="TAG", help="add a tag at the end (repeatable)")
    rp.add_argument("--remove", action="append", default=[], metavar="TAG", help="remove a tag (repeatable)")
    rp.add_argument("--move", action="append", default=[], metavar="TAG:POS",
                    help="move a tag to a 0-based position, -1 = last (repeatable)")
    rp.add_argument("--json", action="store_true")
    rp = rsub.add_parser("pick", help="deliver variant K of a job with several (same as approve --variant K)")
    rp.add_argument("item", help="job id (or a unique prefix) or path of the inbox image")
    rp.add_argument("variant", type=int, metavar="K", help="the variant's number (the .v<K> in its name)")
    _add_config(rp, nested=True)
    rp.add_argument("--force", action="store_true", help="as for approve")
    rp = rsub.add_parser("redo", help="run a result again with parameter overrides")
    _add_config(rp, nested=True)
    rp.add_argument("item", help="job id (or a unique prefix) or path of the inbox image")
    rp.add_argument("--variant", type=int, metavar="K", help="redo from this variant's seed")
    rp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="parameter override written into the sidecar's params (repeatable)")

    p = sub.add_parser("retry", help="run failed jobs again from the same input (a new job, once per failed job)")
    _add_config(p)
    p.add_argument("jobs", nargs="*", metavar="JOB_ID", help="failed job ids (or unique prefixes)")
    p.add_argument("--failed", action="store_true", help="every failed job not retried yet")
    p.add_argument("--user", help="with --failed: only this user's jobs")
    p.add_argument("--since", type=_since, metavar="T",
                   help="with --failed: failed since T (YYYY-MM-DD[THH:MM], or 30m, 2h, 3d ago)")


    p = sub.add_parser("webhooks", help="webhook deliveries: list them, retry one, send a test message")
    _add_config(p)
    wsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    wp = wsub.add_parser("list", help="the latest messages per endpoint, failed ones first")
    _add_config(wp, nested=True)
    wp.add_argument("--failed", action="store_true", help="only messages that failed for good")
    wp.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    wp.add_argument("--json", action="store_true")
    wp = wsub.add_parser("retry", help="send a message again (its webhook-id or event number), keeping its id")
    _add_config(wp, nested=True)
    wp.add_argument("id", help="webhook-id (msg_...) or event number")
    wp.add_argument("--url", help="only to this endpoint (default: each one it failed or was delivered to)")
    wp = wsub.add_parser("test", help="send a signed test message to a configured endpoint now")
    _add_config(wp, nested=True)
    wp.add_argument("url", help="the endpoint's url, as in the config's webhooks list")


def _since(text: str) -> float:
    from astrowatch.commands.retry import since_arg  # only argparse and the standard library there

    return since_arg(text)


def _one_shot_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prompt", help="print the fused prompt for a natal chart JSON")
    _add_config(p)
    p.add_argument("theme", help="theme_<user>.json")
    p.add_argument("--style", help="style preset (default: astro.style)")
    p.add_argument("--backend", choices=["sdxl", "sdapi", "openai"], help="render weights for this backend")
    p.add_argument("--json", action="store_true", help="one JSON object with prompt, tokens, chart...")

    p = sub.add_parser("generate", help="generate one astro image without the daemon")
    _add_config(p)
    _add_set(p)
    p.add_argument("theme", help="theme_<user>.json")
    p.add_argument("-o", "--output", required=True, help="output PNG")
    p.add_argument("--seed", type=int, help="seed (default: derived from the chart)")
    p.add_argument("--backend", help="backend for this run (default: astro.backend)")
    p.add_argument("--moodboard", metavar="PATH", help="a moodboard image: the style reference with "
                   "sdxl.ip_adapter, else the img2img start when sdxl.init_strength is set")

    p = sub.add_parser("enhance", help="enhance one image without the daemon")
    _add_config(p)
    _add_set(p)
    p.add_argument("image", help="input image")
    p.add_argument("-o", "--output", required=True, help="output PNG")
    p.add_argument("--backend", help="backend for this run (default: enhance.backend)")

    p = sub.add_parser("stats", help="approval rates, review times, failures; learned defaults")
    _add_config(p)
    p.add_argument("--since", help="only decisions on or after this date (YYYY-MM-DD)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--learned", action="store_true", help="show the learned default parameters")
    p.add_argument("--plot", metavar="FILE.png", help="draw approval rates (needs matplotlib)")

    p = sub.add_parser("ui", help="review page in a browser (needs the 'ui' extra: Streamlit)")
    _add_config(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)

    p = sub.add_parser("api", help="HTTP API for the upstream app, /healthz, /metrics (needs the 'api' extra)")
    _add_config(p)
    p.add_argument("--host", help="listen address (default: api.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: api.port, 8600)")
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="override log.format")


DAEMON_COMMANDS = ("run", "drain")  # their unexpected errors keep the traceback (the journal needs it)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from astrowatch.storage.files import process_umask

    process_umask()  # read once, before any thread: every file we create honours it
    module = importlib.import_module(f"astrowatch.commands.{args.command}")
    from astrowatch.core.errors import AstrowatchError

    try:
        code = int(module.main(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is caught below and not at exit
        return code
    except BrokenPipeError:  # `astrowatch review list --json | head`: the reader left, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a tool killed by the signal would
    except AstrowatchError as exc:
        print(f"astrowatch {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except PermissionError as exc:  # one line with the fix, never a traceback
        print(f"astrowatch {args.command}: error: {exc.strerror}: {exc.filename or ''} (are you in the "
              "service's group? check with 'id'; 'astrowatch doctor' says which modes to fix)", file=sys.stderr)
        return 77  # EX_NOPERM
    except Exception as exc:
        if args.command in DAEMON_COMMANDS or os.environ.get("ASTROWATCH_DEBUG"):
            raise
        print(f"astrowatch {args.command}: error: {type(exc).__name__}: {exc} "
              "(ASTROWATCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70  # EX_SOFTWARE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
