"""The dry run's stand-in for absent ImageNet (an ImageFolder tree of random images;
evals/tasks/stand_ins.py). Imported by `repro reproduce --dry-run` alone, never by a run."""

from evals.tasks.stand_ins import image_data as stand_in_data

__all__ = ["stand_in_data"]
