"""What idle cores cost the split epoch on this host, as docs/performance.md quotes it (fifth session).

    .venv/bin/python scripts/idle_cpus.py blas-burn
    .venv/bin/python scripts/idle_cpus.py spinners [--rounds 8]
    .venv/bin/python scripts/idle_cpus.py halt-poll NS [--rounds 8]       # root; puts the setting back

`blas-burn`: the CPU time this process's threads burn (os.times) in the 0.05, 0.2 and 0.5 s after an sgemm round returns
(OpenBLAS's pool spinning), then the split epoch started right after an sgemm round, 0.5 s after one, and with
no sgemm round before it.
`spinners`: the split epoch alone, and beside a `SCHED_IDLE` busy loop pinned to each core, which keeps the
vCPUs from halting and yields at once to any other thread. `halt-poll NS`: the split epoch and the one-device
epoch with the guest kernel's `haltpoll.guest_halt_poll_ns` as booted and at NS. Rounds alternate the order.
Timing only: random images, the toolbox net, batch 50, float32.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
SPIN = ("import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nos.sched_setaffinity(0, {%d})\n"
        "while True:\n    pass\n")


def epochs():
    """{"split": run, "one": run}: the compiled epoch with the batch split over the cores, and on one device."""
    from jaxcnn import EXAMPLE_LAYERS, init_net, parallel, train
    from jaxcnn.optimizers import init_state, spec_for

    net = init_net(jax.random.key(0), EXAMPLE_LAYERS, (28, 28), 10, jnp.float32)
    rng = np.random.default_rng(0)
    n = 60_000
    x = jnp.asarray(rng.random((n, 28, 28, 1)), jnp.float32)
    y = jnp.asarray(np.eye(10)[rng.integers(0, 10, n)], jnp.float32)
    spec = spec_for("sgd")
    opt, rl = init_state(spec, net, 1.0), jnp.asarray(np.nan, jnp.float32)
    batches = jnp.asarray(rng.permutation(n).reshape(-1, 50).astype(np.int32))
    runs = {}
    for name, mesh in (("split", parallel.batch_mesh(50)), ("one", None)):
        xs, ys = parallel.replicated((x, y), mesh)
        compiled = train.make_epoch_fn(spec.transformation(), donate=False, mesh=mesh).lower(
            net, opt, rl, xs, ys, batches).compile()
        runs[name] = lambda c=compiled, xs=xs, ys=ys: jax.block_until_ready(c(net, opt, rl, xs, ys, batches))
        runs[name]()
    return runs


def process_cpu_seconds() -> float:
    """CPU time of all this process's threads so far."""
    times = os.times()
    return times.user + times.system


def timed(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def alternate(variants: dict, rounds: int) -> dict[str, list[float]]:
    """{name: [seconds]}: `variants` maps a name to a function that times one epoch its way."""
    seconds = {name: [] for name in variants}
    for r in range(rounds):
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            time.sleep(0.5)
            seconds[name].append(variants[name]())
    return seconds


def report(seconds: dict[str, list[float]]) -> None:
    """Each variant's epochs, and every later variant against the first: ratio of the medians and per round."""
    for name, v in seconds.items():
        print(f"{name:28s} median {statistics.median(v):.3f} s  ({' '.join(f'{t:.3f}' for t in v)})")
    (a, first), *others = seconds.items()
    for b, second in others:
        ratios = [x / y for x, y in zip(first, second)]
        print(f"{a} / {b}: ratio of the medians {statistics.median(first) / statistics.median(second):.3f}, "
              f"per round median {statistics.median(ratios):.3f} (range {min(ratios):.3f} - {max(ratios):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["blas-burn", "spinners", "halt-poll"])
    parser.add_argument("ns", nargs="?", type=int, default=200_000, help="halt-poll: the polling time to try (ns)")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    jax.config.update("jax_num_cpu_devices", len(cores))
    from jaxcnn import bench

    print("load before", Path("/proc/loadavg").read_text().split()[:3])
    runs = epochs()
    if args.what == "blas-burn":
        sgemm = bench.sgemm()
        sgemm()
        for pause in (0.05, 0.2, 0.5):
            sgemm()
            before = process_cpu_seconds()
            time.sleep(pause)
            print(f"CPU seconds this process's threads burnt in the {pause} s after an sgemm round: "
                  f"{process_cpu_seconds() - before:.2f}")
        report(alternate({"right after an sgemm round": lambda: (sgemm(), timed(runs["split"]))[1],
                          "0.5 s after an sgemm round": lambda: (sgemm(), time.sleep(0.5), timed(runs["split"]))[2],
                          "no sgemm round": lambda: timed(runs["split"])}, args.rounds))
    elif args.what == "spinners":
        def beside_spinners():
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN % core]) for core in cores]
            try:
                time.sleep(0.5)
                return timed(runs["split"])
            finally:
                for s in spinners:
                    s.kill()
                    s.wait()
        report(alternate({"split, as the host is": lambda: timed(runs["split"]),
                          "split, beside idle spinners": beside_spinners}, args.rounds))
    else:
        booted = HALT_POLL.read_text().strip()
        try:
            for name in ("split", "one"):
                def polled(ns, name=name):
                    HALT_POLL.write_text(str(ns))
                    return timed(runs[name])
                report(alternate({f"{name}, halt poll {booted} ns (booted)": lambda: polled(booted),
                                  f"{name}, halt poll {args.ns} ns": lambda: polled(args.ns)}, args.rounds))
        finally:
            HALT_POLL.write_text(booted)
        print("halt poll put back to", HALT_POLL.read_text().strip())
    print("load after", Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
