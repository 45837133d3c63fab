"""Runs on disk: one folder per run and an embedded SQLite index shared by many processes.

>>> store = Store("runs")                                   # doctest: +SKIP
>>> run = store.create_run(config, name="mlp", group="lr-sweep")
>>> run.log(step, {"train/loss": 0.3}, epoch=1.0)
>>> store.runs(**{"optim.lr": [0.1, 0.2]})                  # one row per run
>>> store.metrics(group="lr-sweep", names=["train/loss"])    # long format
"""

from sgdlab.store.errors import StoreError
from sgdlab.store.index import config_hash
from sgdlab.store.run import STATUSES, Run
from sgdlab.store.store import Store

__all__ = ["STATUSES", "Run", "Store", "StoreError", "config_hash"]
