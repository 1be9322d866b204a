"""Data stages: the record schema, preprocessing, conversion and input pipelines."""
