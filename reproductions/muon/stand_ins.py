"""The dry run's stand-in for absent FineWeb token shards (one train and one validation shard of
random GPT-2 token ids in modded-nanogpt's format; evals/tasks/stand_ins.py), so the real loader,
the model, one optimisation step and the `fineweb_loss` evaluator all run. Imported by
`repro reproduce --dry-run` alone, never by a run."""

from evals.tasks.stand_ins import fineweb_data as stand_in_data

__all__ = ["stand_in_data"]
