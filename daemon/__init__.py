"""The orchestrator: the control socket and job queue (broker.py), a job's runner and its parts
(runner.py: loader.py, dispatch.py, checker.py, results.py), executors and spawners, settings,
and the commands summa-daemon, summa-submit, summa-aggregate and summa-keys.

It speaks the wire to workers and never imports the worker's code; spawners start summa-worker
as a program."""
