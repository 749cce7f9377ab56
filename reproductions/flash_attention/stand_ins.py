"""The dry run's stand-in for absent FineWeb token shards (the full tier's data; evals/tasks/stand_ins.py).
Imported by `repro reproduce --dry-run` alone, never by a run; the code corpus needs none."""

from evals.tasks.stand_ins import fineweb_data as stand_in_data

__all__ = ["stand_in_data"]
