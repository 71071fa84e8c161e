"""`python -m langlearn`: the same as the `langlearn` console script."""

from langlearn.cli import entrypoint

entrypoint()
