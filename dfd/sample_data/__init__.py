"""Synthetic sample data: procedurally drawn faces, real and simulated face swaps.

This data exists so that dfd can be tried end to end (`make demo`) and tested
on real mp4/JPEG files without downloading anything. It is synthetic and far
easier than real deepfakes: a detector's score on it says nothing about how it
does on real data. Use it to try the tool, never to judge a detector.

    from dfd.sample_data import write_sample_dataset
    write_sample_dataset("/tmp/sample", videos_per_class=4, images_per_class=4, seed=0)
"""

from dfd.sample_data.writer import SampleSummary, plan_dataset, split_counts, write_sample_dataset

__all__ = ["SampleSummary", "plan_dataset", "split_counts", "write_sample_dataset"]
