"""Processes for tests/test_distribute.py: each needs a fresh TensorFlow (logical devices, collective ops).

python tests/distribute_scripts.py mirrored OUT.npz
TF_CONFIG=... python tests/distribute_scripts.py multi_worker OUT.npz [--no-fixes]
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

SIZE, GLOBAL_BATCH = 64, 8
STEPS = int(os.environ.get("DIST_STEPS", "3"))
LR = float(os.environ.get("DIST_LR", "0.01"))


def data(steps=STEPS):
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 255, (steps * GLOBAL_BATCH, SIZE, SIZE, 1)).astype("float32")
    y = (rng.uniform(size=steps * GLOBAL_BATCH) < 0.5).astype("float32")
    return x, y


def tiny_classifier():
    from tf_fracture.models import build_classifier

    return build_classifier("mobilenetv3", "small", weights=None, input_size=SIZE)


def mirrored(out):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from tf_fracture.train.runtime import check_global_batch, enable_determinism, strategy_for, sync_moving_statistics

    strategy = strategy_for("mirrored", devices=["/cpu:0", "/cpu:1"])
    enable_determinism(0)
    per_replica = check_global_batch(GLOBAL_BATCH, strategy)
    x, y = data()
    with strategy.scope():
        model = tiny_classifier()
        model.compile(keras.optimizers.SGD(LR, momentum=0.9), keras.losses.BinaryCrossentropy(from_logits=True))
    initial = model.get_weights()
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH), epochs=1, verbose=0, shuffle=False)
    replicas = [[v.value.values[r].numpy() for v in model.non_trainable_variables] for r in range(2)]
    sync_moving_statistics(model, strategy)
    synced = [[v.value.values[r].numpy() for v in model.non_trainable_variables] for r in range(2)]

    # Reference on one device: what MirroredStrategy should compute. Each replica runs the forward pass on
    # its half of the global batch (BatchNorm statistics of that half) and updates its own copy of the
    # BatchNorm moving statistics (Keras 3 creates them with aggregation "none"); the gradient is the
    # mean of the two halves' gradients (per-replica mean loss scaled by 1/2, summed across replicas).
    reference = tiny_classifier()
    reference.set_weights(initial)
    optimizer = keras.optimizers.SGD(LR, momentum=0.9)
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
    moving = [[v.numpy() for v in reference.non_trainable_variables] for _ in range(2)]
    for step in range(STEPS):
        grads = []
        for r in range(2):
            lo = step * GLOBAL_BATCH + r * per_replica
            for v, value in zip(reference.non_trainable_variables, moving[r], strict=True):
                v.assign(value)
            with tf.GradientTape() as tape:
                loss = loss_fn(y[lo : lo + per_replica], reference(x[lo : lo + per_replica], training=True)[:, 0])
            grads.append(tape.gradient(loss, reference.trainable_variables))
            moving[r] = [v.numpy() for v in reference.non_trainable_variables]
        optimizer.apply([(a + b) / 2 for a, b in zip(*grads, strict=True)], reference.trainable_variables)

    # The wrong semantics, for contrast: one device, BatchNorm over the whole global batch.
    whole = tiny_classifier()
    whole.set_weights(initial)
    whole.compile(keras.optimizers.SGD(LR, momentum=0.9), keras.losses.BinaryCrossentropy(from_logits=True))
    whole.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, verbose=0, shuffle=False)

    arrays = {"replicas": np.array(strategy.num_replicas_in_sync)}
    for name, values in [
        ("initial", [w for w, v in zip(initial, model.weights, strict=True) if v.trainable]),
        ("mirrored", [v.numpy() for v in model.trainable_variables]),
        ("reference", [v.numpy() for v in reference.trainable_variables]),
        ("whole", [v.numpy() for v in whole.trainable_variables]),
        ("mirrored_moving0", replicas[0]),
        ("mirrored_moving1", replicas[1]),
        ("reference_moving0", moving[0]),
        ("reference_moving1", moving[1]),
        ("synced0", synced[0]),
        ("synced1", synced[1]),
    ]:
        arrays.update({f"{name}/{i}": a for i, a in enumerate(values)})
    np.savez(out, **arrays)


def multi_worker(out, fixes=True):
    import contextlib

    from tf_fracture.train.runtime import (
        SyncMovingStatistics,
        enable_determinism,
        is_chief,
        keras_multi_worker_fixes,
        strategy_for,
        worker_dir,
    )

    strategy = strategy_for("multi_worker")  # first: collective ops are configured at start-up
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    # A different seed per worker: agreement afterwards needs the strategy's broadcast of the initial
    # values and its all-reduce of the gradients, not identical processes.
    enable_determinism(100 + task)
    import keras

    x, y = data(steps=4)
    with strategy.scope():
        model = tiny_classifier()
        model.compile(
            keras.optimizers.SGD(LR, momentum=0.9),
            keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[keras.metrics.AUC(from_logits=True, name="auroc")],
        )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    with keras_multi_worker_fixes() if fixes else contextlib.nullcontext():
        history = model.fit(dataset, validation_data=dataset, epochs=2, verbose=0, shuffle=False)
        moving_before_sync = [v.numpy() for v in model.non_trainable_variables]
        model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[SyncMovingStatistics()])
        if is_chief(strategy):  # only the chief saves: a save that needed the other workers would hang here
            model.save(out.removesuffix(".npz") + ".keras")
        # A validation callback's model.predict over a set that is no multiple of the global batch.
        predicted = model.predict(tf.data.Dataset.from_tensor_slices(x[:30]).batch(GLOBAL_BATCH), verbose=0)
    arrays = {
        "predicted": predicted,
        "direct": model(x[:30], training=False).numpy(),
        "replicas": np.array(strategy.num_replicas_in_sync),
        "chief": np.array(is_chief(strategy)),
        "worker_dir": np.array(str(worker_dir("RUN", strategy))),
        "history": np.array(json.dumps(history.history)),
    }
    arrays.update({f"trainable/{i}": v.numpy() for i, v in enumerate(model.trainable_variables)})
    arrays.update({f"moving/{i}": v for i, v in enumerate(moving_before_sync)})
    arrays.update({f"synced/{i}": v.numpy() for i, v in enumerate(model.non_trainable_variables)})
    np.savez(out, **arrays)


if __name__ == "__main__":
    if sys.argv[1] == "mirrored":
        mirrored(sys.argv[2])
    else:
        multi_worker(sys.argv[2], fixes="--no-fixes" not in sys.argv)
