"""The ``fedad`` command line: generate data, train a federation, score new rows.

Every subcommand is a thin shell over the package: ``run`` and ``simulate`` share one code path
(:func:`train_and_report`). A user's mistake (missing file, bad cell, bad flag value) prints one
line on stderr and exits with code 2; outputs are written to temporary paths and renamed only when
complete.

Start-up is kept lean: this module imports only the standard library and the torch-free
configuration; each command imports what it needs (PyTorch, pandas, Matplotlib) when it runs, so
``fedad --help`` and a flag mistake answer at once. The training flags are generated from the
fields of :class:`~fedad_tutorial.config.FederatedConfig` (declared once, there).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from fedad_tutorial import __version__
from fedad_tutorial.config import MAX_SEED, PARAMS, FederatedConfig, Param
from fedad_tutorial.defaults import SIMULATE
from fedad_tutorial.errors import UserError
from fedad_tutorial.params import FLOWER, TEST_FRACTION
from fedad_tutorial.runs import MODEL_FILE
from fedad_tutorial.threads import ENV_VAR as THREADS_ENV
from fedad_tutorial.threads import MAX_THREADS, requested_threads, set_threads

EXIT_USER_ERROR = 2


def _run_files(output_dir: Path) -> str:
    """What the run folder just written holds, as the commands that write one say (the figure only if
    it was drawn: unlabelled data has no F1 to plot)."""
    figure = (output_dir / "figures" / "f1_per_round.png").is_file()
    return f"{MODEL_FILE}, history.csv, summary.json, {'figures/f1_per_round.png, ' if figure else ''}tensorboard/"


def _locked(*paths: Path | None) -> ExitStack:
    """Hold :func:`~fedad_tutorial.outputs.output_lock` on each output path given, for the whole command."""
    from fedad_tutorial.outputs import output_lock

    stack = ExitStack()
    try:
        for path in dict.fromkeys(p for p in paths if p is not None):
            stack.enter_context(output_lock(path))
    except BaseException:
        stack.close()
        raise
    return stack


def _one_line(message: str) -> str:
    """An error message on one line, whatever the names in it hold: a file or column name with a line
    break shows it as ``\\n``."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def _number(value: float) -> str:
    """A flag's number as given (``99.9999999``, not ``100``)."""
    return format(value, ".15g")


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit with code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with what it accepts and its default: ``(in [0, 0.5); default: 0.1)``.

    The range comes from the flag's type (:func:`_typed`); the default is shown wherever there is one
    (``0`` included), but not on required flags, on switches (their help says what they change) or
    where the default is ``None`` (their help says what happens without them)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        notes = []
        param = getattr(action.type, "param", None)
        if param is not None:
            notes.append(param.describe())
        switch = action.nargs == 0
        if not (action.required or switch or action.default is None or action.default is argparse.SUPPRESS):
            notes.append("default: %(default)s")
        return f"{text} ({'; '.join(notes)})" if notes else text


def _dashes(argv: Sequence[str]) -> list[str]:
    """Accept underscore spellings of every flag (``--num_nodes`` is ``--num-nodes``)."""
    out = []
    for token in argv:
        if token == "--":  # everything after it is positional
            out.extend(argv[len(out):])
            break
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            token = name.replace("_", "-") + eq + value
        out.append(token)
    return out


def _typed(kind: type, param: Param):
    """An argparse type: parse the text as ``kind`` and check it against ``param``'s range."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            word = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {word} {param.describe()}, got {text!r}") from None
        if not param.allows(value):
            raise argparse.ArgumentTypeError(f"must be {param.describe()}, got {text}")
        return value

    parse.param = param  # what the help shows as the flag's range
    return parse


def _int_in(low: int, high: int):
    return _typed(int, Param("", low=low, high=high))


_positive_int = _int_in(1, 10**9)
_positive_float = _typed(float, Param("", low=0, low_open=True))
_fraction = _typed(float, Param("", low=0, high=1, low_open=True, high_open=True))
_rate = _typed(float, Param("", low=0, high=1, high_open=True))
_percent = _typed(float, Param("", low=0, high=100, low_open=True, high_open=True))
_seed = _int_in(0, MAX_SEED)
#: Flags whose spelling differs from the configuration field's name.
_FLAG_ALIASES = {"rounds": ("--rounds", "--num-rounds")}
_FIELD_TYPES = {"int": int, "float": float, "str": str}


def _threads_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_int_in(1, MAX_THREADS), default=None,
                   help=f"PyTorch intra-op threads, by default ${THREADS_ENV}, else 1 (the models are small: extra "
                        "threads only wait on a busy machine)")


#: Configuration fields a command has no use for: a Flower deployment trains each client in its own
#: process, one after another (the loop engine's steps), so ``server`` offers no engine to choose.
_NOT_ON = {"server": {"engine"}}


def _training_flags(rounds: int, skip: set[str] = frozenset()) -> argparse.ArgumentParser:
    """Flags shared by ``run``, ``simulate`` and ``server``: one per command-line field of
    :class:`FederatedConfig` (but ``skip``), with its help and range; defaults from ``FederatedConfig()``."""
    from dataclasses import fields

    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model and training")
    for f in fields(FederatedConfig):
        param = f.metadata["param"]
        if not param.cli or f.name in skip:
            continue
        flags = _FLAG_ALIASES.get(f.name, (f"--{f.name.replace('_', '-')}",))
        default = rounds if f.name == "rounds" else f.default
        if param.choices is not None:
            g.add_argument(*flags, dest=f.name, choices=list(param.choices), default=default, help=param.help)
        else:
            g.add_argument(*flags, dest=f.name, type=_typed(_FIELD_TYPES[str(f.type)], param), default=default,
                           help=param.help)
    g.add_argument("--test-fraction", type=_typed(float, TEST_FRACTION), default=TEST_FRACTION.default,
                   help=TEST_FRACTION.help)
    _threads_flag(g)
    g.add_argument("--quiet", action="store_true",
                   help="no progress bar or progress lines (the per-round table and the results still print)")
    return p


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    parser = _Parser(prog="fedad", description="Federated anomaly detection with autoencoders.",
                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"fedad-tutorial {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    gen = sub.add_parser("generate-data", help="write synthetic cloud-activity CSVs, one per node",
                         formatter_class=fmt)
    gen.add_argument("--num-nodes", type=_positive_int, default=10, help="number of nodes")
    gen.add_argument("--samples-per-node", type=_positive_int, default=None,
                     help="rows per node; by default a different size per node, 300-1200")
    gen.add_argument("--num-features", type=_positive_int, default=30, help="metrics per row")
    gen.add_argument("--anomaly-rate", type=_rate, default=0.05, help="share of anomalous rows")
    gen.add_argument("--output-dir", type=Path, default=Path("data"),
                     help="folder for node_*.csv (new or empty, or an earlier output of generate-data or split, "
                          "which it replaces)")
    gen.add_argument("--seed", type=_seed, default=42, help="random seed")

    sim = sub.add_parser("simulate", parents=[_training_flags(rounds=SIMULATE.rounds)], formatter_class=fmt,
                         help="federated training over every node_*.csv of a folder (one client each)")
    sim.add_argument("--data-dir", type=Path, default=Path("data"), help="folder with node_*.csv")
    sim.add_argument("--output-dir", type=Path, default=Path("runs/simulate"), help="run folder to write")
    sim.add_argument("--no-figure", dest="figure", action="store_false",
                     help="skip OUTPUT_DIR/figures/f1_per_round.png, which is drawn otherwise (Matplotlib is then "
                          "not imported: a quicker start)")

    run = sub.add_parser("run", parents=[_training_flags(rounds=30)], formatter_class=fmt,
                         help="the default demo: generated federation, FedAvg, metrics and plots")
    run.add_argument("--num-nodes", type=_positive_int, default=10, help="number of generated nodes")
    run.add_argument("--output-dir", type=Path, default=Path("runs/default"),
                     help="run folder to write (its figures/ holds f1_per_round.png)")

    score = sub.add_parser("score", help="score rows with a trained model", formatter_class=fmt)
    score.add_argument("--model", type=Path, required=True, help=f"a model file (a run's {MODEL_FILE})")
    score.add_argument("--data", type=Path, required=True, help="CSV with the model's feature columns")
    score.add_argument("--output", type=Path, default=Path("scores.csv"),
                       help="CSV to write (an existing file only if fedad score wrote it, unless --overwrite)")
    score.add_argument("--explain", metavar="K|FEATURES", default=None,
                       help="for each flagged row, add columns naming the K metrics with the largest terms of its "
                            "score (or the comma-separated FEATURES): value, normal_low and normal_high (the "
                            "model's normal range) and score_term (the metric's term of the score: its squared "
                            "reconstruction error divided by the number of metrics, or by 2 for a VAE's ELBO "
                            "score; all metrics' terms, plus latent_score_term for ELBO, add up to the score)")
    score.add_argument("--report", type=Path, metavar="FILE", default=None,
                       help="also draw the highest-scoring alarms and their top metrics (FILE.html or FILE.png)")
    choice = score.add_mutually_exclusive_group()
    choice.add_argument("--percentile", metavar="P", type=_percent,
                        default=None, help="flag rows above the P-th percentile of the federation's training scores "
                                           "instead of the saved threshold (from the histogram in the model file)")
    choice.add_argument("--max-alarm-rate", metavar="R", type=_fraction, default=None,
                        help="flag at most the share R of the federation's training rows (the threshold at the "
                             "100 x (1 - R)th percentile) instead of the saved threshold")
    score.add_argument("--overwrite", action="store_true",
                       help="replace an existing --output or --report file even if fedad score did not write it")
    _threads_flag(score)
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_split_command(sub, fmt)
    _add_flower_commands(sub, fmt)
    return parser


def _add_split_command(sub, fmt) -> None:
    """``fedad split``: one table (a CSV or an ADBench ``.npz``) dealt out to node CSVs."""
    split = sub.add_parser("split", formatter_class=fmt,
                           help="deal the rows of one CSV or .npz (arrays X, y) out to node_*.csv files for simulate")
    split.add_argument("input", type=Path, metavar="INPUT",
                       help="a .csv (feature columns, optional 'label') or a .npz with X (rows x features) and "
                            "optional y (1 = anomaly), as ADBench and ODDS publish them")
    split.add_argument("--nodes", type=_positive_int, required=True, help="number of node CSVs to write")
    split.add_argument("--output", type=Path, required=True,
                       help="folder for node_1.csv ... (new or empty, or an earlier output of split or "
                            "generate-data, which it replaces)")
    split.add_argument("--by", choices=["random", "order", "cluster"], default="random",
                       help="random: equal shuffled parts; order: contiguous blocks in file order (time); "
                            "cluster: non-IID, each node a different mix of k-means profiles")
    split.add_argument("--seed", type=_seed, default=0, help="random seed")


def _add_flower_commands(sub, fmt) -> None:
    """``fedad server`` and ``fedad client``: the same training with real Flower processes."""
    server = sub.add_parser("server", parents=[_training_flags(SIMULATE.rounds, _NOT_ON["server"])],
                            formatter_class=fmt,
                            help="Flower server: start a SuperLink, wait for clients, train, write the run folder")
    server.add_argument("--min-clients", type=_typed(int, FLOWER["min_clients"]),
                        default=FLOWER["min_clients"].default, help=FLOWER["min_clients"].help)
    server.add_argument("--address", default="127.0.0.1:8000", help="HOST:PORT the SuperLink listens on")
    server.add_argument("--output-dir", type=Path, default=Path("runs/flower"),
                        help="run folder to write (Flower's logs go to OUTPUT_DIR/flower/); while training it "
                             "holds checkpoint.pt, the last completed round, and a new run never replaces "
                             "a folder holding one")
    server.add_argument("--resume", type=Path, default=None, metavar="RUN",
                        help="continue the unfinished run in the run folder RUN (a server killed after a "
                             "round) from its checkpoint, with the same training flags and nodes; RUN "
                             "replaces --output-dir")
    for name in ("wait_timeout", "round_timeout"):
        server.add_argument(f"--{name.replace('_', '-')}", type=_typed(float, FLOWER[name]),
                            default=FLOWER[name].default, help=FLOWER[name].help)
    server.add_argument("--certificates", type=Path, default=None,
                        help="folder with ca.crt, server.pem and server.key for TLS (`fedad certs --host NAME "
                             "--output DIR` makes one)")
    server.add_argument("--authorized-keys", type=Path, default=None,
                        help="the public keys of the nodes that may join, one per line (each client's "
                             "KEYFILE.pub from `fedad keygen`); required with --certificates")
    server.add_argument("--insecure", action="store_true",
                        help="no TLS and no node authentication: any process that reaches the port can join "
                             "or submit apps (local experiments only)")
    client = sub.add_parser("client", formatter_class=fmt,
                            help="Flower client: serve one node's CSV to a fedad server until training ends")
    client.add_argument("--node-id", type=_positive_int, required=True,
                        help="this node's number (1, 2, ...): node k uses the seeds of the k-th CSV in simulate")
    client.add_argument("--data-path", type=Path, required=True, help="this node's CSV")
    client.add_argument("--server-address", default="127.0.0.1:8000",
                        help="HOST:PORT of the fedad server")
    client.add_argument("--root-certificates", type=Path, default=None,
                        help="the CA certificate (ca.crt) that signed the server's certificate (TLS)")
    client.add_argument("--auth-key", type=Path, default=None,
                        help="this node's private key (`fedad keygen`); its .pub must be in the server's "
                             "--authorized-keys; required with --root-certificates")
    client.add_argument("--insecure", action="store_true", help="no TLS and no authentication (local experiments only)")
    client.add_argument("--wait-timeout", type=_positive_float, default=120.0,
                        help="seconds to keep trying to reach the server (before training and whenever it "
                             "is lost, e.g. restarting with --resume: then the client joins it again) before "
                             "giving up")
    _threads_flag(client)
    _add_keygen_command(sub, fmt)
    _add_certs_command(sub, fmt)


def _add_keygen_command(sub, fmt) -> None:
    """``fedad keygen``: a node's key pair for ``fedad client --auth-key`` / ``fedad server --authorized-keys``."""
    keygen = sub.add_parser("keygen", formatter_class=fmt,
                            help="make a client's key pair: KEYFILE (private, mode 600) and KEYFILE.pub")
    keygen.add_argument("--output", type=Path, required=True,
                        help="private key file to write (its public key goes to OUTPUT.pub); never overwritten")
    keygen.add_argument("--comment", default=None,
                        help="name at the end of the public key line; by default the file name")


def _add_certs_command(sub, fmt) -> None:
    """``fedad certs``: a CA and a server certificate for ``fedad server --certificates``."""
    from fedad_tutorial.flower.certs import DEFAULT_DAYS, MAX_DAYS

    certs = sub.add_parser("certs", formatter_class=fmt,
                           help="make a CA and a server certificate for the names clients use (TLS)")
    certs.add_argument("--host", action="append", required=True, metavar="NAME",
                       help="a DNS name or IP address clients use to reach the server; repeat for each")
    certs.add_argument("--output", type=Path, required=True, metavar="DIR",
                       help="new folder for ca.crt, server.pem and server.key (for --certificates); never "
                            "overwritten")
    certs.add_argument("--ca-key", type=Path, default=None, metavar="FILE",
                       help="where the CA's private key goes, outside DIR (default: DIR-ca.key); never overwritten")
    certs.add_argument("--days", type=_int_in(1, MAX_DAYS), default=DEFAULT_DAYS,
                       help="days the certificates are valid")


def config_from_args(args: argparse.Namespace) -> FederatedConfig:
    """The :class:`FederatedConfig` of a ``run``/``simulate``/``server`` command line: ``FederatedConfig()``
    with every field the command has a flag for taken from the flags. Flags the model has no use for
    (:data:`UNUSED`) keep their defaults, with one line on stderr naming those given."""
    skip = UNUSED.get(args.model, UNUSED["network"])
    unused = [name for name in skip if name in getattr(args, "given", ())]
    if unused:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in unused)
        print(f"fedad {args.command}: note: --model {args.model} does not use {flags}; ignored", file=sys.stderr)
    return replace(FederatedConfig(), **{name: getattr(args, name) for name, param in PARAMS.items()
                                         if param.cli and hasattr(args, name) and name not in skip})


#: The training flags a model has no use for: a forest grows in one round, with no network, loss or engine;
#: an ensemble's network is an autoencoder (no KL weight); a network grows no trees.
UNUSED = {"iforest": ("rounds", "local_epochs", "batch_size", "lr", "latent_dim", "beta", "fraction", "engine",
                      "trim"),
          "ensemble": ("beta",), "network": ("trees_per_client", "max_samples")}


def _given(argv: Sequence[str]) -> set[str]:
    """The configuration fields whose flags appear in ``argv`` (already through :func:`_dashes`)."""
    aliases = {flag: name for name, flags in _FLAG_ALIASES.items() for flag in flags}
    out = set()
    for token in argv:
        if token == "--":
            break
        if token.startswith("--"):
            flag = token.partition("=")[0]
            out.add(aliases.get(flag, flag[2:].replace("-", "_")))
    return out


def inverted_hint(model: str, roc_auc: float | None) -> str | None:
    """One line when held-out labels show ROC-AUC below 0.5: the model ranks these anomalies as *more* normal
    than the normal rows (they look more regular to it, as chapter 13 shows on optdigits), and the other family
    may see them; ``None`` otherwise (and for an ensemble, which already holds both families)."""
    if roc_auc is None or not roc_auc < 0.5 or model == "ensemble":
        return None
    other = "--model ae or --model ensemble" if model == "iforest" else "--model iforest or --model ensemble"
    return (f"hint: ROC-AUC {roc_auc:.3f} is below 0.5: these anomalies look more regular than the normal rows to "
            f"this model ({model}); a detector of the other family may rank them: {other}")


_COLUMNS = (("loss", "loss", 9, ".4f"), ("precision", "precision", 10, ".3f"), ("recall", "recall", 8, ".3f"),
            ("f1", "F1", 7, ".3f"), ("roc_auc", "ROC-AUC", 8, ".3f"))


def _format_row(first: str, values: dict, width: int = 8) -> str:
    cells = [f"{first:>{width}}"]
    for key, _, w, spec in _COLUMNS:
        value = values.get(key)
        cells.append(f"{'-':>{w}}" if value is None or value != value else f"{value:>{w}{spec}}")  # NaN != NaN
    return " ".join(cells)


def _header(first: str, width: int = 8) -> str:
    return " ".join([f"{first:>{width}}"] + [f"{title:>{w}}" for _, title, w, _ in _COLUMNS])


def train_and_report(splits, feature_names: list[str], config: FederatedConfig, output_dir: Path,
                     data_description: dict, quiet: bool, figure: bool = True, threads: int | None = None):
    """Train, print a per-round table and a final summary, write the run folder; shared by run/simulate.

    ``quiet`` hides the progress (a bar on a terminal, a line now and then otherwise), never the results."""
    from fedad_tutorial.federated import round_means, run_federated
    from fedad_tutorial.progress import progress_bar
    from fedad_tutorial.runs import write_run
    from fedad_tutorial.tensorboard_log import heldout_histograms

    labelled = all(s.test_labels is not None for s in splits)
    forest = (f"{config.trees_per_client} isolation trees per client on {config.max_samples} rows each (fewer if a "
              "client has fewer)")
    if config.model == "iforest":
        what = f"Growing a federated isolation forest on {len(splits)} clients in one round: {forest}"
    else:
        what = (f"Training a federated {config.model.upper()} on {len(splits)} clients, {config.rounds} rounds "
                f"x {config.local_epochs} local epochs (engine: {config.engine})")
        if config.model == "ensemble":
            what += f", the autoencoder's; in the last round {forest}"
    print(f"{what}; metrics are means over clients' held-out rows"
          f"{'' if labelled else ' (no labels: loss only)' if config.model != 'iforest' else ' (no labels)'}")
    print(_header("round"), flush=True)
    with progress_bar(config.rounds, "rounds", "round", quiet) as bar:
        def on_round(rnd: int, records: list[dict]) -> None:
            bar.write(_format_row(str(rnd), round_means(records)), file=sys.stdout)
            sys.stdout.flush()  # whoever watches the output sees each round as it ends
            bar.update(1)

        result = run_federated(splits, config, feature_names=feature_names, progress=False, on_round=on_round,
                               threads=threads)
    write_run(output_dir, result, data_description, figure=figure,
              heldout=heldout_histograms(result.detector, splits))
    print(f"\nFinal round, per client (held-out rows, {config.threshold} "
          f"{config.threshold_percentile:g}th-percentile threshold):")
    print(_header("client", 10))
    for record in result.final_round_records():
        print(_format_row(record["client"], record, 10))
    print(_format_row("mean", result.summary(), 10))
    if config.private:
        from fedad_tutorial.privacy import describe
        from fedad_tutorial.runs import run_privacy

        print(describe(run_privacy(result, data_description)))
    hint = inverted_hint(config.model, result.summary().get("roc_auc"))
    if hint is not None:
        print(hint)
    return result


def _cmd_generate(args: argparse.Namespace) -> int:
    from fedad_tutorial.csvio import NODE_PATTERN, write_node_folder
    from fedad_tutorial.data import make_cloud_federation
    from fedad_tutorial.limits import check_fits
    from fedad_tutorial.outputs import check_data_dir_output

    check_data_dir_output(args.output_dir, NODE_PATTERN)  # before generating anything
    sizes = args.samples_per_node if args.samples_per_node is not None else (300, 1200)
    largest = sizes if isinstance(sizes, int) else sizes[1]
    # the generator holds every node's float32 rows and, per node, a few float64 temporaries
    check_fits(args.num_nodes * largest * args.num_features * 4 + 4 * largest * args.num_features * 8,
               f"--num-nodes {args.num_nodes} x --samples-per-node {largest} x --num-features {args.num_features}")
    with _locked(args.output_dir):
        nodes = make_cloud_federation(num_nodes=args.num_nodes, samples_per_node=sizes,
                                      num_features=args.num_features, anomaly_rate=args.anomaly_rate, seed=args.seed)
        write_node_folder(args.output_dir, nodes)
    total = sum(n.num_rows for n in nodes)
    anomalies = sum(int(n.labels.sum()) for n in nodes)
    print(f"Wrote {len(nodes)} node CSVs to {args.output_dir}/ ({total} rows, {anomalies} labelled anomalies, "
          f"{args.num_features} features)")
    return 0


def _read_federation(data_dir: Path) -> list:
    from fedad_tutorial.csvio import column_difference, find_node_csvs, read_node_csv

    nodes = [read_node_csv(path) for path in find_node_csvs(data_dir)]
    reference = nodes[0]
    for node in nodes[1:]:
        if node.feature_names != reference.feature_names:
            raise UserError(
                f"{data_dir / (node.name + '.csv')}: feature columns differ from {reference.name}.csv "
                f"({column_difference(node.feature_names, reference.feature_names)}; every node needs the same)")
    labelled = {n.labels is not None for n in nodes}
    if len(labelled) > 1:
        raise UserError(f"{data_dir}: some node CSVs have a 'label' column and some do not")
    return nodes


def _hold_out(nodes: list, source: str, args: argparse.Namespace) -> tuple[list, dict]:
    """The clients' splits (``data.hold_out``) and the run's data description, for run/simulate."""
    from fedad_tutorial.data import hold_out

    description = {"source": source, "clients": [n.name for n in nodes], "rows": [n.num_rows for n in nodes],
                   "features": nodes[0].feature_names, "test_fraction": args.test_fraction}
    return hold_out(nodes, args.test_fraction, args.seed), description


def _cmd_simulate(args: argparse.Namespace) -> int:
    from fedad_tutorial.outputs import check_run_dir

    config = config_from_args(args)
    nodes = _read_federation(args.data_dir)
    check_run_dir(args.output_dir, inputs=[args.data_dir])  # before training, not after
    with _locked(args.output_dir):
        check_run_dir(args.output_dir, inputs=[args.data_dir])  # again: nothing changes it while locked
        splits, description = _hold_out(nodes, str(args.data_dir), args)
        train_and_report(splits, nodes[0].feature_names, config, args.output_dir, description, args.quiet,
                         figure=args.figure, threads=args.threads)
    print(f"\nWrote {args.output_dir}/ ({_run_files(args.output_dir)})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from fedad_tutorial.data import make_cloud_federation
    from fedad_tutorial.outputs import check_run_dir

    config = config_from_args(args)
    check_run_dir(args.output_dir)  # before training, not after
    with _locked(args.output_dir):
        check_run_dir(args.output_dir)
        nodes = make_cloud_federation(num_nodes=args.num_nodes, seed=args.seed)
        splits, description = _hold_out(nodes, "make_cloud_federation (generated in memory)", args)
        train_and_report(splits, nodes[0].feature_names, config, args.output_dir, description, args.quiet,
                         threads=args.threads)
    print(f"\nWrote {args.output_dir}/ ({_run_files(args.output_dir)})")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from fedad_tutorial.detector import Detector
    from fedad_tutorial.metrics import detection_metrics
    from fedad_tutorial.scoring import parse_explain, score_csv

    explain = parse_explain(args.explain) if args.explain is not None else None
    detector = Detector.load(args.model)
    threshold = detector.threshold_for(args.percentile, args.max_alarm_rate, source=str(args.model))
    with _locked(args.output, args.report):
        scored = score_csv(detector, args.data, args.output, model=args.model, threshold=threshold,
                           explain=explain, report=args.report, quiet=args.quiet, overwrite=args.overwrite)
    chosen = "" if args.percentile is None and args.max_alarm_rate is None else (
        f", the {_number(args.percentile)}th percentile" if args.percentile is not None
        else f", at most {_number(args.max_alarm_rate)} of training rows")
    also = f" and {args.report}" if args.report is not None else ""
    print(f"Scored {len(scored.scores)} rows of {args.data}: {scored.flags.sum()} flagged "
          f"(threshold {threshold:.4g}{chosen}); wrote {args.output}{also}")
    if scored.labels is not None:
        m = detection_metrics(scored.labels, scored.scores, threshold)
        anomalies = int(scored.labels.sum())
        auc = (f"ROC-AUC {m['roc_auc']:.3f}" if m["roc_auc"] == m["roc_auc"] else  # NaN != NaN
               f"ROC-AUC undefined (every row is labelled {'anomalous' if anomalies else 'normal'})")
        print(f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}  {auc}")
        hint = inverted_hint(detector.spec.kind, m["roc_auc"])
        if hint is not None:
            print(hint)
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from fedad_tutorial.csvio import NODE_PATTERN
    from fedad_tutorial.outputs import check_data_dir_output
    from fedad_tutorial.partition import split_table

    check_data_dir_output(args.output, NODE_PATTERN)
    with _locked(args.output):
        nodes = split_table(args.input, args.nodes, args.output, args.by, args.seed)
    rows = [n.num_rows for n in nodes]
    labelled = nodes[0].labels is not None
    anomalies = f", {sum(int(n.labels.sum()) for n in nodes)} labelled anomalies" if labelled else ""
    print(f"Wrote {len(nodes)} node CSVs to {args.output}/ by {args.by} ({sum(rows)} rows{anomalies}, "
          f"{min(rows)}-{max(rows)} per node, {len(nodes[0].feature_names)} features)")
    return 0


def _cmd_server(args: argparse.Namespace) -> int:
    from fedad_tutorial.flower.deploy import serve, server_keys, split_address
    from fedad_tutorial.flower.processes import check_port
    from fedad_tutorial.flower.progress import ServerProgress
    from fedad_tutorial.flower.settings import FlowerSettings
    from fedad_tutorial.outputs import check_run_dir

    # flag mistakes (TLS, keys), an output folder that must not be replaced, a checkpoint that cannot be
    # resumed and a busy port fail before anything
    keys = server_keys(args.certificates, args.insecure, args.authorized_keys)
    if args.resume is not None:
        if args.output_dir != Path("runs/flower") and args.output_dir != args.resume:
            raise UserError(f"--resume {args.resume} continues the run in that folder; leave out "
                            f"--output-dir {args.output_dir}")
        args.output_dir = args.resume
    config = config_from_args(args)
    settings = FlowerSettings(config=config, test_fraction=args.test_fraction,
                              min_clients=args.min_clients, wait_timeout=args.wait_timeout,
                              round_timeout=args.round_timeout, output_dir=str(args.output_dir))
    resume = _resumable(args, settings, keys)  # first: it names what is wrong with a checkpoint
    check_run_dir(args.output_dir, unfinished=True)  # _resumable said what an unfinished run needs
    check_port(*split_address(args.address))
    mode = f"TLS, {len(keys)} authorized node key(s)" if keys is not None else "no TLS, no authentication"
    rounds = f"{config.rounds} round{'s' if config.rounds > 1 else ''}"
    if resume is None:
        print(f"Flower server on {args.address} ({mode}): waiting for {args.min_clients} clients "
              f"(at most {args.wait_timeout:g} s), then {rounds}", flush=True)
    else:
        alive = sum(n.alive for n in resume.nodes)
        print(f"Flower server on {args.address} ({mode}): resuming {args.output_dir} after round {resume.round}: "
              f"waiting for its {alive} clients (at most {args.wait_timeout:g} s), then rounds "
              f"{resume.round + 1}-{config.rounds}", flush=True)
    print(_header("round"), flush=True)
    done = resume.round if resume is not None else 0  # the bar counts the rounds this server trains
    progress = ServerProgress(config.rounds - done, args.min_clients, args.quiet,
                              lambda means: _format_row(str(means["round"]), means))
    try:
        with _locked(args.output_dir):  # a second server on the same folder stops here, before any Flower state
            check_run_dir(args.output_dir, unfinished=True)
            resume = _resumable(args, settings, keys)  # again, now that no other command may change it
            status = serve(settings, args.address, args.certificates, args.insecure, args.authorized_keys,
                           progress.round, threads=args.threads, on_count=progress.count, resume=resume,
                           say=lambda line: print(f"fedad server: {line}", file=sys.stderr, flush=True))
    except RuntimeError as exc:
        progress.close()  # first: the message starts a line of its own
        print(f"fedad server: error: {exc}", file=sys.stderr)
        return 1
    finally:
        progress.close()
    print(_format_row("final", status.get("summary", {})))
    if settings.config.private:  # the guarantee the run folder reports
        import json

        from fedad_tutorial.privacy import describe

        print(describe(json.loads((args.output_dir / "summary.json").read_text())["privacy"]))
    print(f"Wrote {args.output_dir}/ ({_run_files(args.output_dir)}, flower/)")
    return 0


def _resumable(args: argparse.Namespace, settings, keys):
    """``--resume``: the run folder's checkpoint, written with these settings and (with authentication)
    for keys this server admits; a new run: ``None``, and the folder must not hold an unfinished run."""
    from fedad_tutorial.flower.checkpoint import (
        check_not_unfinished,
        check_same_settings,
        checkpoint_path,
        load_checkpoint,
    )

    if args.resume is None:
        check_not_unfinished(args.output_dir)
        return None
    done = load_checkpoint(args.resume)
    path = checkpoint_path(args.resume)
    check_same_settings(done, settings, path)
    if done.authentication != (keys is not None):
        was = "with TLS and node keys" if done.authentication else "with --insecure"
        raise UserError(f"{path}: the run was started {was}; resume it the same way")
    if keys is not None:
        known = {k.fingerprint for k in keys}
        lost = [f"{n.name} ({n.key})" for n in done.nodes if n.alive and n.key not in known]
        if lost:
            raise UserError(f"{path}: the run's node(s) {', '.join(lost)} have no key in --authorized-keys "
                            f"{args.authorized_keys}; resume with the keys the run was started with")
    return done


def _cmd_client(args: argparse.Namespace) -> int:
    from fedad_tutorial.csvio import read_node_csv
    from fedad_tutorial.flower.deploy import client_key, join

    key = client_key(args.root_certificates, args.insecure, args.auth_key)
    node = read_node_csv(args.data_path)  # a bad CSV fails here, before any process starts
    who = f", key {key.fingerprint}" if key is not None else ""
    print(f"Flower client {args.node_id}: {args.data_path} ({node.num_rows} rows, {len(node.feature_names)} "
          f"features{who}) -> {args.server_address}", flush=True)
    try:
        print(join(args.data_path, args.node_id, args.server_address, args.root_certificates, args.insecure,
                   args.wait_timeout, args.auth_key, say=lambda line: print(line, flush=True), threads=args.threads))
    except RuntimeError as exc:
        print(f"fedad client: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from fedad_tutorial.flower.keys import generate_key

    key = generate_key(args.output, args.comment)
    print(f"Wrote {args.output} (private: keep it on this node) and {key.source} (public, {key.fingerprint}): "
          "add the .pub line to the server's --authorized-keys file")
    return 0


def _cmd_certs(args: argparse.Namespace) -> int:
    from fedad_tutorial.flower.certs import CA_CERT, generate_certificates

    made = generate_certificates(args.output, args.host, args.days, args.ca_key)
    print(f"Wrote {made.folder}/ for {', '.join(made.names)} (valid until {made.not_after:%Y-%m-%d}):\n"
          f"  the server: copy the folder, then fedad server --certificates {made.folder} ...\n"
          f"  each client: copy only {made.folder / CA_CERT}, then fedad client --root-certificates "
          f"{made.folder / CA_CERT} ...\n"
          f"Wrote {made.ca_key}: the CA's private key (mode 600). Keep it on this machine or offline and never "
          "copy it to the server or a client: whoever holds it can pose as the server to every client.")
    return 0


_COMMANDS = {"generate-data": _cmd_generate, "simulate": _cmd_simulate, "run": _cmd_run, "score": _cmd_score,
             "split": _cmd_split, "server": _cmd_server, "client": _cmd_client, "keygen": _cmd_keygen,
             "certs": _cmd_certs}


def _interrupt(signum: int, frame) -> None:
    """SIGTERM ends a command like Ctrl+C does: clean-up runs, nothing half-written stays. SIGINT gets the
    same handler explicitly: a command started with SIGINT ignored (a background job of a script) would
    otherwise not hear Ctrl+C or ``kill -INT`` at all."""
    raise KeyboardInterrupt


#: The signals that stop a command cleanly.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


#: Commands that train or score (they import PyTorch): their thread count is set before they start.
#: (``server`` sets it itself, after starting its SuperLink: PyTorch loads while the SuperLink starts.)
_USES_TORCH = {"simulate", "run", "score", "client"}


def main(argv: Sequence[str] | None = None) -> int:
    tokens = _dashes(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(tokens)
    except SystemExit as exc:  # --help, --version and flag errors: return argparse's exit code
        return int(exc.code or 0)
    args.given = _given(tokens)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is shown escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    previous = {sig: signal.signal(sig, _interrupt) for sig in _STOP_SIGNALS}
    try:
        if args.command in _USES_TORCH:
            set_threads(getattr(args, "threads", None))
        elif args.command == "server":
            requested_threads(args.threads)  # a bad count fails now, not after the SuperLink started
        return _COMMANDS[args.command](args)
    except UserError as exc:
        print(f"fedad {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # the machine's refusal (disk full, permission denied): one line, no traceback
        from fedad_tutorial.errors import describe_os_error

        print(f"fedad {args.command}: error: {_one_line(describe_os_error(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"fedad {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
