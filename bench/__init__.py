"""The benchmark suite: bulklabel against the pipelines a user would otherwise run."""
