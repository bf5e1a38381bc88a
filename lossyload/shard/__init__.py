"""Turning a dataset into codec-domain WebDataset shards: sources, the tar writer, the resumable job."""

from .job import ShardJob, ShardSummary, run_job

__all__ = ["ShardJob", "ShardSummary", "run_job"]
