"""The `jaxcnn` command: train, eval, verify, check, bench, report, tutorials, import-mat, export-mat.

Errors in what the user gave (config, data, folders, checkpoints) print one line and exit 2;
a diverged run exits 3; `train --check-data` exits 4 when the data cannot be had here. `--debug` shows
the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


DATA_UNAVAILABLE = 4         # `train --check-data`: the dataset is neither here nor downloadable from here


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcnn", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a net from a TOML config")
    p.add_argument("config", nargs="?", help="a packaged config's name (see `jaxcnn configs`) or a .toml file "
                                                 "(optional with --resume: the run's own config)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last good checkpoint")
    p.add_argument("--force", action="store_true", help="resume even if the config changed")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in the output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report", action="store_true", help="write OUT/report.html when the run ends (see `jaxcnn report`)")
    p.add_argument("--check-data", action="store_true",
                   help="only make sure the config's data can be had (downloading it if needed), print where it "
                        f"comes from and exit 0, or exit {DATA_UNAVAILABLE} with one line when it is not available here; "
                        "trains and writes no run")

    p = sub.add_parser("report", help="one self-contained HTML page following one test image through a trained run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--image", type=int, default=0, metavar="INDEX", help="the test image to follow (default 0)")
    p.add_argument("--out", metavar="FILE", help="the page (default RUN_DIR/report.html)")

    p = sub.add_parser("sweep", help="train many nets at once from a sweep config (one program, sharded across devices)")
    p.add_argument("config", help="a sweep config: a packaged name (sweep_seeds, sweep_alpha) or a .toml file")
    p.add_argument("--batching", choices=["side-by-side", "vmap"], default="side-by-side",
                   help="how a device's members share its program: independent scans (default, faster on CPU) or jax.vmap")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override the base config")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="run as one process of a multi-process sweep (jax.distributed.initialize); "
                        "start the same command on every process with its own --process-id")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--cpu-devices", type=int, metavar="N",
                   help="CPU devices to spread the members over, each on its own core (default: as many as cores, "
                        "no more than divide the members evenly; 1 keeps them on one device). Ignored with "
                        "--coordinator or when XLA_FLAGS sets --xla_force_host_platform_device_count")

    p = sub.add_parser("eval", help="test a saved net (net.npz or a toolbox .mat)")
    p.add_argument("net")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    p.add_argument("--data", help="a folder of IDX files or mnist_uint8.mat")
    p.add_argument("--n-test", type=int, default=0, help="use the first N test images")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", help="prove the delta-rule backprop against jax.grad, finite differences "
                                      "and the original toolbox")
    p.add_argument("--golden", help="the full toolbox_golden.mat, or a compact .npz (default: the copy shipped "
                                        "with jaxcnn)")

    p = sub.add_parser("check", help="check your own cnnbp (a .py file, or a folder with cnnbp.m for GNU Octave) "
                                     "against the lecture's, quantity by quantity, and name the mistake")
    p.add_argument("path", metavar="PATH", help="a Python file defining cnnbp(net, y), or a folder holding cnnbp.m")
    p.add_argument("--json", action="store_true", help="print one JSON object (passed, quantities, first_failure, "
                                                       "diagnosis, error; see docs/check.md)")
    p.add_argument("--report", metavar="FILE", help="also write one self-contained HTML page: verdict, diagnosis, "
                                                    "and each failing quantity's maps beside the lecture's")

    p = sub.add_parser("bench", help="time epochs of jaxcnn, the baseline and a peer, interleaved: ratios of medians")
    p.add_argument("config", nargs="?", default=None, help="a config name or .toml file (default fashion_mnist)")
    p.add_argument("--epochs", type=int, default=3, help="timed rounds (each contender runs one epoch a round)")
    p.add_argument("--float64", action="store_true")
    p.add_argument("--json", action="store_true", help="print the whole record as one JSON object")
    p.add_argument("--no-baseline", action="store_true", help="do not time the autodiff lax.conv baseline")
    p.add_argument("--peer", action="append", choices=["torch", "torch-compile"], default=[],
                   help="also time another framework on the same net (needs jaxcnn[peers]); repeat for several")

    sub.add_parser("configs", help="list the packaged configs with their descriptions")

    p = sub.add_parser("tutorials", help="write the tutorials (the lecture as notebooks) into DIR as .ipynb files "
                                         "(needs jaxcnn[tutorials])")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="replace the tutorials' notebooks already in DIR")

    p = sub.add_parser("import-mat", help="toolbox cnn struct (.mat) -> net.npz")
    p.add_argument("mat")
    p.add_argument("out")
    p.add_argument("--var", default="cnn")
    p.add_argument("--input-shape", metavar="H,W[,C]", type=_shape,
                   help="image size (the struct does not record it; default: the square size that fits ffW)")

    p = sub.add_parser("export-mat", help="net.npz -> toolbox cnn struct (.mat) for cnnff/cnntest")
    p.add_argument("net")
    p.add_argument("out")
    p.add_argument("--var", default="cnn")
    return parser


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W or H,W,C, got {text!r}") from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W or H,W,C of positive sizes, got {text!r}")
    return shape


def _train(args) -> int:
    from . import config as config_mod, run

    if args.resume:
        out = Path(args.resume)
        cfg_path = Path(args.config) if args.config else out / "config.toml"
    else:
        if not args.config:
            raise run.RunError("train: give a config file (or --resume DIR)")
        cfg_path = Path(args.config)
        out = Path(args.out) if args.out else Path("runs") / cfg_path.stem
    cfg = config_mod.load(cfg_path, args.set)
    if args.check_data:
        return _check_data(cfg)
    summary = run.train(cfg, out, resume=bool(args.resume), overwrite=args.overwrite, force=args.force,
                        progress=not args.no_progress and sys.stderr.isatty())
    timing = (f"{summary['seconds_per_epoch']:.2f} s/epoch" if summary["seconds_per_epoch"] is not None
              else "no epoch left to train")
    print(f"test error {summary['test_error']:.4f} ({summary['n_misclassified']}/{summary['n_test']}), "
          f"{timing}, compile {summary['compile_seconds']:.2f} s; wrote {out}/")
    if args.report:
        return _report(argparse.Namespace(run_dir=str(out), image=0, out=None))
    return 0


def _check_data(cfg) -> int:
    """`train --check-data`: load the config's data as the run would, say where it comes from, and stop.
    A dataset that is neither here nor downloadable exits DATA_UNAVAILABLE, so that a script (scripts/run)
    can tell it from every other error (exit 2)."""
    from . import data as data_mod, run

    try:
        dataset = run.load_data(cfg)
    except data_mod.DataUnavailable as err:
        print(f"jaxcnn: error: {err}", file=sys.stderr)
        return DATA_UNAVAILABLE
    print(f"{dataset.name}: {len(dataset.train_labels)} training / {len(dataset.test_labels)} test images "
          f"from {dataset.source}")
    return 0


def _report(args) -> int:
    import time

    from . import report

    started = time.perf_counter()
    path, _ = report.write(Path(args.run_dir), args.image, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - started:.1f} s)")
    return 0


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _set_cpu_devices(devices: int) -> None:
    """Make `devices` CPU devices, before JAX starts; left alone where XLA_FLAGS or JAX_NUM_CPU_DEVICES
    already sets a count, or in a process whose JAX backend already started (`main` called from Python),
    which keeps its devices."""
    import jax

    if ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
            or "JAX_NUM_CPU_DEVICES" in os.environ):
        return
    try:
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError:
        pass


def _sweep(args) -> int:
    from . import sweep

    import jax

    if args.coordinator:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")      # collectives between CPU processes
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    else:
        if args.cpu_devices is not None and args.cpu_devices < 1:
            raise ValueError(f"--cpu-devices {args.cpu_devices}: must be at least 1")
        _, members, _ = sweep.load(args.config, args.set)
        _set_cpu_devices(args.cpu_devices or sweep.cpu_devices_for(len(members), _cpu_cores()))
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    rows = sweep.train(args.config, out, args.set, overwrite=args.overwrite, batching=args.batching)
    for row in rows:
        swept = ", ".join(f"{k}={v}" for k, v in row.items() if "." in k)
        print(f"member {row['member']:3d}  {swept:40s} test error {row['test_error']:.4f}")
    print(f"wrote {out}/")
    return 0


def _load_any_net(path):
    from . import netfile, toolbox

    return toolbox.load_net(path) if str(path).endswith(".mat") else netfile.load(path)


def _eval(args) -> int:
    from . import data as data_mod
    from .run import with_channels
    from .train import evaluate

    net = _load_any_net(args.net)
    dataset = data_mod.load_dataset(args.dataset, args.data).subset(None, args.n_test or None)
    result = evaluate(net, data_mod.to_float(with_channels(dataset.test_images), net.dtype), dataset.test_labels)
    if args.json:
        print(json.dumps({"test_error": result.error_rate, "n_misclassified": result.n_misclassified,
                          "n_test": len(dataset.test_labels), "confusion": result.confusion.tolist(),
                          "dtype": str(net.dtype)}))
    else:
        print(f"test error {result.error_rate:.4f} ({result.n_misclassified}/{len(dataset.test_labels)}) "
              f"on {dataset.name} from {dataset.source}")
    return 0


def _verify(args) -> int:
    from .verification import report

    return report.main(args.golden)


def _check(args) -> int:
    from .verification import check

    result = check(args.path)
    print(json.dumps(result.to_json(), indent=1) if args.json else str(result))
    if args.report:
        from .report import check_page

        path = check_page.write(result, args.report)
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0 if result.passed else 1


def _bench(args) -> int:
    from . import bench

    return bench.main(args.config, epochs=args.epochs, as_json=args.json, baseline=not args.no_baseline,
                      peer_names=args.peer, float64=args.float64)


def _configs(args) -> int:
    from . import config as config_mod

    configs = config_mod.packaged()
    width = max(map(len, configs))
    for name, resource in configs.items():
        print(f"{name:<{width}}  {config_mod.description(resource)}")
    return 0


def _tutorials(args) -> int:
    from . import tutorials

    paths = tutorials.write(args.dir, overwrite=args.overwrite)
    for path in paths:
        print(f"wrote {path}")
    print(f"open them with `jupyter lab {args.dir}` (pip install jupyterlab), or run one top to bottom with "
          f"`jupyter execute {paths[0]}`")
    return 0


def _import_mat(args) -> int:
    from . import netfile, toolbox

    net = toolbox.load_net(args.mat, var=args.var, input_shape=args.input_shape)
    netfile.save(args.out, net)
    print(f"wrote {args.out}")
    return 0


def _export_mat(args) -> int:
    from . import netfile, toolbox

    toolbox.save_net(args.out, netfile.load(args.net), var=args.var)
    print(f"wrote {args.out}")
    return 0


COMMANDS = {"train": _train, "sweep": _sweep, "eval": _eval, "verify": _verify, "check": _check, "bench": _bench, "report": _report, "configs": _configs,
            "tutorials": _tutorials,
            "import-mat": _import_mat, "export-mat": _export_mat}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .run import TrainingDiverged

    if args.command in ("train", "bench", "eval"):
        _set_cpu_devices(_cpu_cores())      # one CPU device per core: each batch is split over them (jaxcnn.parallel)
    try:
        return COMMANDS[args.command](args)
    except TrainingDiverged as err:
        if args.debug:
            raise
        print(f"jaxcnn: training diverged: {err}", file=sys.stderr)
        return 3
    except (ValueError, CheckpointError, OSError) as err:
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__          # one line, whatever the message
        print(f"jaxcnn: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxcnn: interrupted; the last checkpoint is kept (resume with --resume)", file=sys.stderr)
        return 130
