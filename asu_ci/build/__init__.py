"""The build job: verified ImageBuilders, the make steps, publishing, prebuild lists.

:func:`asu_ci.build.job.run_build` is the one entry point a worker, a CI job
and ``asu-ci build`` share; :mod:`asu_ci.build.prebuild` runs lists of them.
"""
