"""A throw-away two-node Slurm cluster for tests (cluster.sh, fixture.py)."""
