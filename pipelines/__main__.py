"""``python -m pipelines``: the same commands as the ``pipeline`` console script."""

from pipelines.cli import main

if __name__ == "__main__":
    main()
