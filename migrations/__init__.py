"""The Aerich migration history, shipped as package data (`langlearn.migrations`).

`models/` holds one reviewed file per step of the app `models`; Aerich loads them by path (their
names are not module names), and `langlearn.settings.MIGRATIONS_LOCATION` finds this folder
through importlib.resources, in a checkout and in an installed wheel alike.
"""
