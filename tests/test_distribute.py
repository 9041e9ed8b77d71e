"""Distribution: mirrored replicas train what one device trains; two workers train as one and only the chief writes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

# No BatchNorm (VGG16), no dropout, no augmentation: nothing that legitimately differs per replica.
PLAIN = """
name: plain
augment: {flip: none}
head: {dropout: 0.0}
batch_size: 8
phases:
  - {name: head, epochs: 2, trainable: none, optimizer: {name: adam, learning_rate: 0.01}}
  - {name: top, epochs: 2, trainable: {last_groups: 1}, optimizer: {name: adam, learning_rate: 0.0003}}
early_stopping: null
calibrate: false
"""

TWO_CPUS = r"""
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tltool
data, weights, recipe, out = sys.argv[1:5]
for strategy in ("default", "mirrored"):
    tltool.fit(data, recipe=recipe, backbone="vgg16", weights=weights, image_size=32, strategy=strategy,
               out=f"{out}/{strategy}")
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TLTOOL_PAUSE_AT")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def test_mirrored_replicas_train_what_one_device_trains(tiny_data, backbone_file, tmp_path):
    import tltool

    recipe = tmp_path / "plain.yaml"
    recipe.write_text(PLAIN)
    done = subprocess.run([sys.executable, "-c", TWO_CPUS, tiny_data, backbone_file, str(recipe), str(tmp_path)],
                          capture_output=True, text=True, env=_env(), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "strategy mirrored: 2 replica(s); batch 8 in all, 4 per replica" in done.stderr
    one, two = (pd.read_csv(tmp_path / s / "history.csv") for s in ("default", "mirrored"))
    assert len(one) == len(two) == 4
    for column in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(two[column], one[column], atol=1e-4, err_msg=column)  # summation order only
    for a, b in zip(tltool.load_model(tmp_path / "mirrored").weights, tltool.load_model(tmp_path / "default").weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, err_msg=a.path)


def _ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _workers(tiny_data, backbone_file, recipe, out, epochs):
    ports = _ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    processes = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tltool", "fit", tiny_data, "-b", "vgg16", "--weights", backbone_file,
             "--image-size", "32", "--recipe", str(recipe), "--strategy", "multi-worker", "--epochs", epochs,
             "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=_env(TF_CONFIG=config, TLTOOL_COLLECTIVE_TIMEOUT="20", TMPDIR=str(out.parent / f"tmp{index}"))))
        os.makedirs(out.parent / f"tmp{index}", exist_ok=True)
    return processes


def test_two_workers_train_as_one_and_only_the_chief_writes(tiny_data, backbone_file, tmp_path):
    recipe = tmp_path / "plain.yaml"
    recipe.write_text(PLAIN)
    chief, worker = _workers(tiny_data, backbone_file, recipe, tmp_path / "run", "head=2,top=2")
    outputs = [p.communicate(timeout=400)[0] for p in (chief, worker)]
    assert chief.returncode == 0, outputs[0][-3000:]
    assert worker.returncode == 0, outputs[1][-3000:]
    assert "strategy multi-worker: 2 workers, 2 replica(s); batch 8 in all, 4 per replica" in outputs[0]
    assert "worker 1 done; the chief writes the run directory" in outputs[1]
    prints = [next(line for line in out.splitlines() if line.startswith("trained weights fingerprint"))
              for out in outputs]
    assert prints[0] == prints[1]  # both workers ended with the very same weights
    run = tmp_path / "run"
    for name in ("model.keras", "saved_model/saved_model.pb", "metrics.json", "history.csv", "report.md"):
        assert (run / name).exists(), name
    assert len(pd.read_csv(run / "history.csv")) == 4
    assert os.listdir(tmp_path / "tmp1") == []  # the worker's own folder is gone, and it wrote nowhere else


def test_a_worker_that_dies_stops_the_chief_with_a_clear_error(tiny_data, backbone_file, tmp_path):
    recipe = tmp_path / "plain.yaml"
    recipe.write_text(PLAIN)
    chief, worker = _workers(tiny_data, backbone_file, recipe, tmp_path / "run", "head=2,top=30")
    for line in worker.stdout:
        if line.startswith("epoch 3 "):
            worker.send_signal(signal.SIGKILL)
            break
    killed = time.monotonic()
    output = chief.communicate(timeout=200)[0]
    waited = time.monotonic() - killed
    assert chief.returncode == 3, output[-3000:]
    assert "error: multi-worker training stopped: a worker did not answer within 20 s" in output
    assert waited < 120, waited
