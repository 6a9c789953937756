"""Optimizers whose every number is data: what may differ between nets that share one compiled program.

An `OptimizerSpec` holds what shapes the program (the update rule, the schedule's form, its length);
`alpha` and `momentum` live in the optimizer state (`optax.inject_hyperparams`), so nets whose
specs are equal can train in one program with their own hyperparameters (`jaxcnn.sweep`), and
one compiled epoch serves any alpha (`jaxcnn.train_epoch`).

"sgd" is the toolbox's `cnnapplygrads.m`, w <- w - alpha * dw, exactly: with momentum 0 the trace
adds 0 to each gradient, which changes no bit. "momentum" is the same rule with a momentum > 0.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine", "exponential")
EXPONENTIAL_DECAY_RATE = 0.1          # alpha falls to 0.1·alpha over the run


def check_hyperparameters(name: str, momentum: float, key: str = "train") -> None:
    """Refuse settings that would not do what they say (raises ValueError naming the key)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"{key}.optimizer: unknown optimizer {name!r} ({', '.join(OPTIMIZERS)})")
    if not 0 <= momentum < 1:
        raise ValueError(f"{key}.momentum: must be in [0, 1), got {momentum}")
    if name == "momentum" and momentum == 0:
        raise ValueError(f"{key}.momentum: optimizer 'momentum' needs a momentum > 0 (0 is plain 'sgd'), e.g. 0.9")
    if name == "adam" and momentum != 0:
        raise ValueError(f"{key}.momentum: not used by optimizer 'adam' (got {momentum}); leave it at 0")


def schedule_factor(schedule: str, count, decay_steps: int, dtype):
    """The multiplier of alpha at step `count` (0-based): 1, a cosine to 0, or 0.1^(count/decay_steps)."""
    fraction = jnp.minimum(count, decay_steps) / decay_steps
    if schedule == "cosine":
        factor = 0.5 * (1 + jnp.cos(jnp.pi * fraction))
    elif schedule == "exponential":
        factor = EXPONENTIAL_DECAY_RATE ** (count / decay_steps)
    else:
        raise ValueError(f"train.schedule: unknown schedule {schedule!r} ({', '.join(SCHEDULES)})")
    return jnp.asarray(factor, dtype)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """The static part of an optimizer. Equal specs give the same program."""

    rule: str = "sgd"                 # "sgd" (with momentum, possibly 0) or "adam"
    schedule: str = "constant"
    decay_steps: int = 1

    def transformation(self) -> optax.GradientTransformation:
        """The optax transformation; its state holds `learning_rate` (and `momentum` for sgd) as data."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule: unknown schedule {self.schedule!r} ({', '.join(SCHEDULES)})")
        if self.rule == "sgd":
            return optax.inject_hyperparams(_sgd, static_args=("schedule", "decay_steps"))(
                learning_rate=1.0, momentum=0.0, schedule=self.schedule, decay_steps=self.decay_steps)
        if self.rule == "adam":
            return optax.inject_hyperparams(_adam, static_args=("schedule", "decay_steps"))(
                learning_rate=1.0, schedule=self.schedule, decay_steps=self.decay_steps)
        raise ValueError(f"unknown update rule {self.rule!r} (sgd, adam)")


def _step_size(learning_rate, schedule: str, decay_steps: int):
    """-alpha, or -alpha·factor(step) as a schedule transformation."""
    if schedule == "constant":
        return optax.scale(-learning_rate)
    return optax.scale_by_schedule(
        lambda count: -learning_rate * schedule_factor(schedule, count, decay_steps, jnp.asarray(learning_rate).dtype))


def _sgd(learning_rate, momentum, schedule, decay_steps):
    return optax.chain(optax.trace(decay=momentum), _step_size(learning_rate, schedule, decay_steps))


def _adam(learning_rate, schedule, decay_steps):
    return optax.chain(optax.scale_by_adam(), _step_size(learning_rate, schedule, decay_steps))


def spec_for(name: str, schedule: str = "constant", decay_steps: int = 1) -> OptimizerSpec:
    """The spec of a configured optimizer; `decay_steps` only matters for decaying schedules."""
    if name not in OPTIMIZERS:
        raise ValueError(f"train.optimizer: unknown optimizer {name!r} ({', '.join(OPTIMIZERS)})")
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule: unknown schedule {schedule!r} ({', '.join(SCHEDULES)})")
    return OptimizerSpec("adam" if name == "adam" else "sgd", schedule,
                         1 if schedule == "constant" else max(int(decay_steps), 1))


def init_state(spec: OptimizerSpec, net, alpha: float, momentum: float = 0.0):
    """The optimizer state of `net` with these hyperparameters, in the net's dtype (a float32 net stays
    float32 even when JAX's x64 mode is on)."""
    state = spec.transformation().init(net)
    dtype = jax.tree.leaves(net)[0].dtype
    state.hyperparams["learning_rate"] = jnp.asarray(alpha, dtype)
    if "momentum" in state.hyperparams:
        state.hyperparams["momentum"] = jnp.asarray(momentum, dtype)
    return state


def make_optimizer(name: str = "sgd", alpha: float = 1.0, momentum: float = 0.0, schedule: str = "constant",
                   decay_steps: int = 0) -> optax.GradientTransformation:
    """A configured optimizer: its `init(net)` holds `alpha` and `momentum` as data in the net's dtype.

    `schedule` "cosine" or "exponential" decays alpha over `decay_steps` steps. The update function
    is `spec_for(name, schedule, decay_steps).transformation()`'s, shared by every alpha and momentum."""
    check_hyperparameters(name, momentum)
    spec = spec_for(name, schedule, decay_steps)
    return optax.GradientTransformation(lambda net: init_state(spec, net, alpha, momentum),
                                        spec.transformation().update)
