"""Where and how a training step runs: distribution strategy, mixed precision, XLA and determinism.

How `tf_fracture.train.loop.train` uses these, in this order:

1. ``strategy = strategy_for(experiment.train)`` FIRST, before anything touches TensorFlow's runtime
   (loading a dataset, building a model, listing devices, `enable_determinism`): a
   ``MultiWorkerMirroredStrategy`` configures collective ops and starts its gRPC server, which TensorFlow
   only allows at program start-up. (Mirrored and the default strategy do not care; one order for all.)
2. ``enable_determinism(seed)`` (or ``keras.utils.set_random_seed(seed)`` alone when not deterministic).
3. ``with precision_scope(train.mixed_precision), strategy.scope():`` build the model AND the optimiser
   and compile (``jit_compile=train.xla``). The model's layers keep the policy they were built under, so
   the scope may close before ``fit``; ``compile`` wraps the optimiser in a ``LossScaleOptimizer`` itself
   when the model was built under ``mixed_float16`` (Keras 3's ``auto_scale_loss=True``). The logit
   layer is float32 under every policy.
4. Batches: ``data.batch_size`` is the GLOBAL batch. Pass the un-distributed ``tf.data.Dataset`` to
   ``fit``: Keras distributes it (``strategy.experimental_distribute_dataset``), each of the
   ``strategy.num_replicas_in_sync`` replicas gets ``batch_size / replicas`` examples, the gradients
   are summed over replicas of per-replica losses scaled by ``1 / replicas``, so one step equals a
   single-device step on the global batch -- except BatchNorm, whose batch statistics are per replica
   (Keras 3's ``synchronized=False``; see `check_global_batch`). The learning rate is not rescaled.
   Put `SyncMovingStatistics` FIRST in the callbacks when ``num_replicas_in_sync > 1``: Keras 3 keeps
   one copy of the BatchNorm moving statistics per replica, which drift apart; it averages them at
   each epoch end, before a validation callback predicts or the best model is saved.
5. Multi-worker only: ``with keras_multi_worker_fixes(): model.fit(...)`` (Keras 3.15's ``fit`` fails
   under ``MultiWorkerMirroredStrategy`` without it; see `keras_multi_worker_fixes` for the two bugs),
   and write only where `is_chief` says so: every worker runs every callback, and Keras 3 callbacks
   (ModelCheckpoint, BackupAndRestore, CSVLogger, TensorBoard) have no notion of a chief. Give each
   non-chief worker its own folder (`worker_dir`) for its backup and logs; ``model.keras``,
   ``history.csv`` and ``summary.json`` come from the chief. Saving needs no collective op in Keras 3
   (it reads each variable's local copy), so non-chief workers can simply skip it.

Example:
    >>> strategy = strategy_for(experiment.train)        # before any other TensorFlow call
    >>> enable_determinism(experiment.train.seed)
    >>> with precision_scope(experiment.train.mixed_precision), strategy.scope():
    ...     model = build_model(experiment)
    ...     model.compile(optimizer, loss, metrics, jit_compile=experiment.train.xla)
    >>> with keras_multi_worker_fixes():                   # a no-op outside multi-worker training
    ...     model.fit(dataset_with_global_batches, callbacks=[SyncMovingStatistics(), ...])
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from tf_fracture.validation import check_choice, check_int

DISTRIBUTE_MODES = ("auto", "none", "mirrored", "multi_worker")
# None keeps float32; the mixed policies compute in 16 bits and keep float32 variables.
PRECISION_POLICIES = {None: "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}

_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
)


def enable_determinism(seed: int) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras and makes TensorFlow's ops deterministic.

    Same seed, same data and same hardware give the same weights (on the CPU; on a GPU too, a little
    slower). Ops without a deterministic kernel then raise instead of silently varying.
    """
    check_int("seed", seed, minimum=0)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def precision_scope(mode: str | None):
    """Within the block, new layers compute in ``mode``'s precision; the previous policy always returns.

    Args:
        mode: None (float32), ``"bf16"`` (``mixed_bfloat16``: GPUs from Ampere, TPUs, recent CPUs) or
            ``"fp16"`` (``mixed_float16``: older GPUs; ``compile`` adds dynamic loss scaling).

    Yields:
        The Keras ``DTypePolicy`` in force.

    Example:
        >>> with precision_scope("bf16"):
        ...     model = build_classifier("mobilenetv3", weights=None)
        >>> model.output.dtype   # the logit layer is pinned to float32
        'float32'
    """
    check_choice("mixed_precision", mode, tuple(PRECISION_POLICIES))
    previous_policy, previous_floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy(PRECISION_POLICIES[mode])
    try:
        yield keras.config.dtype_policy()
    finally:
        keras.config.set_floatx(previous_floatx)
        keras.config.set_dtype_policy(previous_policy)


def strategy_for(settings, *, devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for a `TrainConfig` (its ``distribute`` field) or a mode name.

    - ``"auto"``: ``MirroredStrategy`` over every GPU when there are several, else the default strategy.
    - ``"none"``: the default strategy (one device).
    - ``"mirrored"``: ``MirroredStrategy`` over ``devices`` (default: every GPU, or the CPU without one).
    - ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG`` (checked
      first: a missing or malformed ``TF_CONFIG`` raises a ``ValueError`` that shows one). Call this
      before anything else uses TensorFlow.

    The batch size stays the global one (see the module docstring and `check_global_batch`).
    """
    mode = settings if isinstance(settings, str) else getattr(settings, "distribute", settings)
    check_choice("distribute", mode, DISTRIBUTE_MODES)
    if devices is not None and mode != "mirrored":
        raise ValueError(f"`devices` only applies to distribute='mirrored', not {mode!r}.")
    if mode == "multi_worker":
        cluster = read_tf_config()
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as error:
            raise RuntimeError(
                f"Could not start MultiWorkerMirroredStrategy ({error}). It must be created before anything "
                "else uses TensorFlow in this process: call strategy_for() first."
            ) from error
        if strategy.num_replicas_in_sync < len(cluster["worker"]) + len(cluster.get("chief", [])):
            raise RuntimeError(f"MultiWorkerMirroredStrategy did not join the cluster in TF_CONFIG: {cluster}.")
        return strategy
    if mode == "mirrored":
        return tf.distribute.MirroredStrategy(devices=None if devices is None else list(devices))
    if mode == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def read_tf_config(environ: Mapping[str, str] | None = None) -> dict:
    """The cluster of ``TF_CONFIG``, checked: ``{"worker": [...], "chief": [...]?}``; raises ``ValueError``."""
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        raise ValueError(
            "distribute='multi_worker' needs the TF_CONFIG environment variable on every machine, with the "
            f"same cluster and each machine's own task index, e.g. {_TF_CONFIG_EXAMPLE}."
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); expected e.g. {_TF_CONFIG_EXAMPLE}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG needs a 'cluster' and a 'task' object, got {raw!r}; e.g. {_TF_CONFIG_EXAMPLE}.")
    unknown = sorted(set(cluster) - {"worker", "chief"})
    if unknown:
        raise ValueError(f"TF_CONFIG's cluster may only name 'worker' and 'chief' jobs, not {unknown}.")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise ValueError(f"TF_CONFIG's cluster[{job!r}] must be a list of 'host:port' strings, got {addresses!r}.")
    if not cluster.get("worker") and not cluster.get("chief"):
        raise ValueError("TF_CONFIG's cluster lists no worker.")
    if len(cluster.get("chief", [])) > 1:
        raise ValueError("TF_CONFIG's cluster may have one chief at most.")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(
            f"TF_CONFIG's task {task!r} must name a job of the cluster ({sorted(cluster)}) and an index within it."
        )
    return cluster


def is_multi_worker(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether ``strategy`` (default: the current one) spans more than one worker process."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run folder: always, except on the non-chief workers of a cluster.

    The chief is the task of type ``"chief"``, or worker 0 in a cluster without one (TensorFlow's rule).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs
    )


def worker_dir(run_dir, strategy: tf.distribute.Strategy | None = None) -> Path:
    """``run_dir`` for the chief; ``run_dir/workers/<type>-<index>`` for any other worker of a cluster.

    Every worker runs every callback: point a non-chief worker's backup and logs here, so that workers
    sharing a file system never write the same file.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return Path(run_dir)
    resolver = strategy.cluster_resolver
    return Path(run_dir) / "workers" / f"{resolver.task_type}-{resolver.task_id}"


def check_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """The per-replica batch of global batch ``batch_size``; ``ValueError`` unless the replicas divide it.

    An even split keeps every step equal to a single-device step on the same global batch (up to the
    per-replica BatchNorm statistics, which cover ``batch_size / replicas`` examples each).
    """
    check_int("batch_size", batch_size)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"The global batch size {batch_size} does not split evenly over {replicas} replicas: set "
            f"data.batch_size to a multiple of {replicas} (each replica then gets batch_size / {replicas})."
        )
    return batch_size // replicas


class SyncMovingStatistics(keras.callbacks.Callback):
    """Averages the replicas' BatchNorm moving statistics at the end of every epoch (put it first).

    Keras 3 creates them with aggregation ``"none"``: under ``MirroredStrategy`` and
    ``MultiWorkerMirroredStrategy`` each replica updates its own copy from its own share of the batches,
    the copies drift apart, and a saved model carries replica 0's (Keras 2 read them as the replicas'
    mean). This callback all-reduces every floating-point non-trainable variable of the model to the
    replicas' mean with the strategy's own collective ops, so that validation, the best model and every
    worker see the same statistics. A no-op under a one-replica strategy.
    """

    def on_epoch_end(self, epoch, logs=None):
        strategy = self.model.distribute_strategy
        if strategy.num_replicas_in_sync > 1:
            sync_moving_statistics(self.model, strategy)


def sync_moving_statistics(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Sets each floating-point non-trainable variable of ``model`` to its mean over all replicas."""
    variables = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
    if not variables:
        return

    def replica_fn():
        means = tf.distribute.get_replica_context().all_reduce("MEAN", [tf.identity(v.value) for v in variables])
        for variable, mean in zip(variables, means, strict=True):
            variable.value.assign(mean)  # aggregation "none": each replica writes its own copy

    tf.function(lambda: strategy.run(replica_fn))()


@contextlib.contextmanager
def keras_multi_worker_fixes():
    """Within the block, Keras 3.15's ``fit``/``evaluate`` work under ``MultiWorkerMirroredStrategy``.

    A no-op outside multi-worker training. Keras 3 supports ``MirroredStrategy`` but its TensorFlow
    trainer has two bugs that only show with more than one worker (keras-team/keras#20585, open;
    tensorflow/tensorflow#72388), both in ``keras/src/backend/tensorflow/trainer.py``:

    1. ``TensorFlowTrainer._maybe_symbolic_build`` (called by ``fit``/``evaluate`` for every model built
       under a strategy scope) takes one distributed batch and calls ``strategy.reduce("MEAN", batch,
       axis=None)`` on the WHOLE ``(x, y)`` nest. A single-worker strategy passes a nest through
       untouched (``reduce_non_distributed_value`` returns a MEAN of a non-distributed value as is), but
       ``CollectiveAllReduceExtended._reduce_to`` with several workers hands it to
       ``CrossDeviceOps.reduce``, which converts the tuple of ``PerReplica`` to a tensor: ``ValueError:
       Attempt to convert a value (PerReplica:...) with an unsupported type``. The batch only gives
       shapes and dtypes to ``_symbolic_build``: the fix takes each leaf's first local replica.
    2. ``reduce_per_replica`` (the step's logs, ``reduction="auto"`` -> ``"mean"``, hard-coded: the
       trainer ignores ``distribute_reduction_method``) calls ``strategy.reduce("MEAN", v, axis=0)``
       under a multi-worker strategy, i.e. a mean over axis 0 OF EACH scalar metric: ``ValueError:
       Invalid reduction dimension 0 for input with 0 dimensions``. The single-worker branch means the
       replicas' values (``tf.reduce_mean(local_results, axis=0)``); the fix does the same across the
       cluster, ``strategy.reduce("MEAN", v, axis=None)``.

    Everything else is TensorFlow's and Keras' own: the variables are ``MirroredVariable``s, the
    gradients are all-reduced by the strategy's collective ops, the epoch's metrics are read from
    their ``SyncOnRead`` variables (summed over the cluster). Outside the block Keras is unchanged.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    cls = tf_trainer.TensorFlowTrainer
    original_build, original_reduce = cls._maybe_symbolic_build, tf_trainer.reduce_per_replica

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or not is_multi_worker(self._distribute_strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(_first_local, next(it))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    cls._maybe_symbolic_build, tf_trainer.reduce_per_replica = maybe_symbolic_build, reduce_per_replica
    try:
        yield
    finally:
        cls._maybe_symbolic_build, tf_trainer.reduce_per_replica = original_build, original_reduce


def _first_local(value):
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value
