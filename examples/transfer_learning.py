"""Transfer learning: a trained tf_alexnet model as a frozen feature extractor under a new head.

    python examples/transfer_learning.py --weights runs/quick/best.keras \
        --image-folder path/to/folder [--epochs 20]

`--image-folder` holds one subfolder of images per class (any size, gray or RGB); with
network access, `--dataset mnist` (any TFDS image-classification dataset) works too.
The input size, channels, variant and width come from the weights file.
"""

from __future__ import annotations

import argparse
import sys

import keras

from tf_alexnet import AlexNet, load_model
from tf_alexnet.data import make_datasets
from tf_alexnet.errors import UserError
from tf_alexnet.pipeline import PipelineSpec
from tf_alexnet.specs import DataSpec
from tf_alexnet.variants import WIDTH_MULTIPLE, Conv, get_variant


def variant_of(model: keras.Model) -> str:
    names = {layer.name for layer in model.layers}
    return "paper" if "norm1" in names else "mini" if "conv1_bn" in names else "d2l"


def width_of(model: keras.Model, variant: str) -> float:
    """A `width` that gives `model`'s conv filter counts (the features need nothing else).

    Scaled counts are rounded to multiples of `WIDTH_MULTIPLE`, so each count allows an
    interval of widths; any width in all of them builds the same layers.
    """
    convs = [spec for spec in get_variant(variant).features if isinstance(spec, Conv)]
    filters = [model.get_layer(conv.name).filters for conv in convs]
    half = WIDTH_MULTIPLE / 2
    # The smallest count also takes every width below it.
    low = max(
        (count - half) / conv.filters if count > WIDTH_MULTIPLE else 0.0
        for count, conv in zip(filters, convs, strict=True)
    )
    high = min((count + half) / conv.filters for count, conv in zip(filters, convs, strict=True))
    width = (low + high) / 2
    scaled = get_variant(variant).scaled(width).features
    if [spec.filters for spec in scaled if isinstance(spec, Conv)] != filters:
        raise UserError(f"The conv layers of {model.name!r} fit no width of {variant!r}: {filters}")
    return width


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a tf_alexnet .keras file")
    parser.add_argument("--image-folder", help="one subfolder of images per class")
    parser.add_argument("--dataset", default="mnist", help="TFDS dataset when no folder is given")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)

    try:
        trained = load_model(args.weights, compile=False)
        input_shape = trained.input_shape[1:]
        data = DataSpec(
            dataset=args.dataset, image_folder=args.image_folder, test_fraction=0.2, seed=args.seed
        )
        pipeline = PipelineSpec(
            image_size=input_shape[:2], channels=input_shape[2], batch_size=args.batch_size
        )
        datasets = make_datasets(data, pipeline)
        variant = variant_of(trained)
        width = width_of(trained, variant)
    except UserError as err:
        print(f"transfer_learning: error: {err}", file=sys.stderr)
        return 2

    # The convolutional features of the trained model, frozen.
    features = AlexNet(
        include_top=False,
        pooling="avg",
        input_shape=input_shape,
        variant=variant,
        width=width,
        weights=args.weights,
    )
    features.trainable = False
    inputs = keras.Input(input_shape)
    x = features(inputs, training=False)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(len(datasets.class_names), name="new_head")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    model.fit(
        datasets.train,
        validation_data=datasets.validation,
        epochs=args.epochs,
        shuffle=False,  # the dataset shuffles itself (Keras warns that it ignores shuffle=True)
        verbose=2,
    )
    _, accuracy = model.evaluate(datasets.test, verbose=0)
    classes = ", ".join(datasets.class_names)
    print(f"test accuracy {accuracy:.4f} on {datasets.num_test} images (classes: {classes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
