"""Results: campaigns over scenario sets, matrices (serve recipes x sets, here or as Slurm jobs),
reports, plots, imports and rebuilt summaries, all read from run folders.

The run-folder model (bench.results.runfolder) is the one reader of a run's summary, manifest
and records that report, plot, summarize and campaign share; reports and plots read only what
runs wrote. A campaign checks its points against the recorded serve command (fitset, which
turns a scenario set into the serve wing's plain loads) before it measures them.

Imports: the instrument (to measure a point, and for metrics and records), the serve wing (what
a recipe recorded, the fit check), and the lab only for a run's optional self-check. Nothing
imports results but `bench.cli`.
"""
