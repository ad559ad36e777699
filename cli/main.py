"""The `graphrec` command line: parse, call one library function, report."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from graphrec.data.config import BuildConfig
from graphrec.data.split import SPLITS
from graphrec.errors import ConfigError, GraphrecError
from graphrec.options import (
    COLD_STARTS,
    LOSSES,
    MODEL_KINDS,
    RETRIEVAL_INDEXES,
    SPLIT_STRATEGIES,
    TAIL_SHAPES,
    TEXT_PRECISIONS,
    field_defaults,
    field_docs,
)
from graphrec.serve.workdir import DEFAULT_WORKDIR, WORKDIR_ENV, Workdir
from graphrec.train.config import (
    ITEM_INIT_CHOICES,
    LR_SCHEDULES,
    NEGATIVE_CHOICES,
    PRECISIONS,
    TrainConfig,
)


def _config_option(config: type, name: str, *flags: str, dest: str | None = None, **kw):
    """``--name`` for the field ``name`` of the dataclass ``config``: its default and help
    come from the library (one source of truth); ``dest``: the parameter's name here when it
    differs from the field's."""
    field = name.replace("-", "_")
    defaults, docs = field_defaults(config), field_docs(config)
    kw.setdefault("default", defaults[field])
    default = kw["default"]
    kw.setdefault("show_default", default is not None and default is not False and default != ())
    # The docstring's first sentence, without reST literals.
    kw.setdefault("help", re.split(r"(?<=\.)\s+(?=[A-Z0-9(])", docs[field])[0].replace("``", ""))
    return click.option(f"--{name}", *flags, dest or field, **kw)


TRAIN_DEFAULTS = field_defaults(TrainConfig)


class Context:
    def __init__(self, workdir: Path, debug: bool):
        self.layout = Workdir(workdir)
        self.debug = debug

    @property
    def graph_dir(self) -> Path:
        return self.layout.graph_dir

    @property
    def model_dir(self) -> Path:
        return self.layout.model_dir


def flag_speller(command: click.Command | None):
    """Library parameter name -> this command's flag for it (``ks`` -> ``--k``,
    ``k`` -> ``-k``), else another command's (``no_text`` -> build-graph's ``--no-text``);
    names no command has an option for stay as they are."""
    flags = {}
    others = [c for c in main.commands.values() if c is not command]
    for param in [p for c in [command, *others] for p in getattr(c, "params", [])]:
        if isinstance(param, click.Option) and param.name:
            flag = max(param.opts, key=len) if param.name != "k" else param.opts[0]
            flags.setdefault(param.name, flag)
            # The library's name for an option whose destination differs (--items -> items_file).
            flags.setdefault(max(param.opts, key=len).lstrip("-").replace("-", "_"), flag)
    return lambda name: flags.get(name, name)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("graphrec")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def handle_errors(fn):
    """Turn library errors into one line on stderr and exit code 1 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = getattr(ctx.find_object(Context), "debug", False)
        try:
            return fn(*args, **kwargs)
        except GraphrecError as exc:
            if debug:
                raise
            click.echo(f"error: {exc.describe(flag_speller(ctx.command))}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("interrupted: nothing was half-written", err=True)
            ctx.exit(130)
        except OSError as exc:  # a path the library could not write (or read) at all
            if debug:
                raise
            where = f" {exc.filename}" if exc.filename else ""
            click.echo(f"error: cannot use{where}: {exc.strerror or exc}", err=True)
            ctx.exit(1)

    return wrapper


def writes_workdir(fn):
    """Hold WORKDIR/.lock while the command runs: a second writer of the same work directory
    is refused in one line naming the first (the lock dies with its process)."""

    @functools.wraps(fn)
    def wrapper(obj: Context, *args, **kwargs):
        from graphrec.distributed import launched
        from graphrec.fsio import exclusive_lock

        # Processes training together: rank 0 holds the lock for all of them, and a
        # launcher of N processes leaves it to its rank 0.
        group = launched()
        if not group.leader or (kwargs.get("nproc", 1) > 1 and group.solo):
            return fn(obj, *args, **kwargs)
        with exclusive_lock(obj.layout.root, f"graphrec {click.get_current_context().info_name}"):
            return fn(obj, *args, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              envvar=WORKDIR_ENV, default=DEFAULT_WORKDIR, show_default=True,
              help="Where graph/ and model/ live (env GRAPHREC_WORKDIR).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.version_option(package_name="graphrec")
@click.pass_context
def main(ctx: click.Context, workdir: Path, debug: bool, verbose: int, quiet: bool) -> None:
    """graphrec: graph-based recommendations from interaction logs and item text."""
    _setup_logging(verbose, quiet)
    ctx.obj = Context(workdir, debug)


# Existence is checked by the readers, which name the option and the file in one line.
INPUT_FILE = click.Path(dir_okay=False, path_type=str)
TAIL_BOOST_HELP = ("Lift long-tail items (all but the 20% most-interacted) by up to this many "
                   "score standard deviations; 0 = rank by the model alone. MovieLens: 1.25 "
                   "gives the default model ~2.8x the tail recall for ~3% of its recall, 1.7 "
                   "a --negatives uniform model ~5x for ~3%.")


@main.command("build-graph")
@_config_option(BuildConfig, "interactions", type=INPUT_FILE)
@_config_option(BuildConfig, "items", type=INPUT_FILE)
@_config_option(BuildConfig, "train", dest="train_file", type=INPUT_FILE)
@_config_option(BuildConfig, "test", dest="test_file", type=INPUT_FILE)
@_config_option(BuildConfig, "movielens", type=click.Path(file_okay=False, path_type=str))
@_config_option(BuildConfig, "user-col")
@_config_option(BuildConfig, "item-col")
@_config_option(BuildConfig, "rating-col")
@_config_option(BuildConfig, "time-col")
@_config_option(BuildConfig, "item-id-col")
@_config_option(BuildConfig, "text-cols", default=None,
                help="Comma-separated text columns of the item file (default: every column "
                     "but the id).")
@_config_option(BuildConfig, "min-rating", type=float)
@_config_option(BuildConfig, "min-user-interactions", type=int)
@_config_option(BuildConfig, "min-item-interactions", type=int)
@_config_option(BuildConfig, "split", type=click.Choice(SPLIT_STRATEGIES))
@_config_option(BuildConfig, "test-ratio", type=float)
@_config_option(BuildConfig, "valid-ratio", type=float)
@_config_option(BuildConfig, "cold-items", type=float)
@_config_option(BuildConfig, "seed", type=int)
@_config_option(BuildConfig, "text-model")
@_config_option(BuildConfig, "text-precision", type=click.Choice(TEXT_PRECISIONS))
@_config_option(BuildConfig, "no-text", is_flag=True)
@_config_option(BuildConfig, "device", default="auto", show_default=True)
@click.pass_obj
@handle_errors
@writes_workdir
def build_graph_cmd(obj: Context, **opts) -> None:
    """Read interactions and item text, split, embed text, write WORKDIR/graph."""
    from graphrec.build import build_graph

    text_cols = opts.pop("text_cols")
    text_cols = tuple(c.strip() for c in text_cols.split(",")) if text_cols else ()
    cfg = BuildConfig(
        train=opts.pop("train_file"), test=opts.pop("test_file"), text_cols=text_cols,
        cache_dir=str(obj.layout.text_cache), progress=True, **opts,
    )
    graph = build_graph(cfg, obj.graph_dir)
    m, s = graph.meta, graph.stats
    click.echo(
        f"graph: {m['num_users']} users, {m['num_items']} items, train {m['num_train']}, "
        f"valid {m['num_valid']}, test {m['num_test']}, cold items {m['num_cold_items']}"
    )
    click.echo(
        f"density {s['density']:.5f}, head 20% of items hold {s['head_interaction_share']:.1%} "
        f"of interactions, {s['components']} components (largest "
        f"{s['largest_component_share']:.1%} of nodes), median degree user "
        f"{s['user_degree'].get('p50', 0):g} / item {s['item_degree'].get('p50', 0):g}"
    )
    if m["num_duplicates_removed"]:
        click.echo(f"removed {m['num_duplicates_removed']} duplicate interactions")
    if m["text_model"] and m["num_items_without_text"]:
        click.echo(f"warning: {m['num_items_without_text']} items have no text", err=True)
    click.echo(f"wrote {obj.graph_dir} in {m['build_seconds']:.1f} s")


@contextlib.contextmanager
def _atomic_output(output: Path, parameter: str, mode: str = "w") -> Iterator:
    """An open file that replaces ``output`` on success (graphrec.fsio.atomic_file); a path
    that cannot be written is one error line naming ``parameter``, not a traceback."""
    from graphrec.fsio import atomic_file

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(output, mode) as f:
            yield f
    except OSError as exc:
        raise ConfigError(f"cannot write there ({exc.strerror or exc})", parameter=parameter,
                          value=str(output)) from exc


@main.command("export-graph")
@click.option("--format", "fmt", type=click.Choice(["graphml", "gexf"]), default="graphml",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Output file [default: WORKDIR/graph.<format>].")
@click.pass_obj
@handle_errors
def export_graph_cmd(obj: Context, fmt: str, output: Path | None) -> None:
    """Write the training graph for Gephi or networkx (GraphML or GEXF)."""
    import networkx as nx

    from graphrec.artifacts import load_graph
    from graphrec.data import TRAIN
    from graphrec.graph import to_networkx

    graph = load_graph(obj.graph_dir)
    g = to_networkx(graph.csr(TRAIN), graph.user_ids, graph.item_ids, graph.item_titles)
    output = output or obj.layout.export_path(fmt)
    with _atomic_output(output, "output", "wb") as f:
        (nx.write_graphml if fmt == "graphml" else nx.write_gexf)(g, f)
    click.echo(f"wrote {output}: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges")


def echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _parse_ks(value: str) -> tuple[int, ...]:
    # ConfigError, not click.BadParameter: bad input gets one line, not a usage screen.
    try:
        ks = tuple(int(k) for k in value.split(",") if k.strip())
    except ValueError:
        raise ConfigError(
            f"--k {value!r}: expected comma-separated integers like 10,20,50") from None
    if not ks or any(k <= 0 for k in ks):
        raise ConfigError(f"--k {value!r}: expected positive integers")
    return ks


def _progress_factory(total: int, epoch: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}", unit="step", leave=False,
                disable=not sys.stderr.isatty())


def _train_option(name: str, *flags: str, **kw):
    return _config_option(TrainConfig, name, *flags, **kw)


@main.command("train")
@_train_option("epochs", type=int)
@_train_option("batch-size", type=int)
@_train_option("lr", type=float)
@_train_option("lr-schedule", type=click.Choice(LR_SCHEDULES))
@_train_option("dim", type=int)
@_train_option("layers", type=int)
@_train_option("reg", type=float)
@_train_option("negatives", type=click.Choice(NEGATIVE_CHOICES))
@_train_option("neg-alpha", type=float)
@_train_option("neg-share", type=float)
@_train_option("neg-candidates", type=int)
@_train_option("neg-top", type=int)
@_train_option("loss", type=click.Choice(LOSSES))
@_train_option("temperature", type=float)
@_train_option("item-init", type=click.Choice(ITEM_INIT_CHOICES))
@_train_option("cold-start", type=click.Choice(COLD_STARTS))
@_train_option("id-dropout", type=float)
@_train_option("device")
@_train_option("precision", type=click.Choice(PRECISIONS))
@_train_option("seed", type=int)
@_train_option("eval-every", type=int)
@_train_option("patience", type=int)
@click.option("--k", "ks", default=",".join(map(str, TRAIN_DEFAULTS["ks"])), show_default=True,
              help="Cut-offs, e.g. 10,20,50.")
@click.option("--resume", is_flag=True, help="Continue from the work directory's checkpoint.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Model directory to write instead of WORKDIR/model, e.g. a second model "
                   "to `graphrec compare` with the first.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train on this many processes (data-parallel over torch.distributed: "
                   "gloo on CPUs, one GPU each with NCCL); the same as running the command "
                   "under torchrun --nproc-per-node N -m graphrec_cli.")
@click.option("--partition", is_flag=True,
              help="On several processes, split the model instead of copying it: each holds "
                   "its share of the users' and items' embeddings, optimizer state and "
                   "adjacency, and each propagation layer exchanges the rows the others need "
                   "(for graphs whose model does not fit one device).")
@click.option("--model", "kind", type=click.Choice(MODEL_KINDS), default="lightgcn",
              show_default=True,
              help="lightgcn: TextLightGCN; filter: the training-free graph filter; ensemble: "
                   "the two blended. Filter settings and the blend weight are chosen on "
                   "validation (carved from training when the graph has no validation split).")
@click.pass_obj
@handle_errors
@writes_workdir
def train_cmd(obj: Context, ks: str, resume: bool, output: Path | None, kind: str,
              nproc: int, partition: bool, **opts) -> None:
    """Train a model on WORKDIR/graph and write WORKDIR/model (or --output)."""
    from graphrec.distributed import launched_world

    world = launched_world()
    if nproc > 1 and world == 1:
        return _launch(nproc)
    if world > 1 and nproc not in (1, world):
        raise ConfigError(f"this run was launched on {world} processes", parameter="nproc",
                          value=nproc)
    if world > 1 and kind != "lightgcn":
        raise ConfigError("only TextLightGCN trains on several processes", parameter="kind",
                          value=kind)
    from graphrec.artifacts import load_graph
    from graphrec.device import resolve_device
    from graphrec.distributed import end_process, join, leave
    from graphrec.train import TrainConfig

    graph = load_graph(obj.graph_dir)
    cfg = TrainConfig(ks=_parse_ks(ks), **opts)
    if kind != "lightgcn":
        return _train_other(obj, graph, cfg, kind, output, resume)
    group = join(resolve_device(cfg.device))
    if not group.leader:  # rank 0 reports for the group
        logging.getLogger("graphrec").setLevel(logging.WARNING)
    try:
        _train_lightgcn(obj, graph, cfg, group, resume, output, partition)
        leave(wait=True)
    finally:
        leave()
    if not group.solo:
        end_process()


def _launch(nproc: int) -> None:
    """This command again (without --nproc) on ``nproc`` processes of this machine
    (graphrec.distributed.launch)."""
    from graphrec.distributed import launch

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    launch(nproc, ["-m", "graphrec_cli", *args])


def _train_lightgcn(obj: Context, graph, cfg, group, resume: bool,
                    output: Path | None, partition: bool = False) -> None:
    """TextLightGCN on this process's ``group`` (rank 0 reports and writes the model), the
    model copied in every process or, with ``partition``, split between them."""
    from graphrec.artifacts import save_model
    from graphrec.pipeline import train_model
    from graphrec.train import Trainer
    from graphrec.train.partition import PartitionedTrainer

    split = partition and not group.solo
    trainer = PartitionedTrainer(graph, cfg, group) if split else Trainer(graph, cfg, group=group)
    c = trainer.cfg
    if group.leader:
        click.echo(
            f"training on {trainer.device}"
            + (f" x {group.world} processes" if not group.solo else "")
            + (", model split between them" if split else "")
            + f": {graph.num_users} users, {graph.num_items} items, {c.item_init} items, "
            f"batch {c.batch_size}, lr {c.lr:g}, {c.layers} layers, {c.negatives} negatives"
            + (f" (hardest of {c.neg_candidates})" if c.neg_candidates > 1 else "")
            + (f", {c.precision} products" if c.precision != "float32" else ""), err=True)
    checkpoint = obj.layout.checkpoint
    result = train_model(graph, trainer=trainer, checkpoint=checkpoint, resume=resume,
                         progress_factory=_progress_factory if group.leader else None)
    if not group.leader:
        return
    model_dir = output or obj.model_dir
    save_model(result, graph, model_dir)
    checkpoint.unlink(missing_ok=True)
    test = result.test
    summary = " ".join(f"{k}={v:.4f}" for k, v in test.items() if "@" in k and
                       k.split("@")[0] in ("recall", "ndcg", "tail_recall", "cold_recall"))
    click.echo(f"trained {len(result.history)} epochs in {result.timings['total_seconds']:.1f} s"
               + (f", best epoch {result.best_epoch}" if result.best_epoch else ""))
    if test:
        click.echo(f"test: {summary} (users={test['num_users']})")
    click.echo(f"wrote {model_dir}")


def _train_other(obj: Context, graph, cfg, kind: str, output: Path | None,
                 resume: bool) -> None:
    """``train --model filter|ensemble``."""
    from graphrec.pipeline import save_run, train_ensemble, train_filter

    def log(line: str) -> None:
        click.echo(line, err=True)

    checkpoint = obj.layout.checkpoint
    if kind == "filter":
        run = train_filter(graph, cfg, log=log)
    else:
        run = train_ensemble(graph, cfg, checkpoint=checkpoint, resume=resume,
                             progress_factory=_progress_factory, log=log)
    model_dir = output or obj.model_dir
    save_run(run, graph, model_dir)
    checkpoint.unlink(missing_ok=True)
    m = run.model
    f = m.get("filter", m)
    click.echo(f"{kind}: degree exponent {f['degree_exponent']}, rank {f['rank']}, "
               f"alpha {f['alpha']}" + (f", weight {m['weight']}" if kind == "ensemble" else "")
               + f"; {run.seconds:.1f} s")
    def summary(test: dict) -> str:
        return " ".join(f"{k}={v:.4f}" for k, v in test.items() if "@" in k and
                        k.split("@")[0] in ("recall", "ndcg", "tail_recall", "cold_recall"))

    if run.test:
        click.echo(f"test: {summary(run.test)} (users={run.test['num_users']})")
    if run.result is not None and run.result.test:  # an ensemble's parts, for comparison
        click.echo(f"  TextLightGCN alone: {summary(run.result.test)}")
        click.echo(f"  filter alone: {summary(run.parts['filter_test'])}")
    click.echo(f"wrote {model_dir}")


@main.command("evaluate")
@click.option("--k", "ks", default="20", show_default=True, help="Cut-offs, e.g. 10,20,50.")
@click.option("--split", type=click.Choice(list(SPLITS)[::-1]), default="test", show_default=True)
@click.option("--baselines", is_flag=True, help="Also score most-popular and item-kNN.")
@click.option("--tail-boost", type=float, default=0.0, show_default=True,
              help=TAIL_BOOST_HELP)
@click.option("--tail-shape", type=click.Choice(TAIL_SHAPES), default="degree",
              show_default=True,
              help="How --tail-boost is shared: degree = in proportion to a tail item's "
                   "interactions (the whole boost just below the head), flat = equally.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--device", default="auto", show_default=True)
@click.pass_obj
@handle_errors
def evaluate_cmd(obj: Context, ks: str, split: str, baselines: bool, tail_boost: float,
                 tail_shape: str, as_json: bool, device: str) -> None:
    """Full-ranking metrics of WORKDIR/model on the graph's test (or validation) split."""
    from graphrec.artifacts import load_graph
    from graphrec.eval import evaluate_model

    graph = load_graph(obj.graph_dir)
    result = evaluate_model(graph, obj.model_dir, split, _parse_ks(ks), baselines, device,
                            tail_boost, tail_shape)
    if as_json:
        echo_json(result)
        return
    rows = {"graphrec": result["model"], **result.get("baselines", {})}
    keys = [k for k in result["model"] if "@" in k]
    click.echo(f"{split} split, {result['model']['num_users']} users evaluated, "
               f"{result['seconds']:.2f} s")
    click.echo(f"{'model':<14}" + "".join(f"{k:>16}" for k in keys))
    for name, m in rows.items():
        click.echo(f"{name:<14}" + "".join(f"{m.get(k, float('nan')):>16.4f}" for k in keys))


def _load_recommender(obj: Context, tail_boost: float = 0.0, tail_shape: str = "degree"):
    from graphrec.serve import Recommender

    return Recommender.load(obj.model_dir, tail_boost, tail_shape)


def _print_recs(recs, as_json: bool, header: dict) -> None:
    if as_json:
        echo_json({**header, "items": [r.as_dict() for r in recs]})
        return
    for rank, r in enumerate(recs, start=1):
        click.echo(f"{rank:>3}. {r.item:<12} {r.score:8.4f}  {r.title}")


@main.command("recommend")
@click.option("--user", help="Raw user id from the input data.")
@click.option("--history", help="Comma-separated item ids, for a user not in the model.")
@click.option("--all-users", is_flag=True, help="Every user, one JSON line each, to --output.")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="Output file for --all-users; with --shard or --nproc, a folder of parts.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl",
              show_default=True, help="--all-users output: JSON lines, or Parquet (pyarrow).")
@click.option("--shard", help="--all-users for shard R of N of the users only (R/N, from 0): "
                              "writes OUTPUT/part-R-of-N; run the N shards anywhere.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="--all-users on this many local processes, one part file each.")
@click.option("-k", "--k", "k", type=int, default=10, show_default=True)
@click.option("--include-seen", is_flag=True, help="Do not exclude the user's known items.")
@click.option("--diversity", type=float, default=0.0, show_default=True,
              help="MMR re-ranking weight in [0, 1]: 0 = pure relevance, higher = less similar "
                   "items in the list (text-embedding cosine)")
@click.option("--tail-boost", type=float, default=0.0, show_default=True,
              help=TAIL_BOOST_HELP)
@click.option("--tail-shape", type=click.Choice(TAIL_SHAPES), default="degree",
              show_default=True,
              help="How --tail-boost is shared: degree = in proportion to a tail item's "
                   "interactions (the whole boost just below the head), flat = equally.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
@handle_errors
def recommend_cmd(obj: Context, user: str | None, history: str | None, all_users: bool,
                  output: Path | None, fmt: str, shard: str | None, nproc: int, k: int,
                  include_seen: bool, diversity: float, tail_boost: float, tail_shape: str,
                  as_json: bool) -> None:
    """Top-K items for a user (--user), a new user (--history) or everyone (--all-users)."""
    if sum(x is not None and x is not False for x in (user, history, all_users or None)) != 1:
        raise click.UsageError("give exactly one of --user, --history or --all-users")
    if (shard is not None or nproc > 1 or fmt != "jsonl") and not all_users:
        raise click.UsageError("--format, --shard and --nproc go with --all-users")
    if shard is not None and nproc > 1:
        raise click.UsageError("give one of --shard and --nproc")
    from graphrec.distributed import launched_world

    if nproc > 1 and launched_world() == 1:
        if output is None:
            raise click.UsageError("--all-users needs --output FILE")
        return _launch(nproc)
    from graphrec.popularity import check_tail_boost
    from graphrec.serve import check_diversity, check_k

    check_k(k)  # before loading the model: a bad -k, --diversity or --tail-boost costs nothing
    check_diversity(diversity)
    check_tail_boost(tail_boost)
    rec = _load_recommender(obj, tail_boost, tail_shape)
    if all_users:
        if output is None:
            raise click.UsageError("--all-users needs --output FILE")
        n = _write_all(rec, output, fmt, shard, k, include_seen, diversity)
        if as_json:
            echo_json({"users": n, "k": k, "output": str(output)})
        else:
            click.echo(f"wrote top-{k} for {n} users to {output}")
        return
    if user is not None:
        recs = rec.recommend(user, k, include_seen, diversity)
        header = {"user": user, "k": k}
    else:
        items = [h.strip() for h in history.split(",") if h.strip()]
        recs = rec.recommend_new_user(items, k, include_seen, diversity)
        header = {"history": items, "k": k}
    _print_recs(recs, as_json, header)


def _write_all(rec, output: Path, fmt: str, shard: str | None, k: int, include_seen: bool,
               diversity: float) -> int:
    """recommend --all-users: one file, or this process's part (--shard, or its rank when
    launched on several processes)."""
    from graphrec.distributed import launched
    from graphrec.serve.exports import (
        parse_shard,
        write_recommendation_file,
        write_recommendation_shard,
    )

    group = launched()
    if shard is None and group.solo:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            return write_recommendation_file(
                rec.recommend_all(k, include_seen=include_seen, diversity=diversity), output,
                fmt)
        except OSError as exc:
            raise ConfigError(f"cannot write there ({exc.strerror or exc})",
                              parameter="output", value=str(output)) from exc
    part = parse_shard(shard) if shard is not None else group
    if output.exists() and not output.is_dir():
        raise ConfigError("is a file; the parts of a sharded run go in a folder",
                          parameter="output", value=str(output))
    n, path = write_recommendation_shard(rec, output, part, k, include_seen, diversity, fmt)
    click.echo(f"shard {part.rank} of {part.world}: {path}", err=True)
    return n


@main.command("export-embeddings")
@click.option("--format", "fmt", type=click.Choice(["parquet", "faiss", "npy"]),
              default="parquet", show_default=True)
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder to write the files to.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
@handle_errors
def export_embeddings_cmd(obj: Context, fmt: str, output: Path, as_json: bool) -> None:
    """User and item embeddings of WORKDIR/model with their ids, for a vector engine
    (score = user . item)."""
    from graphrec.serve.exports import export_embeddings

    out = export_embeddings(_load_recommender(obj), output, fmt)
    if as_json:
        echo_json(out)
    else:
        click.echo(f"wrote {out['users']} users and {out['items']} items (dim {out['dim']}) "
                   f"to {output}: " + ", ".join(Path(f).name for f in out["files"]))


@main.command("similar")
@click.option("--item", required=True, help="Raw item id.")
@click.option("-k", "--k", "k", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
@handle_errors
def similar_cmd(obj: Context, item: str, k: int, as_json: bool) -> None:
    """Items nearest to --item (cold items included, through their text)."""
    recs = _load_recommender(obj).similar_items(item, k)
    _print_recs(recs, as_json, {"item": item, "k": k})


@main.command("explain")
@click.option("--user", required=True, help="Raw user id.")
@click.option("--item", required=True, help="Raw item id.")
@click.option("-k", "--k", "k", type=int, default=5, show_default=True,
              help="History items shown (and followed through other users).")
@click.option("--export", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the explanation subgraph (.graphml or .gexf).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
@handle_errors
def explain_cmd(obj: Context, user: str, item: str, k: int, export: Path | None,
                as_json: bool) -> None:
    """Why --item is scored as it is for --user: the exact share of each history item."""
    from graphrec.serve.explain import explain, explanation_graph

    if k < 1:
        raise ConfigError(parameter="k", value=k, expected="an integer >= 1")
    if export is not None and export.suffix not in (".graphml", ".gexf"):
        raise ConfigError(parameter="export", value=export, expected="a .graphml or .gexf file")
    rec = _load_recommender(obj)
    exp = explain(rec, user, item, k)
    if export is not None:
        import networkx as nx

        write = nx.write_graphml if export.suffix == ".graphml" else nx.write_gexf
        with _atomic_output(export, "export", "wb") as f:
            write(explanation_graph(exp, k), f)
    if as_json:
        echo_json(exp.as_dict())
        return
    click.echo(f"score {exp.score:.4f} for item {exp.item} and user {exp.user}: "
               f"self {exp.self:.4f} + {len(exp.contributions)} history items")
    for c in exp.contributions[:k]:
        title = rec.item_titles[rec.item_index(c.item)]
        click.echo(f"  {c.contribution:+.4f} ({c.share:6.1%})  {c.item:<12} {title}")
    for p in exp.paths:
        click.echo(f"  path: {exp.user} -> {p.via_item} -> user {p.via_user} -> {exp.item}")
    for other, cos in exp.text_neighbours:
        click.echo(f"  text neighbour: {other} (cosine {cos:.3f})")
    if export is not None:
        click.echo(f"wrote {export}", err=True)


MODEL_PATH = click.Path(file_okay=False, path_type=Path)


@main.command("compare")
@click.argument("model_a", type=MODEL_PATH)
@click.argument("model_b", type=MODEL_PATH)
@click.option("--split", type=click.Choice(list(SPLITS)[::-1]), default="test", show_default=True)
@click.option("--k", "ks", default="20", show_default=True, help="Cut-offs, e.g. 10,20.")
@click.option("--metrics", default="recall,ndcg,tail_recall", show_default=True,
              help="Per-user metrics, comma-separated (cold_recall, cold_ndcg for cold items).")
@click.option("--resamples", type=int, default=2000, show_default=True,
              help="Bootstrap resamples and sign-flip permutations per metric.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--device", default="auto", show_default=True)
@click.pass_obj
@handle_errors
def compare_cmd(obj: Context, model_a: Path, model_b: Path, split: str, ks: str, metrics: str,
                resamples: int, seed: int, as_json: bool, device: str) -> None:
    """Is MODEL_B better than MODEL_A? Paired per-user differences on WORKDIR/graph's split:
    BCa 95% intervals, permutation p-values (Holm-corrected) and wins per model."""
    from graphrec.artifacts import load_graph
    from graphrec.eval.compare import (
        FEW_DIFFERING_USERS,
        compare_models,
        format_interval,
        format_p,
    )

    if resamples < 100:
        raise ConfigError(parameter="resamples", value=resamples, expected="an integer >= 100")
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    graph = load_graph(obj.graph_dir)
    result = compare_models(graph, model_a, model_b, split, _parse_ks(ks), names,
                            resamples=resamples, seed=seed, device=device)
    if as_json:
        echo_json(result.to_json())
        return
    click.echo(f"{split} split, {result.users} users; B = {model_b} minus A = {model_a}; "
               f"BCa 95% intervals, {resamples} resamples; p: sign-flip permutation, "
               "Holm-corrected across the metrics")
    click.echo(f"{'metric':<16}{'A':>8}{'B':>8}{'B-A':>9}  {'95% interval':<20}"
               f"{'p':>8}{'p Holm':>8}{'A wins':>8}{'B wins':>8}{'ties':>7}")
    for key, m in result.metrics.items():
        click.echo(f"{key:<16}{m.a:>8.4f}{m.b:>8.4f}{m.diff:>+9.4f}  "
                   f"{format_interval(m.ci):<20}{format_p(m.p_value):>8}"
                   f"{format_p(m.p_holm):>8}{m.wins_a:>8}{m.wins_b:>8}{m.ties:>7}")
    for key, m in result.metrics.items():
        differing = m.wins_a + m.wins_b
        if 0 < differing < FEW_DIFFERING_USERS:
            click.echo(f"note: {key}: the models differ on {differing} users only; "
                       "its interval is likely too narrow")


@main.command("report")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file to write (default WORKDIR/report.html).")
@click.option("--model", "model", type=MODEL_PATH, default=None,
              help="Model directory (default WORKDIR/model).")
@click.option("--compare", "compare_with", type=MODEL_PATH, default=None,
              help="A second model: adds the paired comparison (B = this one).")
@click.option("--split", type=click.Choice(list(SPLITS)[::-1]), default="test", show_default=True)
@click.option("--k", "k", type=int, default=20, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.pass_obj
@handle_errors
def report_cmd(obj: Context, output: Path | None, model: Path | None,
               compare_with: Path | None, split: str, k: int, device: str) -> None:
    """One self-contained HTML evaluation report: metrics against the baselines, training
    curve, recall@K, the long tail, coverage, cold items (and a comparison)."""
    from graphrec.artifacts import load_graph
    from graphrec.eval.report import render_report, report_data

    if k < 1:
        raise ConfigError(parameter="k", value=k, expected="an integer >= 1")
    output = output or obj.layout.root / "report.html"
    graph = load_graph(obj.graph_dir)
    data = report_data(graph, model or obj.model_dir, split=split, k=k,
                       compare_with=compare_with, device=device)
    page = render_report(data)
    with _atomic_output(output, "output") as f:
        f.write(page)
    click.echo(f"wrote {output} ({len(page) / 1024:.0f} KiB)")


@main.command("add-items")
@click.option("--items", "items_file", type=INPUT_FILE, required=True,
              help="Item file of new items: id + text columns.")
@click.option("--item-id-col", help="Id column of --items.")
@click.option("--text-cols", help="Comma-separated text columns of --items.")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Model directory [default: WORKDIR/model].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.pass_obj
@handle_errors
def add_items_cmd(obj: Context, items_file: str, item_id_col: str | None,
                  text_cols: str | None, model_dir: Path | None, device: str) -> None:
    """Add new items to a trained model from their text alone (no retraining).

    Evaluate still scores only the graph's items; train rewrites the model without them.
    """
    from graphrec.fsio import exclusive_lock
    from graphrec.serve import add_items_from_file

    model_dir = model_dir or obj.model_dir
    cols = tuple(c.strip() for c in text_cols.split(",")) if text_cols else ()
    with exclusive_lock(model_dir.parent, "graphrec add-items"):  # the workdir by default
        added = add_items_from_file(model_dir, items_file, item_id_col, cols,
                                    cache_dir=obj.layout.text_cache, device=device,
                                    progress=True)
    click.echo(f"added {added.added} items to {model_dir} ({added.num_items} items now)")


@main.command("update")
@click.option("--interactions", type=INPUT_FILE,
              help="New interactions, in build-graph's format and the graph's columns.")
@click.option("--items", "items_file", type=INPUT_FILE,
              help="Item file with the text of new items (id + text columns).")
@click.option("--fine-tune", "fine_tune", type=int, default=0, show_default=True,
              help="After the fold-in, train this many epochs over the new interactions and "
                   "a replayed sample of old ones (0 = fold-in only).")
@click.option("--replay", "old_ratio", type=float, default=4.0, show_default=True,
              help="Old interactions replayed per new one in --fine-tune epochs.")
@click.option("--fine-tune-lr", "lr_scale", type=float, default=1.0, show_default=True,
              help="Learning rate of --fine-tune epochs, as a multiple of the model's.")
@click.option("--pending/--no-pending", default=True, show_default=True,
              help="Also take the interactions the service acknowledged (WORKDIR/pending/).")
@click.option("--device", default="auto", show_default=True,
              help="Device of the text encoder (new items) and of --fine-tune.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
@handle_errors
@writes_workdir
def update_cmd(obj: Context, interactions: str | None, items_file: str | None, fine_tune: int,
               old_ratio: float, lr_scale: float, pending: bool, device: str,
               as_json: bool) -> None:
    """Fold new interactions, users and items into WORKDIR/model without retraining.

    Appends them to WORKDIR/graph (pairs it has are skipped), re-embeds every user and item
    with new interactions over the grown graph, and publishes a new model version; `train`
    retrains from scratch on the grown graph.
    """
    from graphrec.pipeline import update_model
    from graphrec.serve.pending import PendingLog, pending_dir

    if fine_tune < 0:
        raise ConfigError(parameter="fine_tune", value=fine_tune, expected="an integer >= 0")
    done = update_model(obj.graph_dir, obj.model_dir, interactions, items_file, fine_tune,
                        old_ratio, cache_dir=obj.layout.text_cache, device=device,
                        pending=PendingLog(pending_dir(obj.model_dir)) if pending else None,
                        lr_scale=lr_scale)
    g, f = done.growth, done.folded
    summary = {
        "rows": g.rows if g else 0, "interactions": f.interactions,
        "new_users": f.new_users, "new_items": f.new_items, "users_updated": f.users,
        "items_updated": f.items, "fold_in_seconds": round(f.seconds, 4),
        "fine_tune_epochs": done.fine_tuned, "version": done.version,
        "seconds": round(done.seconds, 3),
    }
    if as_json:
        echo_json(summary)
    elif done.version is None:
        click.echo(f"nothing new: {obj.model_dir} is up to date with {obj.graph_dir}")
    else:
        click.echo(f"folded in {f.interactions} interactions ({f.new_users} new users, "
                   f"{f.new_items} new items; {f.users} users and {f.items} items updated) in "
                   f"{f.seconds:.3f} s" + (f", fine-tuned {done.fine_tuned} epochs"
                                           if done.fine_tuned else ""))
        click.echo(f"wrote {obj.model_dir} version {done.version}")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; another than loopback needs --api-key.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--model", "--model-dir", "model_dir",
              type=click.Path(file_okay=False, path_type=Path),
              help="Model directory [default: WORKDIR/model].")
@click.option("--api-key", envvar="GRAPHREC_API_KEY",
              help="Key the write endpoints require in X-API-Key (env GRAPHREC_API_KEY).")
@click.option("--device", default="auto", show_default=True,
              help="Device of the text encoder for added items.")
@click.option("--cache-size", type=int, default=None,
              help="Responses kept in the cache (0 = no cache) [default: 100000].")
@click.option("--cache-ttl", type=float, default=None,
              help="Seconds a cached response lives [default: 300].")
@click.option("--index", type=click.Choice(RETRIEVAL_INDEXES), default="auto",
              show_default=True,
              help="Top-k retrieval: exact products, a faiss ANN index, or ANN for large "
                   "catalogs only.")
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Score concurrent requests for known users as one product.")
@click.option("--batch-window-ms", type=float, default=0.0, show_default=True,
              help="How long a request waits for others when the scorer is idle (batches "
                   "form anyway while it is busy).")
@click.option("--max-batch", type=int, default=64, show_default=True,
              help="Most users scored in one product.")
@click.option("--watch-s", type=float, default=2.0, show_default=True,
              help="Seconds between checks for a new model version (0 = only on "
                   "POST /admin/reload or SIGHUP).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Worker processes; they share the memory-mapped arrays.")
@click.option("--score-device", default="cpu", show_default=True,
              help="Where scores are computed: cpu, cuda[:N] or auto (on CUDA every product "
                   "is exact).")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="One log line per request (Prometheus /metrics counts them either way).")
@click.pass_obj
@handle_errors
def serve_cmd(obj: Context, host: str, port: int, model_dir: Path | None,
              api_key: str | None, device: str, cache_size: int | None,
              cache_ttl: float | None, index: str, batching: bool, batch_window_ms: float,
              max_batch: int,
              watch_s: float, workers: int, score_device: str, access_log: bool) -> None:
    """Serve recommendations over HTTP (JSON; OpenAPI at /docs)."""
    from graphrec.artifacts import read_model_config
    from graphrec.artifacts.model_dir import model_kind

    try:
        import uvicorn

        from graphrec.serve.http import CONFIG_ENV, create_app
    except ImportError as exc:
        raise ConfigError(f"the service needs the serve extra ({exc.name} is missing): "
                          'pip install -e ".[serve]"') from None
    if api_key is None and not _is_loopback(host):
        raise ConfigError("binding an address other than loopback needs an API key for the "
                          "write endpoints ({api_key})", parameter="host", value=host)
    if workers < 1:
        raise ConfigError(parameter="workers", value=workers, expected="at least 1")
    from graphrec.device import resolve_device
    from graphrec.errors import DeviceError

    try:  # now, in one line, not in the server's start-up
        resolve_device(score_device)
    except DeviceError as exc:
        raise DeviceError(exc.message, parameter="score_device", value=score_device,
                          expected=exc.expected) from None
    model_dir = model_dir or obj.model_dir
    config = read_model_config(model_dir)  # a missing or stale model: one line now
    if index == "ann" and model_kind(config) != "lightgcn":
        raise ConfigError(f"a {model_kind(config)} model is scored exactly (the filter has "
                          "no factor form to index)", parameter="index", value=index,
                          expected="exact or auto")
    import torch

    # One request's products are tiny: intra-op threads only add hand-offs (and contend
    # with each other across concurrent requests).
    torch.set_num_threads(1)
    cache = {k: v for k, v in (("cache_size", cache_size), ("cache_ttl", cache_ttl))
             if v is not None}
    settings = dict(api_key=api_key, cache_dir=str(obj.layout.text_cache), device=device,
                    index=index, batching=batching, batch_window_s=batch_window_ms / 1000,
                    max_batch=max_batch, score_device=score_device,
                    watch_s=watch_s, **cache)
    if workers == 1:
        app = create_app(model_dir, **settings)  # bad settings fail here, in one line
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)
        return
    import os

    create_app(model_dir, **settings)  # checks the settings before any worker starts
    os.environ[CONFIG_ENV] = json.dumps({"model_dir": str(model_dir), **settings})
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # each worker: one scoring thread
    uvicorn.run("graphrec.serve.http:app_from_env", factory=True, workers=workers,
                host=host, port=port, log_level="info", access_log=access_log)


def _workdir_after_command(ctx: click.Context, param: click.Parameter,
                           value: Path | None) -> None:
    if value is not None:
        ctx.find_object(Context).layout = Workdir(value)


# `graphrec train --workdir W` as well as `graphrec --workdir W train`: every command takes the
# group's option too, through this one definition.
for _command in main.commands.values():
    _command.params.append(click.Option(
        ["--workdir"], type=click.Path(file_okay=False, path_type=Path), expose_value=False,
        callback=_workdir_after_command, help="Same as graphrec --workdir, after the command."))


if __name__ == "__main__":
    main()
