"""Sinks: where a run's metrics, arrays and end go (protocol in :mod:`sgdlab.sinks.base`)."""

from sgdlab.sinks.base import Record, RunInfo, Sink, Sinks
from sgdlab.sinks.store import StoreSink

__all__ = ["Record", "RunInfo", "Sink", "Sinks", "StoreSink"]
