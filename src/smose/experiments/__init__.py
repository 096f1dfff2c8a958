"""Experiments: sweeps of many runs, result tables with aggregate statistics, the paper's published numbers,
the throughput benchmark.

`smose sweep` (sweep.py ties the parts together):
    grid.py          the grid of runs, their names and configurations, sweep.json
    run_state.py     what a run directory holds: result key, finished, resumable, how far it got
    distillation.py  the trees a sweep asks for and the trees a run holds
    export_dir.py    the export directory (committed results): export, import, partial runs
    jobs.py          a run's commands (train, distill) and running them as processes
    backends.py      where jobs run: local processes or Ray tasks
    progress.py      what a sweep shows while it runs

`smose table` (table.py writes the files and figures):
    records.py       a run directory read into a record
    aggregate.py     groups of runs and their statistics over seeds
    markdown.py      the text of table.md
    reproduction.py  table.md's sections about the paper's own budget
    stats.py         IQM, bootstrap CIs, rliable aggregates and figures
    paper.py         the paper's and the poster's published numbers
"""
