"""A tf.compat.v1 training script as public model collections write them; it knows nothing of looprt.

It disables TF2 behaviour (reference variables), sets TF's log verbosity
without absl's app runner, writes ``tf.train.X`` inline and defines its own
``train()``. ``tests/backends/test_tensorflow_zero_edit.py`` runs it with
``python`` and with ``python -m looprt.tf``.
"""

import argparse
import json

import numpy as np
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()
tf.logging.set_verbosity(tf.logging.INFO)


def input_fn():
    xs = np.linspace(-1.0, 1.0, 64).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((xs, 3.0 * xs + 1.0)).batch(8).repeat()
    return tf.data.make_one_shot_iterator(dataset).get_next()


def train(model_dir, steps):
    with tf.Graph().as_default():
        global_step = tf.train.get_or_create_global_step()
        x, y = input_fn()
        w = tf.get_variable("w", [], initializer=tf.zeros_initializer())
        b = tf.get_variable("b", [], initializer=tf.zeros_initializer())
        loss = tf.reduce_mean(tf.square(w * x + b - y), name="loss")
        tf.summary.scalar("loss", loss)
        train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=global_step)
        hooks = [
            tf.train.StopAtStepHook(last_step=steps),
            tf.train.LoggingTensorHook({"loss": loss}, every_n_iter=4),
        ]
        losses = []
        with tf.train.MonitoredTrainingSession(
            checkpoint_dir=model_dir, hooks=hooks, save_checkpoint_steps=5, save_summaries_steps=5
        ) as sess:
            session_type = type(sess).__module__
            while not sess.should_stop():
                losses.append(float(sess.run([train_op, loss])[1]))
    return {"session": session_type, "losses": losses, "resource": isinstance(global_step, tf.Variable)
            and "Resource" in type(global_step).__name__}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    print("RESULT " + json.dumps(train(args.model_dir, args.steps)))
