"""`FusedBatchNormalization`: Keras's batch norm, computed by TensorFlow's fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_alexnet import AlexNet
from tf_alexnet import model as model_module
from tf_alexnet.layers import FusedBatchNormalization
from tf_alexnet.strategy import make_strategy

POLICIES = {"float32": 1e-5, "mixed_bfloat16": 1e-2, "bfloat16": 5e-2, "float16": 1e-2}
"""Dtype policy -> the relative tolerance of float results against Keras's layer. Under the
plain "bfloat16" and "float16" policies the weights themselves are 16-bit."""


def _twins(shape, policy, **kwargs):
    """Keras's layer and ours, built alike, with the same non-trivial weights."""
    twins = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = cls(momentum=0.9, dtype=policy, **kwargs)
        layer.build(shape)
        channels = shape[layer.axis if isinstance(layer.axis, int) else layer.axis[0]]
        if layer.scale:
            layer.gamma.assign(np.linspace(0.5, 2.0, channels))
        if layer.center:
            layer.beta.assign(np.linspace(-1.0, 1.0, channels))
        twins.append(layer)
    return twins


def _train_step(layer, images):
    """Outputs and gradients (inputs, then the layer's trainable weights) of one training call."""
    images = tf.constant(images)
    weights = np.arange(images.shape.num_elements(), dtype="float32").reshape(images.shape)
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = layer(images, training=True)
        loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * weights / weights.size)
    gradients = tape.gradient(loss, [images, *(w.value for w in layer.trainable_weights)])
    return np.asarray(tf.cast(outputs, tf.float32)), [np.asarray(g) for g in gradients]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape", [(2, 2, 2, 3), (8, 7, 7, 16)])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_batch_norm_matches_keras(policy, shape, affine):
    """Outputs, gradients, moving statistics over three steps, and inference. The smallest
    shape (8 values per channel) tells the batch's biased variance from the unbiased one the
    kernel returns: unadjusted, the moving variance was 1/7 too high."""
    keras_layer, fused = _twins(shape, policy, scale=affine, center=affine)
    assert fused.fuses(tf.zeros(shape))
    rng = np.random.default_rng(0)
    for _ in range(3):
        images = rng.normal(2.0, 3.0, shape).astype("float32")
        expected, expected_gradients = _train_step(keras_layer, images)
        got, gradients = _train_step(fused, images)
        np.testing.assert_allclose(got, expected, rtol=POLICIES[policy], atol=1e-5)
        for grad, expected_grad in zip(gradients, expected_gradients, strict=True):
            np.testing.assert_allclose(grad, expected_grad, rtol=POLICIES[policy], atol=1e-4)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(
            getattr(fused, name).numpy(), getattr(keras_layer, name).numpy(), rtol=1e-5
        )
    assert not np.allclose(fused.moving_variance.numpy(), 1.0)  # the statistics moved
    images = rng.normal(2.0, 3.0, shape).astype("float32")
    inferred = fused(images, training=False)
    assert inferred.dtype == keras_layer(images).dtype == fused.compute_dtype
    np.testing.assert_allclose(
        np.asarray(tf.cast(inferred, tf.float32)),
        np.asarray(tf.cast(keras_layer(images, training=False), tf.float32)),
        rtol=POLICIES[policy],
        atol=1e-5,
    )


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_runs_one_fused_op(training):
    """The speed-up itself: one `FusedBatchNormV3` in place of Keras's moments and casts."""
    layer = FusedBatchNormalization(dtype="mixed_bfloat16")
    layer.build((4, 6, 6, 8))
    graph = (
        tf.function(lambda x: layer(x, training=training))
        .get_concrete_function(tf.TensorSpec((4, 6, 6, 8), tf.float32))
        .graph
    )
    op_types = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in op_types
    assert not op_types & {"Mean", "SquaredDifference", "Rsqrt"}, op_types


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((2, 3, 4, 4), {"axis": 1}),  # channels first
        ((6, 5), {}),  # not an image
        ((2, 3, 3, 4), {"epsilon": 1e-6}),  # below the kernel's epsilon floor
        ((2, 3, 3, 4), {"renorm": True}),
    ],
)
def test_fused_batch_norm_runs_keras_code_where_the_kernel_does_not_apply(shape, kwargs):
    keras_layer, fused = _twins(shape, "float32", **kwargs)
    assert not fused.fuses(tf.zeros(shape))
    images = np.random.default_rng(1).normal(size=shape).astype("float32")
    for training in (True, False):
        np.testing.assert_allclose(
            fused(images, training=training), keras_layer(images, training=training), rtol=1e-5
        )


def test_fused_batch_norm_trains_under_xla():
    model = keras.Sequential(
        [keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3), FusedBatchNormalization()]
    )
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    images = np.random.default_rng(2).normal(size=(8, 6, 6, 3)).astype("float32")
    loss = model.fit(images, np.zeros((8, 4, 4, 4)), epochs=2, verbose=0).history["loss"]
    assert np.isfinite(loss).all() and loss[1] < loss[0]
    assert not np.allclose(model.layers[-1].moving_mean.numpy(), 0.0)


def test_mini_normalizes_with_the_fused_layer():
    model = AlexNet(input_shape=(28, 28, 1), variant="mini")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert [layer.name for layer in norms] == [f"conv{i}_bn" for i in range(1, 6)]
    assert all(type(layer) is FusedBatchNormalization for layer in norms)


def test_models_saved_with_keras_batch_norm_still_seed_and_load(tmp_path, monkeypatch):
    """`.keras` files written before the fused layer (Keras's `BatchNormalization`) load as they
    were saved and seed today's mini with the same results."""
    with monkeypatch.context() as patch:
        patch.setattr(model_module, "FusedBatchNormalization", keras.layers.BatchNormalization)
        old = AlexNet(input_shape=(28, 28, 1), variant="mini")
    assert type(old.get_layer("conv1_bn")) is keras.layers.BatchNormalization
    images = np.random.default_rng(3).random((4, 28, 28, 1), np.float32)
    old.compile(optimizer="sgd", loss="categorical_crossentropy")
    old.fit(images, np.eye(10)[[1, 2, 3, 4]], epochs=1, verbose=0)  # move the statistics
    path = tmp_path / "old.keras"
    old.save(path)
    expected = old(images, training=False)
    np.testing.assert_allclose(keras.models.load_model(path)(images), expected, atol=1e-6)
    seeded = AlexNet(input_shape=(28, 28, 1), variant="mini", weights=path)
    assert type(seeded.get_layer("conv1_bn")) is FusedBatchNormalization
    np.testing.assert_allclose(seeded(images, training=False), expected, rtol=1e-5, atol=1e-5)


def _replica_values(variable):
    """Each replica's copy of a mirrored Keras variable."""
    return [v.numpy() for v in variable.value.values]


@pytest.mark.parametrize("share_sizes", [(3, 5), (0, 4)])
def test_fused_batch_norm_moving_statistics_follow_the_global_batch(share_sizes):
    """Under MirroredStrategy each replica normalizes its own share, but the moving statistics
    are the global batch's (biased) moments on every replica, even when one share is empty.
    Keras's layer moved each replica's copy by its own share: afterwards the copies differed."""
    strategy = make_strategy("mirrored")  # over the 2 logical CPUs (conftest)
    rng = np.random.default_rng(4)
    shares = [
        rng.normal(5.0 * i, 1.0 + i, (n, 3, 3, 2)).astype("float32")
        for i, n in enumerate(share_sizes)
    ]
    with strategy.scope():
        layer = FusedBatchNormalization(momentum=0.0)  # the moving statistics = the last batch's
        layer.build((None, 3, 3, 2))
    step = tf.function(lambda images: layer(images, training=True))
    strategy.run(
        step,
        args=(
            strategy.experimental_distribute_values_from_function(
                lambda context: tf.constant(shares[context.replica_id_in_sync_group])
            ),
        ),
    )
    whole = np.concatenate(shares)
    for replicas, expected in (
        (_replica_values(layer.moving_mean), whole.mean(axis=(0, 1, 2))),
        (_replica_values(layer.moving_variance), whole.var(axis=(0, 1, 2))),
    ):
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1])
        np.testing.assert_allclose(replicas[0], expected, rtol=1e-5)


def test_mirrored_training_predicts_alike_on_every_replica():
    """After `fit` under MirroredStrategy, an image gets the same prediction whichever replica
    computes it (with per-replica moving statistics, these differed by about 2.5)."""
    strategy = make_strategy("mirrored")  # over the 2 logical CPUs (conftest)
    rng = np.random.default_rng(5)
    images = rng.normal(size=(8, 4, 4, 3)).astype("float32")
    images[4:] += 5.0  # the second replica's share differs from the first's
    with strategy.scope():
        model = keras.Sequential([keras.Input((4, 4, 3)), FusedBatchNormalization(momentum=0.5)])
        model.compile(optimizer="sgd", loss="mse")
    model.fit(images, rng.normal(size=images.shape), batch_size=8, verbose=0, shuffle=False)
    twice = np.concatenate([images[:4], images[:4]])  # one copy on each replica
    with strategy.scope():
        predictions = model.predict(twice, batch_size=8, verbose=0)
    np.testing.assert_allclose(predictions[:4], predictions[4:], rtol=0, atol=1e-6)
    assert not np.allclose(model.layers[0].moving_mean.numpy(), 0.0)


@pytest.mark.parametrize("policy", ["bfloat16", "float16"])
def test_mini_trains_and_predicts_under_plain_16_bit_policies(policy):
    """Under a plain 16-bit policy the batch norm's weights are 16-bit too, while the fused
    kernel takes float32 ones; the stranger who set "bfloat16" got "No OpKernel was
    registered to support Op 'FusedBatchNormV3'" from `predict`."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = AlexNet(input_shape=(16, 16, 3), variant="mini", width=0.25)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        images = np.random.default_rng(0).random((8, 16, 16, 3), "float32")
        history = model.fit(images, np.arange(8) % 10, epochs=2, batch_size=4, verbose=0)
        predictions = model.predict(images, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(history.history["loss"]))
    assert predictions.shape == (8, 10) and np.all(np.isfinite(predictions))
    assert model.get_layer("conv1_bn").moving_mean.dtype == policy
