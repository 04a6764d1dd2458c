"""A tf.compat.v1 graph-mode training script, run by looprt with a one-line change.

    python examples/tf_compat_v1_regression.py --steps 200 --dir tf-run

The script is plain ``tf.compat.v1`` code: a linear model, a global step,
``GradientDescentOptimizer.minimize``, a scalar summary and
``MonitoredTrainingSession`` with ``StopAtStepHook``. The only change from a
TF script is the import of ``train``: ``from looprt.backends import
tensorflow as train`` instead of ``train = tf.compat.v1.train``. Checkpoints
are TF's own format, written through looprt's crash-safe checkpoint manager;
run it again with the same ``--dir`` and it resumes.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import tensorflow as tf

from looprt.backends import tensorflow as train  # was: train = tf.compat.v1.train

FEATURES = 4
TRUE_W = np.array([[1.0], [-2.0], [0.5], [3.0]], dtype=np.float32)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps to train in this run")
    parser.add_argument("--dir", default="tf-run", help="checkpoint and summary folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
        y = tf.compat.v1.placeholder(tf.float32, [None, 1], name="y")
        w = tf.compat.v1.get_variable("w", [FEATURES, 1], initializer=tf.compat.v1.zeros_initializer())
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w) - y), name="loss")
        global_step = tf.compat.v1.train.get_or_create_global_step()
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=global_step)
        tf.compat.v1.summary.scalar("loss", loss)

        hooks = [train.StopAtStepHook(num_steps=args.steps)]
        value = float("nan")
        rng = np.random.default_rng(0)
        with train.MonitoredTrainingSession(
            checkpoint_dir=args.dir,
            hooks=hooks,
            save_checkpoint_steps=max(args.steps // 2, 1),
            save_summaries_steps=max(args.steps // 10, 1),
        ) as sess:
            while not sess.should_stop():
                batch = rng.normal(size=(32, FEATURES)).astype(np.float32)
                _, value = sess.run([train_op, loss], feed_dict={x: batch, y: batch @ TRUE_W})
    print(f"loss {value:.5f}; checkpoints and summaries in {args.dir}")
    return value


if __name__ == "__main__":
    main()
