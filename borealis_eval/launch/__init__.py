"""Launchers: where a sweep's workers run. `local` (the default) is this machine (workers.py);
`slurm` submits one SLURM job per worker through submitit (slurm.py). jobs.py records a study's
jobs and asks SLURM their states; control.py shows, follows and cancels a launched study."""
