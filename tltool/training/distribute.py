"""Distribution: which tf.distribute strategy trains, which data each worker reads, who writes.

- `default`: one device (the first GPU, else the CPU).
- `mirrored`: every GPU of this machine, one replica each
  (`tf.distribute.MirroredStrategy`); each global batch is split between them.
- `multi-worker`: several machines, as `TF_CONFIG` describes them
  (`tf.distribute.MultiWorkerMirroredStrategy`). Each worker reads its own
  share of the training files (the path list is cut before decoding) and
  runs the same number of steps per epoch as every other; only the chief
  writes the run directory, the others work in a temporary folder.
- `auto`: mirrored when this machine has more than one GPU, else default.

The recipe's batch size is the global batch: per worker it is divided by the
number of workers, per replica by the number of replicas. Keras' bugs under
strategies are patched in `tltool.compat`, only under `mirrored` and
`multi-worker`.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass

from tltool.errors import TltoolError

STRATEGIES = ("auto", "default", "mirrored", "multi-worker")
COLLECTIVE_TIMEOUT = int(os.environ.get("TLTOOL_COLLECTIVE_TIMEOUT", "60"))  # seconds before a lost worker is an error


@dataclass
class Cluster:
    """This process's place in TF_CONFIG (one worker, index 0, when there is none)."""

    workers: int = 1
    index: int = 0
    chief: bool = True


def cluster() -> Cluster:
    """Read TF_CONFIG: the number of workers, this one's index among them, whether it is the chief.

    The chief is the task of type `chief`, or worker 0 when the cluster names none.

    Raises:
        TltoolError: TF_CONFIG is not valid JSON or lacks cluster/task.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        return Cluster()
    try:
        config = json.loads(text)
        spec, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise TltoolError(f"TF_CONFIG: not a valid cluster description ({e}); see the README's Scaling out") from None
    order = [(k, i) for k in ("chief", "worker") for i in range(len(spec.get(k, [])))]
    if (kind, index) not in order:
        raise TltoolError(f"TF_CONFIG: task {kind}:{index} is not in its cluster ({', '.join(spec)})")
    position = order.index((kind, index))
    return Cluster(workers=len(order), index=position, chief=position == 0)


@dataclass
class Distribution:
    """The strategy a run trains under, and what it means for data and files."""

    name: str
    strategy: object  # tf.distribute.Strategy
    cluster: Cluster

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def chief(self) -> bool:
        return self.cluster.chief

    def worker_batch(self, global_batch: int) -> int:
        """What one worker's dataset yields per step (Keras splits it between the worker's replicas)."""
        return global_batch // self.cluster.workers

    def shard(self, items: list) -> list:
        """This worker's share of a list: every n-th item from its index (the whole list on one worker)."""
        return items[self.cluster.index::self.cluster.workers]

    @contextmanager
    def scope(self):
        with self.strategy.scope():
            yield

    @contextmanager
    def lost_worker(self):
        """Under multi-worker, a collective that times out (a worker died) becomes one clear error."""
        import tensorflow as tf

        try:
            yield
        except tf.errors.OpError as e:
            if self.name != "multi-worker":
                raise
            from tltool.errors import UnavailableError

            raise UnavailableError(
                f"multi-worker training stopped: a worker did not answer within {COLLECTIVE_TIMEOUT} s "
                f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); start every worker again"
            ) from None

    def describe(self, global_batch: int) -> str:
        where = f"{self.cluster.workers} workers, " if self.cluster.workers > 1 else ""
        return (f"strategy {self.name}: {where}{self.replicas} replica(s); batch {global_batch} in all, "
                f"{global_batch // self.replicas} per replica")


def choose(name: str, global_batch: int) -> Distribution:
    """The Distribution for a `strategy` value (auto | default | mirrored | multi-worker).

    Raises:
        TltoolError: an unknown name, multi-worker without TF_CONFIG, or a
            batch that does not divide between the replicas.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise TltoolError(f"--strategy {name}: give one of {', '.join(STRATEGIES)}")
    # Listing physical devices leaves the runtime uninitialised, as the multi-worker strategy needs it
    # (listing logical ones would not).
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise TltoolError("--strategy multi-worker needs TF_CONFIG, the cluster description; "
                              "see the README's Scaling out")
        from tltool.compat import patch_multi_worker

        patch_multi_worker()
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        found = cluster()
    elif name == "mirrored":
        from tltool.compat import patch_symbolic_build

        patch_symbolic_build()
        devices = [d.name for d in tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        found = Cluster()
    else:
        strategy, found = tf.distribute.get_strategy(), Cluster()
    distribution = Distribution(name, strategy, found)
    if global_batch % distribution.replicas:
        raise TltoolError(f"--batch-size {global_batch}: does not divide between {distribution.replicas} replicas; "
                          f"give a multiple of {distribution.replicas}")
    return distribution
