"""Helpers for the cluster, fault and fuzz tests; the scripts here run in subprocesses
(``python -m tests.cluster_scripts.NAME`` from the repository root)."""
