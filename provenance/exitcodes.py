"""Exit codes of the ``provenance`` command: stable, for cron, systemd and Airflow.

  0   success
  1   failure: nothing (more) was done; the store is unchanged or consistent
  2   usage error (bad flag, bad config, unknown detector)
  3   partial success: the run finished and committed its work, but some inputs
      or detector batches failed (see the run summary / the errors view)
  75  temporarily unavailable: another run holds the store's lock (retry later)
"""

OK = 0
FAILURE = 1
USAGE = 2
PARTIAL = 3
LOCKED = 75
