"""Minimal reproduction: Keras 3 `Model.fit` under a two-worker MultiWorkerMirroredStrategy.

Run `python repro_keras_20585.py`: it starts two worker processes on 127.0.0.1 (each with
its own TF_CONFIG), and each calls `model.fit` on a tiny dense model for one epoch of
four steps. With TensorFlow 2.21.0 and Keras 3.15.1 both workers fail in the first step.
With one worker (`python repro_keras_20585.py 1`) the same code trains.
"""

import json
import os
import socket
import subprocess
import sys


def worker() -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    print("TF", tf.__version__, "Keras", keras.__version__, flush=True)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.zeros((64, 2), "float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model.fit(dataset, epochs=1, verbose=2)
    print("fit finished")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(workers: int) -> int:
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(workers)]
    processes = []
    for index in range(workers):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        processes.append(subprocess.Popen([sys.executable, __file__, "--worker"], env=env))
    codes = [process.wait(timeout=300) for process in processes]
    print("exit codes:", codes)
    return max(codes)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2))
