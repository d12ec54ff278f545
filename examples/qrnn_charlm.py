"""QRNN against LSTM on character-level language modelling of Python's standard library (Bradbury et al. 2016).

The corpus is on every machine that runs this script, without a download: the
``.py`` files of the standard library of the Python that runs it
(``sysconfig.get_paths()["stdlib"]``, less ``site-packages``), sorted by path,
cut at ``--corpus-kb`` kilobytes (1000 bytes). Every 20th file is held out; the
others are the training text. Its bytes are the characters: tab, newline and
printable ASCII have an id each, every other byte (non-ASCII UTF-8, carriage
returns, form feeds) shares one, 98 ids in all. The exact text depends on the
Python version and its packaging (a Debian Python ships its ``test`` folder
apart), so the version, the byte counts and a hash of the text are printed and
recorded beside the results.

Both models read an embedding of the characters and predict the next one from
every step through a linear readout and a softmax: a 2-layer QRNN (fo-pooling;
convolution window 2 on the first layer, 1 above, as Salesforce's awd-lstm-lm
uses it) against a 2-layer LSTM of the same width, as the paper compares them (``--match
params``: the QRNN's width chosen to give it the LSTM's number of parameters
instead). Training is
truncated backpropagation through time: the training text is cut into
``--batch`` contiguous streams read ``--seq`` characters per update, the state
at the end of each chunk starting the next (no gradient flows back through
it); Adam with global-norm clipping. Reported: held-out bits per character
(mean cross-entropy / ln 2 over the same ``--eval-chars`` held-out characters at
every evaluation, read as ``--batch`` streams that start at evenly spaced places
of the held-out files, the state carried chunk to chunk) and training
characters per second (timed over the updates only, evaluations and checkpoints
left out; the first update includes JAX's or TensorFlow's tracing), by the
clock and per CPU second of the process (steadier on a machine shared with
other jobs, with ``--threads 1``).

    python examples/qrnn_charlm.py --backend torch [--quick] [--out DIR] [--resume]

Each model's learning curve is written as it goes to
``qrnn_charlm_<backend>_<model>.csv`` (update, characters seen, training and
held-out bits per character, training seconds, elapsed seconds) beside the plot
``qrnn_charlm_<backend>.png``; a checkpoint (weights, Adam's moments, the data
position, the carried state, the random stream of zoneout, the curve so far)
every ``--checkpoint-every`` updates to ``qrnn_charlm_<backend>_<model>.ckpt.npz``.
``--resume`` continues each model from its checkpoint (a larger ``--steps``
trains further); a finished model is not trained again. The results and the
corpus's description go to ``qrnn_charlm_<backend>.json``.

Departures from the paper: a code corpus rather than Penn Treebank or
Wikitext, a far shorter training, no dropout, zoneout off by default
(``--zoneout``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import plots
from cli import ExampleParser
from lm import (
    CurveWriter,
    EvalStream,
    LMSpec,
    TrainStream,
    config_differences,
    load_checkpoint,
    load_corpus,
    make_trainer,
    matched_hidden,
    save_checkpoint,
)
from tqdm import tqdm
from training import format_table

#: The target of the comparison: the QRNN's held-out bits per character at most this much above the LSTM's.
BPC_MARGIN = 0.10
LN2 = math.log(2)


def build_parser() -> ExampleParser:
    """The options: the examples' own, the sizes (smaller with ``--quick``), the training and ``--resume``."""
    parser = ExampleParser(__doc__ or "")
    parser.add_sized("--steps", 6000, 24, "training updates per model")
    parser.add_sized("--hidden", 256, 32, "LSTM units per layer")
    parser.add_sized("--embed", 64, 16, "embedding size")
    parser.add_sized("--batch", 32, 8, "streams per update")
    parser.add_sized("--seq", 128, 32, "characters per update and stream (truncated BPTT length)")
    parser.add_sized("--eval-every", 200, 8, "updates between held-out evaluations")
    parser.add_sized("--checkpoint-every", 200, 8, "updates between checkpoints")
    parser.add_sized("--eval-chars", 131072, 4096, "held-out characters evaluated")
    parser.add_sized("--corpus-kb", 16000, 600, "kilobytes of the standard library read")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's step size (2e-3)")
    parser.add_argument("--clip", type=float, default=1.0, help="global gradient norm clipped to (1.0)")
    parser.add_argument("--zoneout", type=float, default=0.0, help="the QRNN's zoneout probability (0: none)")
    parser.add_argument(
        "--match",
        choices=("units", "params"),
        default="units",
        help="the QRNN's width: the LSTM's units, as the paper (units), or its parameter count (params)",
    )
    parser.add_argument(
        "--models",
        help="train only these models, comma-separated (qrnn, lstm): they may train in separate processes (both)",
    )
    with contextlib.suppress(argparse.ArgumentError):  # unless the examples' parser takes --resume itself
        parser.add_argument(
            "--resume", action="store_true", help="continue each model from its checkpoint in --out, if it has one"
        )
    return parser


def model_specs(args: argparse.Namespace) -> list[LMSpec]:
    """The LSTM of ``--hidden`` units and the QRNN of as many units (or parameters, ``--match params``)."""
    common = {"embed_size": args.embed, "learning_rate": args.lr, "clip_norm": args.clip}
    lstm = LMSpec("LSTM", "lstm", args.hidden, **common)
    qrnn = LMSpec("QRNN", "qrnn", args.hidden, zoneout=args.zoneout, **common)
    if args.match == "params":
        qrnn = LMSpec("QRNN", "qrnn", matched_hidden(qrnn, lstm.parameter_count()), zoneout=args.zoneout, **common)
    return [qrnn, lstm]


def selected(specs: list[LMSpec], names: str | None) -> list[LMSpec]:
    """The specs that ``--models`` names (case aside), in their order; all of them without it."""
    if not names:
        return specs
    wanted = {n.strip().lower() for n in names.split(",") if n.strip()}
    unknown = sorted(wanted - {s.name.lower() for s in specs})
    if unknown:
        raise SystemExit(f"qrnn_charlm: --models: {', '.join(unknown)} expected among qrnn, lstm")
    return [s for s in specs if s.name.lower() in wanted]


def run_config(args: argparse.Namespace, spec: LMSpec, fingerprint: str) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it."""
    return {
        "backend": args.backend,
        "seed": args.seed,
        "batch": args.batch,
        "seq": args.seq,
        "eval_chars": args.eval_chars,
        "corpus": fingerprint,
        **{f"model.{k}": v for k, v in spec.config().items()},
    }


def train_model(
    args: argparse.Namespace, spec: LMSpec, corpus_fingerprint: str, stream: TrainStream, held: EvalStream, out: Path
) -> dict[str, Any]:
    """Train (or resume) one model to ``--steps`` updates; return its curve and figures."""
    stem = f"qrnn_charlm_{args.backend}_{spec.name.lower()}"
    checkpoint, curve_path = out / f"{stem}.ckpt.npz", out / f"{stem}.csv"
    config = run_config(args, spec, corpus_fingerprint)
    trainer = make_trainer(args.backend, spec, args.seed, args.batch)
    chars_per_update = args.batch * args.seq
    progress: dict[str, Any] = {"update": 0, "train_seconds": 0.0, "elapsed_seconds": 0.0, "loss_sum": 0.0}
    progress |= {"train_cpu_seconds": 0.0, "loss_count": 0, "curve": []}
    if args.resume and checkpoint.exists():
        meta, arrays = load_checkpoint(checkpoint)
        differences = config_differences(meta["config"], config)
        if differences:
            raise SystemExit(
                f"qrnn_charlm: --resume: {checkpoint} was written by another run: {'; '.join(differences)}"
            )
        trainer.load_arrays(arrays)
        progress = meta["progress"]
        stream.position, stream.epoch = meta["position"], meta["epoch"]
        print(f"{spec.name}: resuming from update {progress['update']} ({checkpoint})")
    else:
        stream.position, stream.epoch = 0, 0
    curve = CurveWriter(curve_path, progress["curve"])
    start_wall = time.perf_counter() - progress["elapsed_seconds"]

    def record(update: int) -> dict[str, Any]:
        count = progress["loss_count"]
        row = {
            "update": update,
            "chars_seen": update * chars_per_update,
            "train_bpc": progress["loss_sum"] / count / LN2 if count else math.nan,
            "heldout_bpc": trainer.evaluate(held) / LN2,
            "train_seconds": progress["train_seconds"],
            "train_cpu_seconds": progress["train_cpu_seconds"],
            "elapsed_seconds": time.perf_counter() - start_wall,
        }
        progress["loss_sum"], progress["loss_count"] = 0.0, 0
        progress["curve"].append({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})
        curve.append(row)
        return row

    def save(update: int) -> None:
        progress["update"] = update
        progress["elapsed_seconds"] = time.perf_counter() - start_wall
        meta = {"config": config, "progress": progress, "position": stream.position, "epoch": stream.epoch}
        save_checkpoint(checkpoint, meta, trainer.arrays())

    first = progress["update"] + 1
    if first == 1:
        record(0)
    last = progress["curve"][-1]
    disable = os.environ.get("TQDM_DISABLE") == "1"
    bar = tqdm(range(first, args.steps + 1), desc=f"{spec.name:>5}", unit="update", disable=disable)
    for update in bar:
        x, y, restart = stream.next()
        if restart:
            trainer.reset_state()
        began, began_cpu = time.perf_counter(), time.process_time()
        loss = trainer.step(x, y)
        progress["train_seconds"] += time.perf_counter() - began
        progress["train_cpu_seconds"] += time.process_time() - began_cpu
        progress["loss_sum"] += loss
        progress["loss_count"] += 1
        if update % args.eval_every == 0 or update == args.steps:
            last = record(update)
        if update % args.checkpoint_every == 0 or update == args.steps:
            save(update)
        rate = update * chars_per_update / max(progress["train_seconds"], 1e-9)
        bar.set_postfix(bpc=f"{loss / LN2:.3f}", heldout=f"{last['heldout_bpc']:.3f}", chars_s=f"{rate:.0f}")
    bar.close()
    if first > args.steps:
        print(f"{spec.name}: already trained to update {progress['update']} (--steps {args.steps})")
    final = progress["curve"][-1]
    seconds = final["train_seconds"]
    return {
        "name": spec.name,
        "op": spec.op,
        "hidden_size": spec.hidden_size,
        "parameters": trainer.parameter_count(),
        "parameters_from_spec": spec.parameter_count(),
        "updates": final["update"],
        "chars_seen": final["chars_seen"],
        "heldout_bpc": final["heldout_bpc"],
        "best_heldout_bpc": min(row["heldout_bpc"] for row in progress["curve"]),
        "train_seconds": seconds,
        "train_chars_per_second": final["chars_seen"] / seconds if seconds > 0 else math.nan,
        "train_cpu_seconds": final["train_cpu_seconds"],
        "train_chars_per_cpu_second": final["chars_seen"] / final["train_cpu_seconds"]
        if final["train_cpu_seconds"] > 0
        else math.nan,
        "curve": str(curve_path),
        "checkpoint": str(checkpoint),
        "rows": progress["curve"],
    }


def plot(results: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Held-out (and training) bits per character against updates and against training seconds."""
    fig, axes = plots.plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for result in results:
        rows = result["rows"]
        for ax, x_key in zip(axes, ("update", "train_seconds"), strict=True):
            xs = [row[x_key] for row in rows]
            line = ax.plot(xs, [row["heldout_bpc"] for row in rows], marker=".", label=f"{result['name']} held-out")
            trained = [(x, row["train_bpc"]) for x, row in zip(xs, rows, strict=True) if row["train_bpc"] is not None]
            if trained:
                ax.plot(
                    *zip(*trained, strict=True),
                    linestyle="--",
                    color=line[0].get_color(),
                    alpha=0.6,
                    label=f"{result['name']} training",
                )
    axes[0].set_xlabel("update")
    axes[1].set_xlabel("training seconds (evaluations left out)")
    axes[0].set_ylabel("bits per character")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    return plots.save(fig, path)


def main(argv: list[str] | None = None) -> None:
    ex = build_parser().setup(argv)
    args = ex.args
    corpus = load_corpus(args.corpus_kb * 1000)
    print(corpus.describe())
    print(f"corpus fingerprint {corpus.fingerprint}; Python {sys.version.split()[0]} ({sys.implementation.name})")
    stream = TrainStream(corpus.train, args.batch, args.seq)
    held = EvalStream.from_ids(corpus.heldout, args.eval_chars, args.batch, args.seq)
    specs = selected(model_specs(args), args.models)
    counts = ", ".join(
        f"{s.name} {s.num_layers} x {s.hidden_size} units: {s.parameter_count():,} parameters" for s in specs
    )
    print(
        f"{counts}; embedding {args.embed}, batch {args.batch} x seq {args.seq}, {args.steps} updates, "
        f"Adam {args.lr:g}, clip {args.clip:g}, backend {args.backend}; held-out: {held.chars:,} characters"
    )

    results = [train_model(args, spec, corpus.fingerprint, stream, held, ex.out) for spec in specs]

    rows = [
        [
            r["name"],
            f"{r['hidden_size']}",
            f"{r['parameters']:,}",
            f"{r['updates']}",
            f"{r['heldout_bpc']:.3f}",
            f"{r['best_heldout_bpc']:.3f}",
            f"{r['train_chars_per_second']:,.0f}",
            f"{r['train_chars_per_cpu_second']:,.0f}",
            f"{r['train_seconds']:.0f} s",
        ]
        for r in results
    ]
    print()
    header = ["model", "units", "params", "updates", "held-out bpc", "best", "train chars/s", "per CPU s", "train time"]
    print(format_table(header, rows))
    by_name = {r["name"]: r for r in results}
    verdict: dict[str, Any] = {}
    if {"QRNN", "LSTM"} <= by_name.keys():
        q, lstm = by_name["QRNN"], by_name["LSTM"]
        ratio = q["heldout_bpc"] / lstm["heldout_bpc"]
        speed = q["train_chars_per_second"] / lstm["train_chars_per_second"]
        cpu_speed = q["train_chars_per_cpu_second"] / lstm["train_chars_per_cpu_second"]
        verdict = {
            "bpc_ratio": ratio,
            "bpc_within_margin": ratio <= 1 + BPC_MARGIN,
            "speed_ratio": speed,
            "qrnn_faster": speed > 1,
            "cpu_speed_ratio": cpu_speed,
        }
        print(
            f"QRNN / LSTM held-out bpc: {ratio:.3f} (target <= {1 + BPC_MARGIN:.2f}: "
            f"{'met' if verdict['bpc_within_margin'] else 'missed'}); training chars/s: {speed:.2f}x "
            f"(target > 1: {'met' if verdict['qrnn_faster'] else 'missed'}); per CPU second: {cpu_speed:.2f}x"
        )
    title = f"char LM of Python {corpus.python}'s stdlib ({args.backend}): " + ", ".join(
        f"{r['name']} {r['hidden_size']} units {r['parameters']:,} params" for r in results
    )
    figure = plot(results, title, ex.out / f"qrnn_charlm_{args.backend}.png")
    summary = {
        "python": corpus.python,
        "stdlib": str(corpus.root),
        "corpus": {
            "fingerprint": corpus.fingerprint,
            "train_bytes": int(corpus.train.size),
            "heldout_bytes": int(corpus.heldout.size),
            "train_files": corpus.train_files,
            "heldout_files": corpus.heldout_files,
            "other_fraction": corpus.other_fraction,
            "heldout_chars_evaluated": held.chars,
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "models": [{k: v for k, v in r.items() if k != "rows"} for r in results],
        "comparison": verdict,
    }
    report = ex.out / f"qrnn_charlm_{args.backend}.json"
    report.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"plot: {figure}\ncurves: {', '.join(r['curve'] for r in results)}\nresults: {report}")


if __name__ == "__main__":
    main()
