"""Profile tools, run by hand or by make rather than by a DVC stage: profile (overlays of params.yaml),
run_profile (make run PROFILE=...), dry_run (make dry-run), rehearsal (make rehearse), readme (make
report's copy of the results table into README.md)."""
