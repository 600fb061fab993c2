"""Results: campaigns over scenario sets, reports, plots and imports, all read from run folders.

The run-folder model (bench.results.runfolder) is the one reader of a run's summary, manifest
and records that report, plot and campaign share; reports and plots read only what runs wrote.

Imports: the instrument (to measure a point, and for metrics and records), the serve wing (what
a recipe recorded), and the lab only for a run's optional self-check. Nothing imports results
but `bench.cli`.
"""
