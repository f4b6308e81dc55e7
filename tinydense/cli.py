"""The ``tinydense`` command (also ``python -m tinydense``).

    tinydense train        train a model on CIFAR (default: DenseNet-BC L=100 k=12,
                           CIFAR-10, the paper's recipe, 300 epochs)
    tinydense evaluate     test accuracy, per-class accuracy and confusion matrix of a checkpoint
    tinydense plot         loss, accuracy and learning-rate curves of a run, as a PNG
    tinydense summary      the layer-by-layer table of a model
    tinydense gradcheck    check every op's backward pass against finite differences
    tinydense grade        run students' lesson notebooks and workspaces, write a CSV of verdicts

Bad input gives one line on stderr and a non-zero exit status, before any
file is touched.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import DataLoader, DownloadError, default_data_dir, load_cifar

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130

# train options whose value goes into the run configuration (argparse dest -> config key)
CONFIG_OPTIONS = ("model", "depth", "growth_rate", "compression", "drop_rate", "dataset", "epochs",
                  "batch_size", "lr", "momentum", "weight_decay", "milestones", "limit_train",
                  "limit_test", "seed", "device")


def _add_model_options(p, training):
    from .training import DATASETS, MODELS
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, default=None, help="architecture (default: densenet-bc)")
    g.add_argument("--depth", type=int, help="depth L (default: 100 for densenet-bc, 40 for densenet, "
                                             "110 for resnet)")
    g.add_argument("--growth-rate", type=int, help="growth rate k of a DenseNet (default: 12)")
    g.add_argument("--compression", type=float, help="compression theta of the transitions "
                                                     "(default: 0.5 for densenet-bc, 1 for densenet)")
    g.add_argument("--drop-rate", type=float, help="dropout after each convolution of a DenseNet (default: 0)")
    g.add_argument("--dataset", choices=tuple(DATASETS), default=None,
                   help="cifar10 or cifar100 (sets the number of classes; default: cifar10)")
    if not training:
        return
    g = p.add_argument_group("training (default: the paper's recipe)")
    g.add_argument("--epochs", type=int, help="number of epochs to train (default: 300)")
    g.add_argument("--batch-size", type=int, help="images per batch (default: 64)")
    g.add_argument("--lr", type=float, help="initial learning rate (default: 0.1)")
    g.add_argument("--momentum", type=float, help="Nesterov momentum (default: 0.9)")
    g.add_argument("--weight-decay", type=float, help="L2 weight decay (default: 1e-4)")
    g.add_argument("--milestones", type=int, nargs="+", metavar="EPOCH",
                   help="epochs at which the learning rate is divided by 10 (default: 50%% and 75%% of --epochs)")
    g.add_argument("--no-augment", action="store_true", help="no random crops and flips")
    g.add_argument("--limit-train", type=int, metavar="N", help="train on the first N training images only")
    g.add_argument("--limit-test", type=int, metavar="N", help="test on the first N test images only")
    g.add_argument("--seed", type=int, help="seed of every random generator (default: 0)")
    g.add_argument("--device", help="cpu or cuda (default: cpu)")
    g = p.add_argument_group("files")
    g.add_argument("--data-dir", help="directory holding cifar-10-batches-py/ (default: $TINYDENSE_DATA, else data/)")
    g.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    g.add_argument("--out", help="run directory (default: runs/<model>-L<depth>-k<growth>-<dataset>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last.npz")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinydense", description="Train and inspect DenseNets on CIFAR "
                                     "with tinydense, a from-scratch NumPy framework.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model on CIFAR-10/100",
                       description="Train on CIFAR. Defaults: DenseNet-BC L=100 k=12 on CIFAR-10 with the paper's "
                                   "recipe (300 epochs, batch 64, SGD with Nesterov momentum 0.9, lr 0.1 divided by "
                                   "10 at 50% and 75% of the epochs, weight decay 1e-4, crops and flips).")
    _add_model_options(p, training=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("checkpoint", help="a run's best.npz or last.npz")
    p.add_argument("--data-dir", help="directory holding the data set (default: $TINYDENSE_DATA, else data/)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument("--limit-test", type=int, metavar="N", help="use the first N test images only")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (default: 128)")
    p.add_argument("--device", help="cpu or cuda (default: the run's device)")
    p.add_argument("--plot", nargs="?", const="", metavar="PNG",
                   help="also draw the confusion matrix (default file: next to the checkpoint)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plot", help="loss, accuracy and learning-rate curves of a run, as a PNG")
    p.add_argument("run_dir", metavar="DIR", help="a run directory (with metrics.csv)")
    p.add_argument("--out", metavar="PNG", help="output file (default: DIR/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("summary", help="the layer-by-layer table of a model")
    _add_model_options(p, training=False)
    p.add_argument("--image-size", type=int, default=32, help="input images are SIZE x SIZE (default: 32)")
    p.add_argument("--level", type=int, help="list the modules LEVEL levels down, each with the total of "
                                             "what it contains (default: every layer)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("gradcheck", help="check every op's backward pass against finite differences")
    p.set_defaults(func=cmd_gradcheck)
    _add_grade_command(sub)
    return parser


def cmd_train(args) -> int:
    from .tools.plots import plot_curves
    from .training import Trainer, make_config, run_name
    options = {k: getattr(args, k) for k in CONFIG_OPTIONS}
    if args.no_augment:
        options["augment"] = False
    out = Path(args.out) if args.out else Path("runs") / run_name(make_config(**options))
    trainer = Trainer(options, out, resume=args.resume, data_dir=args.data_dir,
                      download=not args.no_download, progress=not args.no_progress)
    c = trainer.config
    n_params = sum(p.size for p in trainer.model.parameters())
    print(f"{run_name(c)}: {n_params:,} parameters, {c['dataset']} with {len(trainer.train_set)} training "
          f"and {len(trainer.test_set)} test images from {trainer.data_dir}, on {c['device']}")
    print(f"recipe: {c['epochs']} epochs, batch {c['batch_size']}, lr {c['lr']} x{c['gamma']} at epochs "
          f"{c['milestones']}, momentum {c['momentum']} (Nesterov), weight decay {c['weight_decay']}, "
          f"augmentation {'on' if c['augment'] else 'off'}, seed {c['seed']}; writing to {out}", flush=True)
    status = trainer.fit()
    if status == "interrupted":
        print(f"tinydense: interrupted; continue with: tinydense train --out {out} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    plot_curves(trainer.metrics_path, out / "curves.png", title=run_name(c))
    best = max(trainer.history, key=lambda r: r["test_acc"]) if trainer.history else None
    if best is not None:
        print(f"done: best test accuracy {100 * best['test_acc']:.2f}% (epoch {best['epoch']}), final "
              f"{100 * trainer.history[-1]['test_acc']:.2f}%; files in {out}: last.npz, best.npz, "
              f"metrics.csv, config.json, curves.png")
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from .tools.plots import plot_confusion
    from .training import evaluate, load_model
    if args.batch_size <= 0:
        raise ValueError(f"batch-size must be a positive integer, got {args.batch_size}")
    model, state = load_model(args.checkpoint, device=args.device)
    config = state["config"]
    data_dir = default_data_dir(args.data_dir)
    test = load_cifar(config["dataset"], data_dir, train=False, download=not args.no_download)
    test = test.head(args.limit_test)
    loader = DataLoader(test, args.batch_size, mean=state["data"]["mean"], std=state["data"]["std"],
                        device=config["device"])
    result = evaluate(model, loader, test.num_classes, progress=sys.stderr.isatty())
    confusion = result["confusion"]
    print(f"{args.checkpoint}: {config['model']} L={config['depth']} on {config['dataset']}, after epoch "
          f"{int(state['epoch'])}: test accuracy {100 * result['acc']:.2f}% "
          f"({int(np.trace(confusion))} of {len(test)}), loss {result['loss']:.4f}")
    width = max(len(c) for c in test.classes)
    print(f"\n{'class':<{width}}  images  correct  accuracy")
    for k, name in enumerate(test.classes):
        n = int(confusion[k].sum())
        acc = f"{100 * confusion[k, k] / n:7.2f}%" if n else "      -"
        print(f"{name:<{width}}  {n:6d}  {int(confusion[k, k]):7d}  {acc}")
    if len(test.classes) <= 20:
        cell = max(5, len(str(confusion.max())) + 1)
        print(f"\nconfusion matrix (rows: true class, columns: predicted)\n{'':<{width}} "
              + "".join(f"{name[:cell - 1]:>{cell}}" for name in test.classes))
        for k, name in enumerate(test.classes):
            print(f"{name:<{width}} " + "".join(f"{v:>{cell}d}" for v in confusion[k]))
    elif args.plot is None:
        print(f"\n({len(test.classes)}x{len(test.classes)} confusion matrix: draw it with --plot)")
    if args.plot is not None:
        path = Path(args.plot) if args.plot else Path(args.checkpoint).with_name(
            f"{Path(args.checkpoint).stem}-confusion.png")
        plot_confusion(confusion, test.classes, path, title=f"{Path(args.checkpoint).name}: "
                       f"test accuracy {100 * result['acc']:.2f}%")
        print(f"\nconfusion matrix drawn to {path}")
    return 0


def cmd_plot(args) -> int:
    from .tools.plots import plot_curves
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a run directory")
    path = plot_curves(run_dir / "metrics.csv", args.out or run_dir / "curves.png", title=run_dir.name)
    print(f"curves drawn to {path}")
    return 0


def cmd_summary(args) -> int:
    from .tools.summary import summary
    from .training import build_model, make_config
    options = {k: getattr(args, k) for k in ("model", "depth", "growth_rate", "compression", "drop_rate", "dataset")}
    model = build_model(make_config(**options))
    if args.image_size <= 0:
        raise ValueError(f"image-size must be a positive integer, got {args.image_size}")
    print(summary(model, (3, args.image_size, args.image_size), depth=args.level))
    return 0


def cmd_gradcheck(args) -> int:
    from .tools.op_checks import check_all_ops, format_table
    results = check_all_ops()
    print(format_table(results))
    return 0 if all(r.ok for r in results) else EXIT_ERROR


# --- tinydense grade (the course's instructor kit; logic in tools/grade.py) -----------------

def _add_grade_command(sub):
    p = sub.add_parser("grade", help="run students' lesson notebooks and workspaces, write a CSV of verdicts",
                       description="Execute each notebook (its own cells, with the instructors' exercise checks) "
                                   "and check each workspace (my_ops*.py) in a child process with a time limit; "
                                   "write one CSV row per exercise: file, exercise, PASS/FAIL, message.")
    p.add_argument("paths", nargs="+", metavar="NOTEBOOK_OR_DIR", help="notebooks, workspaces or directories")
    p.add_argument("--out", default="grades.csv", help="the CSV to write (default: grades.csv; never overwritten)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per file (default: 600)")
    p.add_argument("--lessons", metavar="DIR", help="the instructors' lessons folder with exercises.py "
                                                    "(default: the repository's lessons/)")
    p.add_argument("--full", action="store_true", help="student settings instead of the fast ones "
                                                       "(TINYDENSE_LESSONS_FAST unset): much slower")
    p.set_defaults(func=cmd_grade)


def cmd_grade(args) -> int:
    from .tools.grade import grade
    rows = grade(args.paths, args.out, lessons=args.lessons, timeout=args.timeout, fast=not args.full)
    print(f"{sum(r[2] == 'PASS' for r in rows)} of {len(rows)} exercises PASS; wrote {args.out}")
    return 0


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    from .training import TrainingDiverged
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ntinydense: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, DownloadError, TrainingDiverged) as e:
        print(f"tinydense: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_ERROR
