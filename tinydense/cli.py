"""The ``tinydense`` command (also ``python -m tinydense``).

    tinydense train        train a model on CIFAR (default: DenseNet-BC L=100 k=12,
                           CIFAR-10, the paper's recipe, 300 epochs)
    tinydense evaluate     test accuracy, per-class accuracy and confusion matrix of a checkpoint;
                           of several, each one's accuracy and their ensemble's (averaged softmax)
    tinydense plot         loss, accuracy and learning-rate curves of a run, as an image
    tinydense summary      the layer-by-layer table of a model
    tinydense gradcheck    check every op's backward pass against finite differences
    tinydense grade        run students' lesson notebooks and workspaces, write a CSV of verdicts
    tinydense compare      architectures side by side: parameters, multiply-adds, memory,
                           measured throughput, published accuracy; the complexity chart;
                           with --train, each model trained for an epoch (the seed notes' experiment)

Bad input gives one line on stderr and a non-zero exit status, before any
file is touched or any data are read. (About 570 lines: every command's options
beside what the command does, one file for the whole command line; the work
itself is in tinydense.training and tinydense.tools.)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from .data import DataLoader, DownloadError, default_data_dir, load_cifar

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130
EXIT_BROKEN_PIPE = 128 + 13            # what a program stopped by SIGPIPE reports

# train options whose value goes into the run configuration (argparse dest -> config key)
CONFIG_OPTIONS = ("model", "depth", "growth_rate", "compression", "drop_rate", "dataset", "epochs",
                  "batch_size", "eval_batch_size", "lr", "momentum", "weight_decay", "milestones", "limit_train",
                  "limit_test", "val_split", "seed", "device")

THREADS_HELP = ("threads of the BLAS library behind the matrix products (default: its own choice, one per "
                "core). Two runs at once on one machine each start one thread per core and slow each other "
                "down many times over (oversubscription: e.g. 10 instead of 200 img/s each): give each run "
                "--threads CORES/RUNS")


def _images(text):
    """A positive number of images, or 'all'."""
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of images or 'all', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of images or 'all', got {value}")
    return value


def _add_model_options(p, training):
    from .training import DATASETS, MODELS
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, default=None, help="architecture (default: densenet-bc)")
    g.add_argument("--depth", type=int, help="depth L (default: 100 for densenet-bc, 40 for densenet, "
                                             "110 for resnet)")
    g.add_argument("--growth-rate", type=int, help="growth rate k of a DenseNet (default: 12)")
    g.add_argument("--compression", type=float, help="compression theta of a DenseNet's transitions "
                                                     "(default: 0.5 for densenet-bc, 1 for densenet)")
    g.add_argument("--drop-rate", type=float, help="dropout after each convolution of a DenseNet (default: 0)")
    g.add_argument("--dataset", choices=tuple(DATASETS), default=None,
                   help="cifar10 or cifar100 (sets the number of classes; default: cifar10)")
    if not training:
        return
    g = p.add_argument_group("training (default: the paper's recipe)")
    g.add_argument("--epochs", type=int, help="number of epochs to train (default: 300)")
    g.add_argument("--batch-size", type=int, help="images per batch (default: 64)")
    g.add_argument("--eval-batch-size", type=int, metavar="N",
                   help="images per batch when testing (default: --batch-size, so testing needs no more memory "
                        "than training)")
    g.add_argument("--lr", type=float, help="initial learning rate (default: 0.1); with --resume, the new "
                                            "base rate from the resumed epoch on, the drops still applied")
    g.add_argument("--momentum", type=float, help="Nesterov momentum, in [0, 1) (default: 0.9)")
    g.add_argument("--weight-decay", type=float, help="L2 weight decay (default: 1e-4)")
    g.add_argument("--milestones", type=int, nargs="+", metavar="EPOCH",
                   help="epochs after which the learning rate is divided by 10 (default: 50%% and 75%% of --epochs)")
    g.add_argument("--no-augment", action="store_true", help="no random crops and flips")
    g.add_argument("--limit-train", type=int, metavar="N", help="train on the first N training images only")
    g.add_argument("--limit-test", type=int, metavar="N", help="test on the first N test images only")
    g.add_argument("--val-split", type=int, metavar="N",
                   help="hold the last N training images (after --limit-train) out of training, and choose "
                        "best.npz by the accuracy on them instead of on the test set (default: no validation "
                        "images; best.npz by test accuracy, and the final epoch is the one to report)")
    g.add_argument("--seed", type=int, help="seed of every random generator (default: 0)")
    g.add_argument("--device", help="cpu or cuda (default: cpu)")
    g.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP + " (with N processes: CORES/N each)")
    g.add_argument("--nproc", type=int, metavar="N", help="N processes of this machine, data parallel (mpiexec -n N "
                   "tinydense train ...; pip install -e \".[mpi]\"); the batch size stays the global batch")
    g = p.add_argument_group("files")
    g.add_argument("--data-dir", help="directory holding cifar-10-batches-py/ (default: $TINYDENSE_DATA, else, "
                                      "with --resume, the run's, else data/)")
    _add_download_options(g)
    g.add_argument("--out", help="run directory, new or empty (default: runs/<model>-L<depth>-k<growth>-<dataset>)")
    g.add_argument("--out-exists-ok", action="store_true",
                   help="let --out be a directory with other files: the run writes its own files beside them "
                        "(never over a file of the same name)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last.npz")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")


def _add_download_options(g):
    g.add_argument("--download", action="store_true",
                   help="download CIFAR (170 MB) into --data-dir when it is missing there (without it, only the "
                        "default folder data/ is filled by itself)")
    g.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data, even "
                                                              "into data/")


def _download(args):
    """The Trainer's ``download``: asked for, refused, or only into the default folder."""
    if args.download and args.no_download:
        raise ValueError("--download and --no-download contradict each other: give one")
    return True if args.download else (False if args.no_download else "default")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinydense", description="Train and inspect DenseNets on CIFAR "
                                     "with tinydense, a from-scratch NumPy framework.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model on CIFAR-10/100",
                       description="Train on CIFAR. Defaults: DenseNet-BC L=100 k=12 on CIFAR-10 with the paper's "
                                   "recipe (300 epochs, batch 64, SGD with Nesterov momentum 0.9, lr 0.1 divided by "
                                   "10 at 50% and 75% of the epochs, weight decay 1e-4, crops and flips). After the "
                                   "first batches it prints the estimated time of the whole run.")
    _add_model_options(p, training=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a checkpoint; "
                                        "of several: each one's accuracy and their ensemble's")
    p.add_argument("checkpoint", nargs="+", help="a run's best.npz or last.npz; several: each one's test accuracy "
                                                 "and their ensemble's (the averaged softmax)")
    p.add_argument("--data-dir", help="directory holding the data set (default: $TINYDENSE_DATA, else the one "
                                      "the run recorded in the config.json beside the checkpoint, else data/)")
    _add_download_options(p)
    p.add_argument("--limit-test", type=_images, metavar="N",
                   help="use the first N test images, or 'all' (default: what the run used, its --limit-test)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the run's testing batch size)")
    p.add_argument("--device", help="cpu or cuda (default: the run's device)")
    p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    p.add_argument("--plot", nargs="?", const="", metavar="IMAGE",
                   help="also draw the confusion matrix; the suffix chooses the format (.png, .svg, .pdf ...; "
                        "default file: CHECKPOINT-confusion.png next to the checkpoint)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plot", help="loss, accuracy and learning-rate curves of a run, as an image")
    p.add_argument("run_dir", metavar="DIR", help="a run directory (with metrics.csv)")
    p.add_argument("--out", metavar="IMAGE", help="output file; the suffix chooses the format (.png, .svg, .pdf ...; "
                                                  "default: DIR/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("summary", help="the layer-by-layer table of a model: shapes, parameters, "
                                       "multiply-adds (MACs), memory",
                       description="The layer-by-layer table of a model for one image: output shapes, "
                                   "parameters, multiply-adds (MACs) and the memory of each output.")
    _add_model_options(p, training=False)
    p.add_argument("--image-size", type=int, default=32, help="input images are SIZE x SIZE (default: 32)")
    p.add_argument("--level", type=int, help="list the modules LEVEL levels down (1, 2 ...), each with the "
                                             "parameters and multiply-adds of all it contains and the memory "
                                             "of its own output (default: every layer)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("gradcheck", help="check every op's backward pass against finite differences")
    p.set_defaults(func=cmd_gradcheck)
    _add_grade_command(sub)
    _add_compare_parser(sub)
    return parser


def _schedule(c) -> str:
    """The learning-rate schedule of a configuration, in words."""
    from .training import base_lr
    text = f"lr {c['lr']:g}"
    if c["lr_changes"]:
        change = c["lr_changes"][-1]
        text += f" (set to {base_lr(c):g} from epoch {change['epoch']} on)"
    milestones = c["milestones"]
    if not milestones:
        return text + ", no learning-rate drops"
    epochs = ", ".join(map(str, milestones))
    return text + f" x{c['gamma']:g} after epoch{'s' if len(milestones) > 1 else ''} {epochs}"


def cmd_train(args) -> int:
    from .training.distributed import on_processes
    return on_processes(args.nproc, args.argv, lambda comm: _train(args, comm))


def _train(args, comm) -> int:
    from .tools.plots import plot_curves
    from .text import plural
    from .threads import blas_threads, load_average, set_blas_threads
    from .training import Trainer, make_config, run_name
    from .training.distributed import DistributedTrainer
    from .training.sharing import oversubscription, other_runs
    if args.out is not None and not args.out.strip():
        raise ValueError("--out is empty: give a run directory, or leave --out out for runs/<model>-...")
    download = _download(args)
    if args.threads is not None or comm.size > 1:     # N processes share the cores
        set_blas_threads(max(1, (os.cpu_count() or 1) // comm.size) if args.threads is None else args.threads)
    options = {k: getattr(args, k) for k in CONFIG_OPTIONS}
    files = dict(resume=args.resume, data_dir=args.data_dir, download=download, progress=not args.no_progress,
                 exist_ok=args.out_exists_ok)
    if args.no_augment:
        options["augment"] = False
    out = Path(args.out) if args.out else Path("runs") / run_name(make_config(**options))
    trainer = (Trainer(options, out, **files) if comm.size == 1 else DistributedTrainer(options, out, comm, **files))
    c = trainer.config
    n_params = sum(p.size for p in trainer.model.parameters())
    val = (f", {len(trainer.val_set)} of them held out for validation (--val-split)"
           if trainer.val_set is not None else "")
    threads = blas_threads()
    print(f"{run_name(c)}: {n_params:,} parameters, {c['dataset']} with "
          f"{len(trainer.train_set) + (len(trainer.val_set) if trainer.val_set is not None else 0)} training "
          f"images{val} and {len(trainer.test_set)} test images from {trainer.data_dir}, on {c['device']}"
          + (f", {plural(threads, 'BLAS thread')}" if threads and c["device"] == "cpu" else ""))
    if c["device"] == "cuda":
        from . import cuda
        print(cuda.describe())
    print(f"recipe: {plural(c['epochs'], 'epoch')}, batch {c['batch_size']}, {_schedule(c)}, momentum "
          f"{c['momentum']:g}{' (Nesterov)' if c['nesterov'] else ''}, weight decay {c['weight_decay']:g}, "
          f"augmentation {'on' if c['augment'] else 'off'}, seed {c['seed']}; writing to {out}", flush=True)
    if c["device"] == "cpu" and comm.rank == 0:
        warning = oversubscription(threads, os.cpu_count(), other_runs(), load_average())
        if warning:
            print(warning, file=sys.stderr, flush=True)
    status = trainer.fit()
    if status == "interrupted":
        print(f"tinydense: interrupted; continue with: tinydense train --out {out} --resume", file=sys.stderr)
        signum = trainer.stop_signal
        return EXIT_INTERRUPTED if signum in (None, signal.SIGINT) else 128 + signum
    if comm.rank == 0:
        plot_curves(trainer.metrics_path, out / "curves.png", title=run_name(c))
    history = trainer.history
    if history:
        final = history[-1]
        best = next((r for r in history if r["epoch"] == trainer.best_epoch), final)
        if trainer.val_set is not None:
            chosen = (f"best.npz holds epoch {best['epoch']}, the best validation accuracy "
                      f"{100 * best['val_acc']:.2f}% (test accuracy {100 * best['test_acc']:.2f}%)")
        else:
            chosen = (f"best.npz holds epoch {best['epoch']}, {100 * best['test_acc']:.2f}%, chosen on the test "
                      f"set (an optimistic number; --val-split N chooses on held-out training images)")
        print(f"done: final test accuracy {100 * final['test_acc']:.2f}% (epoch {final['epoch']}), the number to "
              f"report; {chosen}; files in {out}: last.npz, best.npz, metrics.csv, config.json, curves.png")
    return 0


def _confusion_path(args):
    """Where ``evaluate --plot`` draws (checked before any work), or None."""
    from .tools.plots import check_image_path
    if args.plot is None:
        return None
    if len(args.checkpoint) > 1:
        raise ValueError(f"evaluate: --plot draws the confusion matrix of one checkpoint, and "
                         f"{len(args.checkpoint)} were given; plot them one at a time")
    checkpoint = Path(args.checkpoint[0])
    path = Path(args.plot) if args.plot else checkpoint.with_name(f"{checkpoint.stem}-confusion.png")
    check_image_path(path)
    return path


def _test_images(args, checkpoint, config, download):
    """(the test images ``evaluate`` uses, a phrase saying which): from --data-dir, else
    $TINYDENSE_DATA, else the data folder the run recorded beside ``checkpoint``; the first
    --limit-test of them, else as many as the run used."""
    from .training.runfiles import read_record
    data_dir = default_data_dir(args.data_dir, recorded=read_record(Path(checkpoint).parent).get("data_dir"))
    test = load_cifar(config["dataset"], data_dir, train=False,
                      download=download is True or (download == "default" and data_dir == Path("data")))
    if args.limit_test is None:
        limit = config["limit_test"]
        which = f"the first {limit}, as the run used (--limit-test {limit})" if limit else "all"
    else:
        limit = None if args.limit_test == "all" else args.limit_test
        which = f"the first {limit} (--limit-test {limit})" if limit else "all (--limit-test all)"
    return test.head(limit), which


def cmd_evaluate(args) -> int:
    import numpy as np

    from .tools.plots import plot_confusion
    from .threads import set_blas_threads
    from .training import evaluate, load_model
    if args.batch_size is not None and args.batch_size <= 0:
        raise ValueError(f"batch-size must be a positive integer, got {args.batch_size}")
    for path in args.checkpoint:
        if Path(path).suffix.lower() in (".pth", ".pt"):
            raise ValueError(f"{path} is a PyTorch file: tinydense evaluate reads a tinydense run's best.npz or "
                             f"last.npz. Load PyTorch weights in Python with tinydense.load_pth(path) and "
                             f"model.load_state_dict(...)")
    plot_path = _confusion_path(args)
    download = _download(args)
    if args.threads is not None:
        set_blas_threads(args.threads)
    if len(args.checkpoint) > 1:
        return _evaluate_ensemble(args, download)
    checkpoint = args.checkpoint[0]
    model, state = load_model(checkpoint, device=args.device)
    config = state["config"]
    test, which = _test_images(args, checkpoint, config, download)
    batch_size = args.batch_size or config["eval_batch_size"] or config["batch_size"]
    loader = DataLoader(test, batch_size, mean=state["data"]["mean"], std=state["data"]["std"],
                        device=config["device"])
    result = evaluate(model, loader, test.num_classes, progress=sys.stderr.isatty())
    confusion = result["confusion"]
    print(f"{checkpoint}: {config['model']} L={config['depth']} on {config['dataset']}, after epoch "
          f"{int(state['epoch'])}: test accuracy {100 * result['acc']:.2f}% "
          f"({int(np.trace(confusion))} of {len(test)} test images: {which}), loss {result['loss']:.4f}")
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
    elif plot_path is None:
        print(f"\n({len(test.classes)}x{len(test.classes)} confusion matrix: draw it with --plot)")
    if plot_path is not None:
        plot_confusion(confusion, test.classes, plot_path, title=f"{Path(checkpoint).name}: "
                       f"test accuracy {100 * result['acc']:.2f}%")
        print(f"\nconfusion matrix drawn to {plot_path}")
    return 0


def _evaluate_ensemble(args, download) -> int:
    """``evaluate A.npz B.npz ...``: each checkpoint's test accuracy and their ensemble's
    (the averaged softmax, tools/ensemble.py), in one pass over the first run's test images."""
    import numpy as np

    from .tools.ensemble import evaluate_ensemble
    from .training import load_model
    loaded = [load_model(args.checkpoint[0], device=args.device)]       # each file checked and size-guarded
    device = loaded[0][1]["config"]["device"]                           # every model on the first one's device
    loaded += [load_model(path, device=device) for path in args.checkpoint[1:]]
    datasets = [state["config"]["dataset"] for _, state in loaded]
    if len(set(datasets)) > 1:
        named = ", ".join(f"{path} on {d}" for path, d in zip(args.checkpoint, datasets))
        raise ValueError(f"evaluate: an ensemble averages the class probabilities of models of one data set, "
                         f"and these were trained on different ones ({named})")
    config = loaded[0][1]["config"]
    test, which = _test_images(args, args.checkpoint[0], config, download)
    batch_size = args.batch_size or config["eval_batch_size"] or config["batch_size"]
    loader = DataLoader(test, batch_size, mean=None, std=None, device=device)   # [0, 1]: each model normalises
    result = evaluate_ensemble([model for model, _ in loaded], loader, test.num_classes,   # as its run did
                               normalizations=[(s["data"]["mean"], s["data"]["std"]) for _, s in loaded],
                               progress=sys.stderr.isatty())
    width = max(len(str(p)) for p in args.checkpoint + ["ensemble"])
    line = lambda r: (f"test accuracy {100 * r['acc']:.2f}% ({int(np.trace(r['confusion']))} of {len(test)}), "  # noqa
                      f"loss {r['loss']:.4f}")
    for path, (_, state), r in zip(args.checkpoint, loaded, result["members"]):
        c = state["config"]
        print(f"{str(path):<{width}}  {line(r)}  {c['model']} L={c['depth']}, after epoch {int(state['epoch'])}")
    print(f"{'ensemble':<{width}}  {line(result['ensemble'])}  the averaged softmax of these {len(loaded)}")
    print(f"({config['dataset']} test images: {which}, from {args.checkpoint[0]}'s run)")
    return 0


def _run_title(run_dir) -> str:
    """The run's name from its config.json, else the directory's name."""
    from .training import run_name
    try:
        return run_name(json.loads((Path(run_dir) / "config.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return Path(run_dir).name


def cmd_plot(args) -> int:
    from .tools.plots import check_image_path, plot_curves
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a run directory")
    out = Path(args.out) if args.out else run_dir / "curves.png"
    check_image_path(out)
    path = plot_curves(run_dir / "metrics.csv", out, title=_run_title(run_dir))
    print(f"curves drawn to {path}")
    return 0


def cmd_summary(args) -> int:
    from .tools.summary import summary
    from .training import build_model, make_config
    from .training.size import check_fits
    if args.image_size <= 0:
        raise ValueError(f"image-size must be a positive integer, got {args.image_size}")
    if args.level is not None and args.level < 1:
        raise ValueError(f"--level must be 1 or more (1: the model's direct parts), got {args.level}")
    options = {k: getattr(args, k) for k in ("model", "depth", "growth_rate", "compression", "drop_rate", "dataset")}
    config = make_config(**options, batch_size=1)
    check_fits(config)
    model = build_model(config)
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
                       description="Run each notebook's exercise stub cells and each workspace (my_ops*.py) in a fresh "
                                   "process with time limits, check them with the instructors' checks; "
                                   "write one CSV row per exercise: file, exercise, PASS/FAIL, message.")
    p.add_argument("paths", nargs="+", metavar="NOTEBOOK_OR_DIR", help="notebooks, workspaces or directories")
    p.add_argument("--out", default="grades.csv", help="the CSV to write (default: grades.csv; never overwritten)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per file (default: 600)")
    p.add_argument("--cell-timeout", type=float, help="seconds per cell and per check, below --timeout "
                                                      "(default: 120, or half of --timeout)")
    p.add_argument("--course", "--lessons", metavar="DIR", dest="course",
                   help="the instructors' course folder with checks/ (default: the repository's lessons/)")
    p.add_argument("--full", action="store_true", help="student settings instead of the fast ones "
                                                       "(TINYDENSE_LESSONS_FAST unset): much slower")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default: 1)")
    p.add_argument("--pattern", metavar="REGEX", help="the student of a file: a group (?P<student>...), or "
                                                     "(?P<key>...) looked up in --roster, in its path")
    p.add_argument("--roster", metavar="CSV", help="columns key,student: who each key of --pattern is")
    p.add_argument("--points", metavar="JSON", help='points per exercise, e.g. {"default": 1, "Conv2d": 3}')
    p.add_argument("--feedback", metavar="DIR", help="write a feedback file per student into DIR")
    p.add_argument("--gradescope", metavar="FILE", help="also write Gradescope's results.json to FILE")
    p.add_argument("--data-dir", metavar="DIR", help="CIFAR-10 for the capstone's accuracy (default: $TINYDENSE_DATA "
                                                     "if it holds CIFAR-10, else synthetic images)")
    p.set_defaults(func=cmd_grade)


def cmd_grade(args) -> int:
    from .tools.grade import grade
    rows = grade(args.paths, args.out, lessons=args.course, timeout=args.timeout, fast=not args.full,
                 cell_timeout=args.cell_timeout, jobs=args.jobs, pattern=args.pattern, roster=args.roster,
                 points=args.points, feedback=args.feedback, gradescope=args.gradescope, data_dir=args.data_dir)
    print(f"{sum(r['result'] == 'PASS' for r in rows)} of {len(rows)} exercises PASS; wrote {args.out}")
    return 0


# --- tinydense compare ---------------------------------------------------------------------

def _add_compare_parser(sub):
    from .tools.compare import CIFAR, MODELS, ZOO
    p = sub.add_parser("compare", help="architectures side by side: parameters, multiply-adds, memory, "
                                       "measured throughput, published accuracy",
                       description="A table of the models: parameters, multiply-adds and activation memory "
                                   "for one image (from the summary), inference and training images per "
                                   "second measured on this machine, and the published top-1 accuracy with "
                                   "its source; --plot draws the lecture's complexity chart. Models: "
                                   f"{', '.join(MODELS)}; or zoo ({', '.join(ZOO)}) or cifar "
                                   f"({', '.join(CIFAR)}).")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model names, or the groups zoo and cifar")
    p.add_argument("--image-size", type=int, metavar="N",
                   help="every model on N x N images (default: 224 for the ImageNet models, 32 for the CIFAR ones)")
    p.add_argument("--batch", type=int, default=2, metavar="N",
                   help="images per timed forward pass / training step (default: 2)")
    p.add_argument("--repeats", type=int, default=3, metavar="N",
                   help="timed runs per measurement, after one warm-up; the median counts (default: 3)")
    p.add_argument("--no-measure", action="store_true", help="only count (parameters, multiply-adds, memory): "
                                                             "no timing, seconds instead of minutes")
    p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    p.add_argument("--plot", metavar="IMAGE", help="also draw the complexity chart (x: multiply-adds, y: "
                                                   "top-1 accuracy, bubble area: parameters); the suffix "
                                                   "chooses the format (.png, .svg, .pdf ...)")
    g = p.add_argument_group("training (the seed notes' experiment: --train DATASET; tools/train_compare.py)")
    g.add_argument("--train", choices=("cifar10", "cifar100"), metavar="DATASET",
                   help="instead of the table above, train each model on DATASET (cifar10 or cifar100) at 32x32, "
                        "each in a fresh process, and print parameters, multiply-adds per image and per batch of "
                        "128, seconds per epoch, peak memory and test accuracy")
    for option, kind, default, text in TRAIN_COMPARE_OPTIONS:
        g.add_argument(option, type=kind, metavar="N" if kind is int else "X",
                       help=f"{text} (default: {'all' if default is None else default})")
    g.add_argument("--weights", nargs="+", metavar="NAME_OR_FILE",
                   help="start from pretrained weights: a name torchvision publishes for every model (DEFAULT, "
                        "IMAGENET1K_V1; downloaded once into the cache) or one file per model; the classifier is "
                        "replaced (default: from scratch)")
    g.add_argument("--data-dir", help="directory holding the data set (default: $TINYDENSE_DATA, else data/)")
    p.set_defaults(func=cmd_compare)


# compare --train's options: (option, type, default, help); the defaults are the seed's
TRAIN_COMPARE_OPTIONS = (("--epochs", int, 1, "epochs to train"), ("--batch-size", int, 32, "images per batch"),
                         ("--lr", float, 0.001, "SGD learning rate"), ("--momentum", float, 0.9, "SGD momentum"),
                         ("--limit-train", int, None, "train on the first N training images only"),
                         ("--limit-test", int, None, "test on the first N test images only"),
                         ("--seed", int, 0, "seed of the shuffling and the new weights"))


def cmd_train_compare(args, names) -> int:
    """``compare A B --train DATASET``: tools/train_compare.py's table."""
    from .tools.train_compare import train_compare
    clash = [o for o, given in (("--plot", args.plot), ("--image-size", args.image_size), ("--no-measure",
             args.no_measure), ("--batch", args.batch != 2), ("--repeats", args.repeats != 3)) if given]
    if clash:
        raise ValueError(f"compare --train: {', '.join(clash)} belong to the table without --train; training "
                         f"takes --batch-size, --epochs, --lr ...")
    options = {option[2:].replace("-", "_"): default for option, _, default, _ in TRAIN_COMPARE_OPTIONS}
    options.update({k: getattr(args, k) for k in options if getattr(args, k) is not None})
    result = train_compare(names, args.train, default_data_dir(args.data_dir), weights=args.weights,
                           threads=args.threads, progress=sys.stderr.isatty(),
                           log=lambda text: print(text, file=sys.stderr, flush=True), **options)
    print(result)
    return 0


def cmd_compare(args) -> int:
    from .tools.compare import check_plottable, compare, resolve
    from .threads import set_blas_threads
    from .tools.plots import check_image_path
    names = resolve(args.models)                            # unknown names: refused before any work
    if args.train:
        return cmd_train_compare(args, names)
    training_only = [o for o, *_ in TRAIN_COMPARE_OPTIONS if getattr(args, o[2:].replace("-", "_")) is not None]
    training_only += [o for o in ("--weights", "--data-dir") if getattr(args, o[2:].replace("-", "_"))]
    if training_only:
        raise ValueError(f"compare: {', '.join(training_only)} need(s) --train DATASET (the training experiment)")
    for option in ("image_size", "batch", "repeats"):
        value = getattr(args, option)
        if value is not None and value <= 0:
            raise ValueError(f"{option.replace('_', '-')} must be a positive integer, got {value}")
    if args.plot:
        check_image_path(args.plot)
        check_plottable(names)
    if args.threads is not None:
        set_blas_threads(args.threads)
    result = compare(args.models, image_size=args.image_size, batch=args.batch, repeats=args.repeats,
                     measure_speed=not args.no_measure, log=lambda text: print(text, file=sys.stderr, flush=True))
    print(result)
    if args.plot:
        print(f"complexity chart drawn to {result.plot(args.plot)}")
    return 0


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    from .training import TrainingDiverged
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ntinydense: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("tinydense: error: out of memory: this machine cannot hold what was asked for; use a smaller "
              "--batch-size (or --depth, --growth-rate, --image-size); a run's last.npz keeps its last saved state",
              file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:                # the reader went away (e.g. `| head`): stop quietly,
        devnull = os.open(os.devnull, os.O_WRONLY)          # as Python's documentation advises
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (ValueError, OSError, DownloadError, TrainingDiverged) as e:
        print(f"tinydense: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_ERROR
