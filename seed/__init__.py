"""The seed (`python -m seed`) and the verification (`python -m seed.verify`) of a database."""
