"""The migration history: the files this package ships, where a database stands, and taking it anywhere in between.

    files      each version's SQL up and down, its statements and digests (no database)
    state      the versions a database recorded in Aerich's `aerich` table
    checksums  the digests recorded beside it, and the bookkeeping statements
    plan       what an upgrade or downgrade will run, in order
    runner     running a plan under the migration lock (`lock`) and timeouts
    apps       a service's own apps' histories beside the package's, run by the one runner under the one lock
    stamping   recording versions as applied without running them, for tables built outside the history
    script     a plan as a psql script, for review
    review     model states compared: `migrations check` and `state-diff`
    enum_types the native enum types the SQL leaves at head, against the models' (`migrations check`)
    lint       the SQL through squawk, with the project's allowlist
"""

from langlearn.history.apps import downgrade, upgrade
from langlearn.history.files import MIGRATIONS_DIR, History, Migration, load_history, version_files, version_number
from langlearn.history.runner import Target, migrate, timeout_settings
from langlearn.history.stamping import HEAD, Stamped, stamp
from langlearn.history.state import MigrationState, read_state

__all__ = [
    "HEAD", "MIGRATIONS_DIR", "History", "Migration", "MigrationState", "Stamped", "Target",
    "downgrade", "load_history", "migrate", "read_state", "stamp", "timeout_settings", "upgrade", "version_files", "version_number",
]
