"""The AlexNet builder used as a stranger's Keras code uses it: arguments that build a model
which cannot work are refused when it is built."""

import keras
import numpy as np
import pytest

from tf_alexnet import AlexNet


@pytest.mark.parametrize(
    "activation", ["softmax", keras.activations.softmax, keras.layers.Softmax()]
)
def test_one_class_softmax_is_refused(activation):
    """`classes=1, classifier_activation="softmax"` built a model that answered 1.0 for every
    image (a softmax over one score) and that no loss could train: the gradient is zero."""
    with pytest.raises(
        ValueError, match=r"one class outputs 1\.0 for every image.* Received: classes=1, "
    ):
        AlexNet(
            input_shape=(28, 28, 1), variant="mini", classes=1, classifier_activation=activation
        )


@pytest.mark.parametrize("activation", [None, "sigmoid"])
def test_one_class_logit_or_sigmoid_still_builds(activation):
    model = AlexNet(
        input_shape=(28, 28, 1), variant="mini", classes=1, classifier_activation=activation
    )
    scores = model.predict(np.random.default_rng(0).random((4, 28, 28, 1)), verbose=0)
    assert scores.shape == (4, 1) and len(np.unique(scores)) > 1
    # Without the top, `classes` and `classifier_activation` are ignored, as in keras.applications.
    features = AlexNet(
        include_top=False,
        input_shape=(28, 28, 1),
        variant="mini",
        classes=1,
        classifier_activation="softmax",
    )
    assert features.output_shape == (None, 4, 4, 64)
