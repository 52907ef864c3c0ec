"""The benchmark suite: bulklabel against the pipelines a user would otherwise run."""


def save_json(result: dict, path: str | None) -> None:
    """Write a benchmark's result as indented JSON to ``path`` (``--json OUT``), if given."""
    if path:
        import json

        with open(path, "w") as f:
            json.dump(result, f, indent=2)
