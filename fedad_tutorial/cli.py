"""The ``fedad`` command line: generate data, train a federation, score new rows.

Every subcommand is a thin shell over the package: ``run`` and ``simulate`` share one code path
(:func:`train_and_report`). A user's mistake (missing file, bad cell, bad flag value) prints one
line on stderr and exits with code 2; outputs are written to temporary paths and renamed only when
complete.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedad_tutorial import __version__
from fedad_tutorial.atomic import atomic_path
from fedad_tutorial.csvio import find_node_csvs, read_node_csv, write_node_csv
from fedad_tutorial.data import NodeData, hold_out, make_cloud_federation
from fedad_tutorial.detector import Detector
from fedad_tutorial.errors import UserError
from fedad_tutorial.federated import ENGINES, RECOMMENDED, FederatedConfig, round_means, run_federated
from fedad_tutorial.metrics import detection_metrics
from fedad_tutorial.plots import plot_f1_per_round, save_figure
from fedad_tutorial.runs import MODEL_FILE, write_run

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) and exit with code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"fedad {self.prog.split()[-1]}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _interval(low: float, high: float, *, closed_low: bool = False, closed_high: bool = False):
    """An argparse type: a float in the interval from ``low`` to ``high`` (open ends unless closed)."""
    def parse(text: str) -> float:
        value = float(text)
        above = value >= low if closed_low else value > low
        below = value <= high if closed_high else value < high
        if not (above and below):
            interval = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    return parse


_fraction = _interval(0, 1)
_rate = _interval(0, 1, closed_low=True)
_percentile = _interval(0, 100)
_trim = _interval(0, 0.5, closed_low=True)
_client_fraction = _interval(0, 1, closed_high=True)


def _training_flags(rounds: int) -> argparse.ArgumentParser:
    """Flags shared by ``run`` and ``simulate`` (and the Flower server); defaults from ``RECOMMENDED``."""
    d = RECOMMENDED
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model and training")
    g.add_argument("--model", choices=["ae", "vae"], default=d.model, help="autoencoder or VAE")
    g.add_argument("--rounds", "--num-rounds", type=_positive_int, default=rounds, help="federated rounds")
    g.add_argument("--local-epochs", type=_positive_int, default=d.local_epochs, help="local epochs per round")
    g.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="mini-batch size")
    g.add_argument("--lr", type=_positive_float, default=d.lr, help="Adam learning rate")
    g.add_argument("--latent-dim", type=_positive_int, default=d.latent_dim, help="size of the latent code")
    g.add_argument("--beta", type=_positive_float, default=d.beta, help="VAE: weight of the KL term")
    g.add_argument("--trim", type=_trim, default=d.trim,
                   help="share of each batch's highest-loss rows left out of each step "
                        "(robust to unlabelled anomalies in training; 0 = plain training)")
    g.add_argument("--fraction", type=_client_fraction, default=d.fraction,
                   help="share of clients sampled each round")
    g.add_argument("--threshold-percentile", type=_percentile, default=d.threshold_percentile,
                   help="flag rows above this percentile of training scores")
    g.add_argument("--threshold", choices=["local", "global"], default=d.threshold,
                   help="per-round evaluation: each client's own percentile, or the federated one")
    g.add_argument("--test-fraction", type=_fraction, default=0.3, help="held-out share of each client's rows")
    g.add_argument("--engine", choices=list(ENGINES), default=d.engine, help="training engine")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same numbers)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-round table")
    return p


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="fedad", description="Federated anomaly detection with autoencoders.",
                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"fedad-tutorial {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    gen = sub.add_parser("generate-data", help="write synthetic cloud-activity CSVs, one per node",
                         formatter_class=fmt)
    gen.add_argument("--num-nodes", "--num_nodes", type=_positive_int, default=10, help="number of nodes")
    gen.add_argument("--samples-per-node", "--samples_per_node", type=_positive_int, default=None,
                     help="rows per node (default: a different size per node, 300-1200)")
    gen.add_argument("--num-features", "--num_features", type=_positive_int, default=30,
                     help="metrics per row")
    gen.add_argument("--anomaly-rate", "--anomaly_rate", type=_rate, default=0.05, help="share of anomalous rows")
    gen.add_argument("--output-dir", "--output_dir", type=Path, default=Path("data"), help="folder for node_*.csv")
    gen.add_argument("--seed", type=int, default=42, help="random seed")

    train_flags = _training_flags(rounds=10)
    sim = sub.add_parser("simulate", parents=[train_flags], formatter_class=fmt,
                         help="federated training over every node_*.csv of a folder (one client each)")
    sim.add_argument("--data-dir", "--data_dir", type=Path, default=Path("data"), help="folder with node_*.csv")
    sim.add_argument("--output-dir", "--output_dir", type=Path, default=Path("runs/simulate"),
                     help="run folder to write")

    run = sub.add_parser("run", parents=[_training_flags(rounds=30)], formatter_class=fmt,
                         help="the default demo: generated federation, FedAvg, metrics and plots")
    run.add_argument("--num-nodes", type=_positive_int, default=10, help="number of generated nodes")
    run.add_argument("--output-dir", type=Path, default=Path("runs/default"), help="run folder to write")
    run.add_argument("--figures-dir", type=Path, default=Path("figures"), help="where f1_per_round.png goes")

    score = sub.add_parser("score", help="score rows with a trained model", formatter_class=fmt)
    score.add_argument("--model", type=Path, required=True, help=f"a model file (a run's {MODEL_FILE})")
    score.add_argument("--data", type=Path, required=True, help="CSV with the model's feature columns")
    score.add_argument("--output", type=Path, default=Path("scores.csv"), help="CSV to write")
    _add_flower_commands(sub, fmt)
    return parser


def _add_flower_commands(sub, fmt) -> None:
    """``fedad server`` and ``fedad client``: the same training with real Flower processes."""
    server = sub.add_parser("server", parents=[_training_flags(rounds=10)], formatter_class=fmt,
                            help="Flower server: start a SuperLink, wait for clients, train, write the run folder")
    server.add_argument("--min-clients", "--min_clients", type=_positive_int, default=2,
                        help="clients that must connect before training starts and keep answering")
    server.add_argument("--address", default="127.0.0.1:8000", help="HOST:PORT the SuperLink listens on")
    server.add_argument("--output-dir", "--output_dir", type=Path, default=Path("runs/flower"),
                        help="run folder to write (Flower's logs go to OUTPUT_DIR/flower/)")
    server.add_argument("--wait-timeout", "--wait_timeout", type=_positive_float, default=120.0,
                        help="seconds to wait for --min-clients clients to connect")
    server.add_argument("--round-timeout", "--round_timeout", type=_positive_float, default=300.0,
                        help="seconds to wait for the clients' replies to one message; silent clients are dropped")
    server.add_argument("--certificates", type=Path, default=None,
                        help="folder with ca.crt, server.pem and server.key (TLS); see fedad_tutorial.flower.certs")
    server.add_argument("--authorized-keys", "--authorized_keys", type=Path, default=None,
                        help="the public keys of the nodes that may join, one per line (each client's "
                             "KEYFILE.pub from `fedad keygen`); required with --certificates")
    server.add_argument("--insecure", action="store_true",
                        help="no TLS and no node authentication: any process that reaches the port can join "
                             "or submit apps (local experiments only)")
    client = sub.add_parser("client", formatter_class=fmt,
                            help="Flower client: serve one node's CSV to a fedad server until training ends")
    client.add_argument("--node-id", "--node_id", type=_positive_int, required=True,
                        help="this node's number (1, 2, ...): node k uses the seeds of the k-th CSV in simulate")
    client.add_argument("--data-path", "--data_path", type=Path, required=True, help="this node's CSV")
    client.add_argument("--server-address", "--server_address", default="127.0.0.1:8000",
                        help="HOST:PORT of the fedad server")
    client.add_argument("--root-certificates", "--root_certificates", type=Path, default=None,
                        help="the CA certificate (ca.crt) that signed the server's certificate (TLS)")
    client.add_argument("--auth-key", "--auth_key", type=Path, default=None,
                        help="this node's private key (`fedad keygen`); its .pub must be in the server's "
                             "--authorized-keys; required with --root-certificates")
    client.add_argument("--insecure", action="store_true", help="no TLS and no authentication (local experiments only)")
    client.add_argument("--wait-timeout", "--wait_timeout", type=_positive_float, default=120.0,
                        help="seconds to keep trying to reach the server (before training and whenever it "
                             "is lost) before giving up")
    _add_keygen_command(sub, fmt)


def _add_keygen_command(sub, fmt) -> None:
    """``fedad keygen``: a node's key pair for ``fedad client --auth-key`` / ``fedad server --authorized-keys``."""
    keygen = sub.add_parser("keygen", formatter_class=fmt,
                            help="make a client's key pair: KEYFILE (private, mode 600) and KEYFILE.pub")
    keygen.add_argument("--output", type=Path, required=True,
                        help="private key file to write (its public key goes to OUTPUT.pub); never overwritten")
    keygen.add_argument("--comment", default=None, help="name at the end of the public key line (default: file name)")


def config_from_args(args: argparse.Namespace) -> FederatedConfig:
    """The :class:`FederatedConfig` of a ``run``/``simulate``/``server`` command line."""
    return FederatedConfig(
        model=args.model, rounds=args.rounds, local_epochs=args.local_epochs, batch_size=args.batch_size,
        lr=args.lr, latent_dim=args.latent_dim, beta=args.beta, fraction=args.fraction,
        threshold_percentile=args.threshold_percentile, threshold=args.threshold, seed=args.seed,
        engine=args.engine, trim=args.trim,
    )


_COLUMNS = (("loss", "loss", 9, ".4f"), ("precision", "precision", 10, ".3f"), ("recall", "recall", 8, ".3f"),
            ("f1", "F1", 7, ".3f"), ("roc_auc", "ROC-AUC", 8, ".3f"))


def _format_row(first: str, values: dict, width: int = 8) -> str:
    cells = [f"{first:>{width}}"]
    for key, _, w, spec in _COLUMNS:
        value = values.get(key, np.nan)
        cells.append(f"{'-':>{w}}" if pd.isna(value) else f"{value:>{w}{spec}}")
    return " ".join(cells)


def _header(first: str, width: int = 8) -> str:
    return " ".join([f"{first:>{width}}"] + [f"{title:>{w}}" for _, title, w, _ in _COLUMNS])


def train_and_report(splits, feature_names: list[str], config: FederatedConfig, output_dir: Path,
                     data_description: dict, quiet: bool):
    """Train, print a per-round table and a final summary, write the run folder; shared by run/simulate."""
    from tqdm.auto import tqdm

    def on_round(rnd: int, frame: pd.DataFrame) -> None:
        if not quiet:
            tqdm.write(_format_row(str(rnd), round_means(frame)))

    if not quiet:
        labelled = all(s.test_labels is not None for s in splits)
        print(f"Training a federated {config.model.upper()} on {len(splits)} clients, {config.rounds} rounds "
              f"x {config.local_epochs} local epochs (engine: {config.engine}); metrics are means over "
              f"clients' held-out rows{'' if labelled else ' (no labels: loss only)'}")
        print(_header("round"))
    result = run_federated(splits, config, feature_names=feature_names, progress=not quiet, on_round=on_round)
    write_run(output_dir, result, data_description)
    if not quiet:
        print(f"\nFinal round, per client (held-out rows, {config.threshold} "
              f"{config.threshold_percentile:g}th-percentile threshold):")
        print(_header("client", 10))
        for record in result.final_round().to_dict(orient="records"):
            print(_format_row(record["client"], record, 10))
        print(_format_row("mean", result.summary(), 10))
    return result


def _cmd_generate(args: argparse.Namespace) -> int:
    sizes = args.samples_per_node if args.samples_per_node is not None else (300, 1200)
    nodes = make_cloud_federation(num_nodes=args.num_nodes, samples_per_node=sizes,
                                  num_features=args.num_features, anomaly_rate=args.anomaly_rate, seed=args.seed)
    for node in nodes:
        write_node_csv(args.output_dir / f"{node.name}.csv", node)
    total = sum(n.num_rows for n in nodes)
    anomalies = sum(int(n.labels.sum()) for n in nodes)
    print(f"Wrote {len(nodes)} node CSVs to {args.output_dir}/ ({total} rows, {anomalies} labelled anomalies, "
          f"{args.num_features} features)")
    return 0


def _read_federation(data_dir: Path) -> list[NodeData]:
    nodes = [read_node_csv(path) for path in find_node_csvs(data_dir)]
    reference = nodes[0]
    for node in nodes[1:]:
        if node.feature_names != reference.feature_names:
            raise UserError(
                f"{data_dir / (node.name + '.csv')}: feature columns differ from {reference.name}.csv "
                f"({len(node.feature_names)} vs {len(reference.feature_names)} columns; every node needs the same)")
    labelled = {n.labels is not None for n in nodes}
    if len(labelled) > 1:
        raise UserError(f"{data_dir}: some node CSVs have a 'label' column and some do not")
    return nodes


def _hold_out(nodes: list[NodeData], source: str, args: argparse.Namespace) -> tuple[list, dict]:
    """The clients' splits (``data.hold_out``) and the run's data description, for run/simulate."""
    description = {"source": source, "clients": [n.name for n in nodes], "rows": [n.num_rows for n in nodes],
                   "features": nodes[0].feature_names, "test_fraction": args.test_fraction}
    return hold_out(nodes, args.test_fraction, args.seed), description


def _cmd_simulate(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    nodes = _read_federation(args.data_dir)
    splits, description = _hold_out(nodes, str(args.data_dir), args)
    train_and_report(splits, nodes[0].feature_names, config, args.output_dir, description, args.quiet)
    print(f"\nWrote {args.output_dir}/ ({MODEL_FILE}, history.csv, summary.json, figures/f1_per_round.png)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    nodes = make_cloud_federation(num_nodes=args.num_nodes, seed=args.seed)
    splits, description = _hold_out(nodes, "make_cloud_federation (generated in memory)", args)
    result = train_and_report(splits, nodes[0].feature_names, config, args.output_dir, description, args.quiet)
    figure = save_figure(plot_f1_per_round(result.history), args.figures_dir / "f1_per_round.png")
    print(f"\nWrote {args.output_dir}/ and {figure}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    detector = Detector.load(args.model)
    node = read_node_csv(args.data)
    detector.check_features(node.feature_names, source=str(args.data))
    scores = detector.score_samples(node.features)
    flags = (scores > detector.threshold).astype(int)
    with atomic_path(args.output) as tmp:
        pd.DataFrame({"score": scores, "is_anomaly": flags}).to_csv(tmp, index=False, float_format="%.6g")
    print(f"Scored {len(scores)} rows of {args.data}: {flags.sum()} flagged (threshold {detector.threshold:.4g}); "
          f"wrote {args.output}")
    if node.labels is not None:
        m = detection_metrics(node.labels, scores, detector.threshold)
        print(f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}  "
              f"ROC-AUC {m['roc_auc']:.3f}")
    return 0


def _on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the Flower processes a command started are stopped."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _cmd_server(args: argparse.Namespace) -> int:
    from fedad_tutorial.flower.deploy import serve, server_keys
    from fedad_tutorial.flower.settings import FlowerSettings

    # flag mistakes (TLS, keys) fail before anything starts
    keys = server_keys(args.certificates, args.insecure, args.authorized_keys)
    settings = FlowerSettings(config=config_from_args(args), test_fraction=args.test_fraction,
                              min_clients=args.min_clients, wait_timeout=args.wait_timeout,
                              round_timeout=args.round_timeout, output_dir=str(args.output_dir))
    _on_sigterm()
    if not args.quiet:
        mode = f"TLS, {len(keys)} authorized node key(s)" if keys is not None else "no TLS, no authentication"
        print(f"Flower server on {args.address} ({mode}): waiting for {args.min_clients} clients "
              f"(at most {args.wait_timeout:g} s), then {args.rounds} rounds", flush=True)
        print(_header("round"), flush=True)

    def on_round(means: dict) -> None:
        if not args.quiet:
            print(_format_row(str(means["round"]), means), flush=True)

    try:
        status = serve(settings, args.address, args.certificates, args.insecure, args.authorized_keys, on_round)
    except RuntimeError as exc:
        print(f"fedad server: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(_format_row("final", status.get("summary", {})))
    print(f"Wrote {args.output_dir}/ ({MODEL_FILE}, history.csv, summary.json, figures/f1_per_round.png, flower/)")
    return 0


def _cmd_client(args: argparse.Namespace) -> int:
    from fedad_tutorial.flower.deploy import client_key, join

    key = client_key(args.root_certificates, args.insecure, args.auth_key)
    node = read_node_csv(args.data_path)  # a bad CSV fails here, before any process starts
    _on_sigterm()
    who = f", key {key.fingerprint}" if key is not None else ""
    print(f"Flower client {args.node_id}: {args.data_path} ({node.num_rows} rows, {len(node.feature_names)} "
          f"features{who}) -> {args.server_address}", flush=True)
    try:
        print(join(args.data_path, args.node_id, args.server_address, args.root_certificates, args.insecure,
                   args.wait_timeout, args.auth_key, say=lambda line: print(line, flush=True)))
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


_COMMANDS = {"generate-data": _cmd_generate, "simulate": _cmd_simulate, "run": _cmd_run, "score": _cmd_score,
             "server": _cmd_server, "client": _cmd_client, "keygen": _cmd_keygen}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and flag errors: return argparse's exit code
        return int(exc.code or 0)
    try:
        return _COMMANDS[args.command](args)
    except UserError as exc:
        print(f"fedad {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fedad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
